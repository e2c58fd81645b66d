"""The one owner of the studio's DuckDB file.

DuckDB allows a single writing process per file, so the server process opens the database once and
hands out per-thread cursors (Gradio, Streamlit and the API all run handlers on worker threads).
Training runs in child processes that never open the database: they talk to the server through files
under ``runs/<id>/``. Every write goes through :meth:`Database.transaction`, so a failed request leaves
nothing half-written.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from core.errors import StorageError

T = TypeVar("T")
DB_FILENAME = "studio.duckdb"
GROUP_COMMIT_MAX = 64
_SINGLE = object()  # marks a plain write() in the writer queue (batched writes carry their item)
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every numbered migration shipped in storage/migrations, in order."""
    found = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StorageError(f"Two migrations share a number: {versions}", hint="renumber storage/migrations")
    return found


class Database:
    """Connection owner: opens (and migrates) ``<data_dir>/studio.duckdb``; per-thread cursors."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise StorageError(
                f"Cannot open the database {self.path}: {exc}",
                hint="another studio process may be using this data dir; stop it or pick another --data-dir",
            ) from exc
        self._local = threading.local()
        self._lock = threading.Lock()
        self.schema_version = self._migrate()
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> Database:
        return cls(Path(data_dir) / DB_FILENAME)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor private to the calling thread (DuckDB connections are not thread-safe)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._conn.cursor()
            self._local.cursor = cur
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction: committed at the end, rolled back on any error."""
        cur = self.cursor()
        cur.begin()
        try:
            yield cur
        except BaseException:
            cur.rollback()
            raise
        cur.commit()

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn(cursor)`` in a transaction and return its result once COMMITTED.

        Calls from many threads are grouped: one writer thread runs every pending ``fn`` in one transaction
        and commits once, so 20 labelers voting at once do not queue behind each other's commits. Writers
        are serialised, so check-then-insert logic inside ``fn`` is atomic. If one ``fn`` fails, the group
        is rolled back and each call re-run alone, so only the failing call sees the error.
        """
        return self._submit(fn, _SINGLE)

    def write_batched(self, fn_many: Callable[[duckdb.DuckDBPyConnection, list[Any]], list[T]], item: Any) -> T:
        """Like :meth:`write`, for writes that are cheaper together: consecutive pending calls with the same
        ``fn_many`` are applied as ONE call ``fn_many(cursor, [item, ...])`` returning one result per item.

        DuckDB spends ~0.5-1 ms per statement whatever its row count, so a group of 20 votes inserted
        with multi-row statements costs about what one vote costs statement by statement.
        """
        return self.submit_batched(fn_many, item).result()

    def submit_batched(self, fn_many: Callable[[duckdb.DuckDBPyConnection, list[Any]], list[T]], item: Any) -> Future:
        """:meth:`write_batched` without waiting: the future resolves after the commit (async callers
        await it with ``asyncio.wrap_future`` instead of parking a thread)."""
        return self._enqueue(fn_many, item)

    def _submit(self, fn: Callable, item: Any) -> Any:
        return self._enqueue(fn, item).result()

    def _enqueue(self, fn: Callable, item: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="db-group-commit", daemon=True)
                self._writer.start()
        self._writes.put((fn, item, future))
        return future

    def _write_loop(self) -> None:
        with self._lock:
            cur = self._conn.cursor()
        while True:
            batch = [self._writes.get()]
            if batch[0] is None:
                return
            while len(batch) < GROUP_COMMIT_MAX:
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._writes.put(None)
                    break
                batch.append(item)
            self._commit_group(cur, batch)

    @staticmethod
    def _apply(cur: duckdb.DuckDBPyConnection, batch: list[tuple[Callable, Any, Future]]) -> list[Any]:
        """Run a group in order; runs of consecutive batched calls of one function go in one call."""
        results: list[Any] = []
        i = 0
        while i < len(batch):
            fn, item, _ = batch[i]
            if item is _SINGLE:
                results.append(fn(cur))
                i += 1
                continue
            j = i + 1
            while j < len(batch) and batch[j][0] is fn and batch[j][1] is not _SINGLE:
                j += 1
            out = fn(cur, [entry[1] for entry in batch[i:j]])
            if len(out) != j - i:
                raise StorageError(f"{fn.__name__} returned {len(out)} results for {j - i} items")
            results.extend(out)
            i = j
        return results

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, batch: list[tuple[Callable, Any, Future]]) -> None:
        try:
            cur.begin()
            results = self._apply(cur, batch)
            cur.commit()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through its future
            try:
                cur.rollback()
            except duckdb.Error:
                pass
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
            else:
                for entry in batch:
                    self._commit_group(cur, [entry])
            return
        for (_, _, future), result in zip(batch, results):
            future.set_result(result)

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Read-only helper: rows as dicts."""
        return all_rows(self.cursor().execute(sql, params))

    def scalar(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> Any:
        row = self.cursor().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def backup(self, dest: Path | str) -> Path:
        """A consistent copy of every table (parquet files + schema.sql + load.sql) while the studio runs.

        DuckDB's EXPORT DATABASE reads one snapshot, so labels written meanwhile are either wholly in the
        backup or wholly not. Restore with :func:`restore_backup` into a new data dir.
        """
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise StorageError(f"{dest} is not empty", hint="back up into a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.cursor().execute(f"EXPORT DATABASE '{_sql_path(dest)}' (FORMAT parquet)")
        except duckdb.Error as exc:
            raise StorageError(f"Backup to {dest} failed: {exc}", hint="check the free space and permissions") from exc
        return dest

    def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join(timeout=10)
        with self._lock:
            self._conn.close()

    def _migrate(self) -> int:
        """Apply every shipped migration not yet recorded, in number order, each in its own transaction.

        Set-based rather than "newer than the max": migrations written on parallel branches may land
        out of number order, and a data dir must still receive every one of them exactly once.
        """
        cur = self._conn.cursor()
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
        )
        applied = {row[0] for row in cur.execute("SELECT version FROM schema_version").fetchall()}
        current = max(applied, default=0)
        for version, name, sql in migration_files():
            if version in applied:
                continue
            cur.begin()
            try:
                cur.execute(sql)
                cur.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
            except duckdb.Error as exc:
                cur.rollback()
                raise StorageError(
                    f"Migration {name} failed: {exc}",
                    hint=f"the database was left at schema version {current}; fix the migration and restart",
                ) from exc
            cur.commit()
            current = max(current, version)
        cur.close()
        return current


def one_value(cursor: duckdb.DuckDBPyConnection) -> Any:
    """The first column of the one row an executed statement returned (``INSERT ... RETURNING id``, the row count
    of an UPDATE, ``count(*)``): ``fetchone()[0]`` that says what went wrong instead of indexing ``None``."""
    row = cursor.fetchone()
    if row is None:
        raise StorageError("The statement returned no row", hint="this is a bug in the studio; report it")
    return row[0]


def one_row(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The first row an executed statement returned, by column name (None: no row). Inside a transaction, where
    :meth:`Database.query` cannot read: core reads rows by name, never by position."""
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def all_rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every row an executed statement returned, by column name (:meth:`Database.query` inside a transaction)."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def first_column(cursor: duckdb.DuckDBPyConnection) -> list[Any]:
    """The first column of every row an executed statement returned (ids from ``RETURNING id``, a list of texts)."""
    return [row[0] for row in cursor.fetchall()]


def default_backup_dir(data_dir: Path | str) -> Path:
    from datetime import datetime, timezone

    return Path(data_dir) / "backups" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _sql_path(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def restore_backup(backup_dir: Path | str, db_path: Path | str) -> Path:
    """Rebuild a database file from :meth:`Database.backup` output; refuses to overwrite a database."""
    backup_dir, db_path = Path(backup_dir), Path(db_path)
    if not (backup_dir / "schema.sql").is_file() or not (backup_dir / "load.sql").is_file():
        raise StorageError(
            f"{backup_dir} is not a studio backup (no schema.sql / load.sql)", hint="pass the folder a backup wrote"
        )
    if db_path.exists():
        raise StorageError(f"{db_path} already exists", hint="restore into a new, empty data dir")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(db_path))
    try:
        conn.execute(f"IMPORT DATABASE '{_sql_path(backup_dir)}'")
    except duckdb.Error as exc:
        conn.close()
        db_path.unlink(missing_ok=True)
        raise StorageError(f"Restore from {backup_dir} failed: {exc}", hint="the backup may be incomplete") from exc
    conn.close()
    return db_path


def latest_schema_version() -> int:
    """The newest migration this code ships: a backup from a newer studio cannot be loaded by this one."""
    return max(version for version, _, _ in migration_files())


def exported_row_counts(export_dir: Path | str) -> dict[str, int]:
    """Rows per table in an EXPORT DATABASE folder (one parquet file per table), read from the files themselves,
    so a manifest states what the snapshot holds, not what the live tables held a moment later."""
    conn = duckdb.connect()
    try:
        return {
            p.stem: one_value(conn.execute("SELECT count(*) FROM read_parquet(?)", [str(p)]))
            for p in sorted(Path(export_dir).glob("*.parquet"))
        }
    finally:
        conn.close()


def relocate_paths(db: Database, old: str, new: str) -> int:
    """Rewrite stored file paths under ``old`` (a data dir as it was) to ``new`` after a restore elsewhere.

    Run directories and adapter paths are stored as the server wrote them. Only whole values that start with
    ``old/`` change in text columns, and only JSON string values (``"old/...``) inside JSON columns, so prose
    that merely mentions a similar path is left alone. Returns the number of values changed."""
    old, new = old.rstrip("/") + "/", new.rstrip("/") + "/"
    if old == new:
        return 0
    columns = db.query(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t ON t.table_name = c.table_name"
        " AND t.table_schema = c.table_schema AND t.table_type = 'BASE TABLE'"
        " WHERE c.table_schema = 'main' AND c.data_type IN ('VARCHAR', 'JSON')"
    )

    def rewrite(cur: duckdb.DuckDBPyConnection) -> int:
        changed = 0
        for col in columns:
            table, name = f'"{col["table_name"]}"', f'"{col["column_name"]}"'
            if col["data_type"] == "VARCHAR":
                sql = f"UPDATE {table} SET {name} = ? || substr({name}, ?) WHERE starts_with({name}, ?)"
                params: list[Any] = [new, len(old) + 1, old]
            else:
                sql = (
                    f"UPDATE {table} SET {name} = replace(CAST({name} AS VARCHAR), ?, ?)::JSON"
                    f" WHERE contains(CAST({name} AS VARCHAR), ?)"
                )
                params = ['"' + old, '"' + new, '"' + old]
            changed += one_value(cur.execute(sql, params))
        return changed

    return db.write(rewrite)
