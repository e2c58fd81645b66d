"""The one owner of the studio's DuckDB file.

DuckDB allows a single writing process per file, so the server process opens the database once and
hands out per-thread cursors (Gradio, Streamlit and the API all run handlers on worker threads).
Training runs in child processes that never open the database: they talk to the server through files
under ``runs/<id>/``. Every write goes through :meth:`Database.transaction`, so a failed request leaves
nothing half-written.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import duckdb

from core.errors import StorageError

DB_FILENAME = "studio.duckdb"
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

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> "Database":
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

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read-only helper: rows as dicts."""
        cur = self.cursor().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> Any:
        row = self.cursor().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self) -> int:
        """Apply every migration newer than the recorded schema version, each in its own transaction."""
        cur = self._conn.cursor()
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
        )
        current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        for version, name, sql in migration_files():
            if version <= current:
                continue
            cur.begin()
            try:
                cur.execute(sql)
                cur.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
            except duckdb.Error as exc:
                cur.rollback()
                raise StorageError(f"Migration {name} failed: {exc}", hint="the database was left at "
                                   f"schema version {current}; fix the migration and restart") from exc
            cur.commit()
            current = version
        cur.close()
        return current
