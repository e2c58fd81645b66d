"""The DuckDB owner: migrations, transactions, persistence across restarts."""

from __future__ import annotations

import threading

import duckdb
import pytest

from core.errors import StorageError
from storage import db as dbmod
from storage.db import Database, migration_files

EXPECTED_TABLES = {
    "users",
    "prompts",
    "conversations",
    "messages",
    "candidates",
    "ratings",
    "preferences",
    "feedback",
    "policies",
    "jobs",
    "job_metrics",
    "schema_version",
}


def tables(db: Database) -> set[str]:
    return {r["table_name"] for r in db.query("SELECT table_name FROM information_schema.tables")}


def test_migrations_create_every_table_on_an_empty_db(tmp_path):
    db = Database(tmp_path / "studio.duckdb")
    assert db.schema_version == max(v for v, _, _ in migration_files())
    assert EXPECTED_TABLES <= tables(db)
    db.close()


def test_reopening_applies_nothing_twice_and_keeps_rows(tmp_path):
    path = tmp_path / "studio.duckdb"
    db = Database(path)
    with db.transaction() as cur:
        cur.execute("INSERT INTO users (name, role) VALUES ('ada', 'admin')")
    db.close()
    db = Database(path)
    assert db.query("SELECT name, role FROM users") == [{"name": "ada", "role": "admin"}]
    assert db.scalar("SELECT count(*) FROM schema_version") == len(migration_files())
    db.close()


def test_new_migration_is_applied_to_an_existing_db(tmp_path, monkeypatch):
    path = tmp_path / "studio.duckdb"
    Database(path).close()
    shipped = migration_files()
    extra = (shipped[-1][0] + 1, "999_extra.sql", "ALTER TABLE users ADD COLUMN email VARCHAR;")
    monkeypatch.setattr(dbmod, "migration_files", lambda: shipped + [extra])
    db = Database(path)
    assert db.schema_version == extra[0]
    assert "email" in {
        r["column_name"]
        for r in db.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")
    }
    db.close()


def test_failed_migration_rolls_back_and_says_which(tmp_path, monkeypatch):
    path = tmp_path / "studio.duckdb"
    Database(path).close()
    shipped = migration_files()
    broken = (shipped[-1][0] + 1, "999_broken.sql", "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table;")
    monkeypatch.setattr(dbmod, "migration_files", lambda: shipped + [broken])
    with pytest.raises(StorageError, match="999_broken.sql"):
        Database(path)
    monkeypatch.setattr(dbmod, "migration_files", lambda: shipped)
    db = Database(path)
    assert "half_done" not in tables(db)
    assert db.schema_version == shipped[-1][0]
    db.close()


def test_transaction_rolls_back_everything_on_error(tmp_path):
    db = Database(tmp_path / "studio.duckdb")
    with pytest.raises(duckdb.ConstraintException):
        with db.transaction() as cur:
            cur.execute("INSERT INTO users (name) VALUES ('bo')")
            cur.execute("INSERT INTO users (name) VALUES ('bo')")  # UNIQUE violation
    assert db.scalar("SELECT count(*) FROM users") == 0
    db.close()


def test_threads_write_concurrently_through_their_own_cursors(tmp_path):
    db = Database(tmp_path / "studio.duckdb")

    def write(worker: int) -> None:
        for i in range(25):
            with db.transaction() as cur:
                cur.execute("INSERT INTO prompts (text, source) VALUES (?, 'test')", [f"{worker}-{i}"])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.scalar("SELECT count(DISTINCT text) FROM prompts") == 100
    db.close()


def test_second_process_gets_a_clear_error_not_a_crash(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "studio.duckdb"
    db = Database(path)
    code = (
        "from storage.db import Database\nfrom core.errors import StorageError\n"
        f"try:\n    Database({str(path)!r})\nexcept StorageError as e:\n    print(e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "storage_error", out.stderr
    db.close()


def test_group_commit_writes_everything_once_and_isolates_a_failing_call(tmp_path):
    db = Database(tmp_path / "studio.duckdb")
    results, errors = [], []

    def writer(i: int) -> None:
        def fn(cur):
            if i == 7:
                cur.execute("INSERT INTO users (name) VALUES ('dup')")
                cur.execute("INSERT INTO users (name) VALUES ('dup')")  # fails: UNIQUE
            return cur.execute("INSERT INTO prompts (text) VALUES (?) RETURNING id", [f"p{i}"]).fetchone()[0]

        try:
            results.append(db.write(fn))
        except duckdb.ConstraintException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and len(results) == 29 == len(set(results))
    assert db.scalar("SELECT count(*) FROM prompts") == 29 and db.scalar("SELECT count(*) FROM users") == 0
    db.close()
    reopened = Database(tmp_path / "studio.duckdb")  # committed means on disk
    assert reopened.scalar("SELECT count(*) FROM prompts") == 29
    reopened.close()


def test_batched_writes_share_calls_keep_order_and_isolate_a_failing_item(tmp_path):
    db = Database(tmp_path / "studio.duckdb")
    calls: list[int] = []

    def insert_many(cur, texts: list[str]) -> list[int]:
        calls.append(len(texts))
        if "boom" in texts:
            raise ValueError("bad item")
        rows = cur.execute("INSERT INTO prompts (text) SELECT unnest(?) RETURNING id, text", [texts]).fetchall()
        ids = {text: pid for pid, text in rows}
        return [ids[t] for t in texts]

    results: dict[int, int] = {}
    errors: list[Exception] = []
    gate = threading.Barrier(24)

    def writer(i: int) -> None:
        gate.wait()
        try:
            results[i] = db.write_batched(insert_many, "boom" if i == 5 else f"p{i}")
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and len(results) == 23
    stored = {r["id"]: r["text"] for r in db.query("SELECT id, text FROM prompts")}
    assert stored == {results[i]: f"p{i}" for i in results}  # each caller got its own row's id
    assert max(calls) > 1  # concurrent items really were grouped
    db.close()


def test_backup_while_open_restores_into_a_new_data_dir_with_sequences_intact(tmp_path):
    from storage.db import restore_backup

    db = Database(tmp_path / "a" / "studio.duckdb")
    for i in range(3):
        db.write(lambda cur, i=i: cur.execute("INSERT INTO prompts (text) VALUES (?)", [f"p{i}"]))
    folder = db.backup(tmp_path / "backup")
    db.write(lambda cur: cur.execute("INSERT INTO prompts (text) VALUES ('after the backup')"))
    with pytest.raises(StorageError, match="not empty"):
        db.backup(folder)
    db.close()
    with pytest.raises(StorageError, match="already exists"):
        restore_backup(folder, tmp_path / "a" / "studio.duckdb")
    with pytest.raises(StorageError, match="not a studio backup"):
        restore_backup(tmp_path, tmp_path / "c" / "studio.duckdb")
    restored = Database(restore_backup(folder, tmp_path / "b" / "studio.duckdb"))
    assert [r["text"] for r in restored.query("SELECT text FROM prompts ORDER BY id")] == ["p0", "p1", "p2"]
    new_id = restored.write(
        lambda cur: cur.execute("INSERT INTO prompts (text) VALUES ('x') RETURNING id").fetchone()[0]
    )
    assert new_id == 4  # the sequence goes on where it was
    restored.close()


def test_the_report_verdicts_migration_keeps_every_report_and_allows_the_new_verdicts(tmp_path, monkeypatch):
    path = tmp_path / "studio.duckdb"
    shipped = migration_files()
    monkeypatch.setattr(dbmod, "migration_files", lambda: [m for m in shipped if m[0] < 15])
    db = Database(path)
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report)"
            " VALUES (2, 1, 'no_change', 'old line', '{}')"
        )
    )
    with pytest.raises(duckdb.ConstraintException):
        db.write(
            lambda cur: cur.execute(
                "INSERT INTO version_reports (policy_id, against_id, verdict, summary,"
                " report) VALUES (2, 1, 'changed', 'x', '{}')"
            )
        )
    db.close()
    monkeypatch.setattr(dbmod, "migration_files", lambda: shipped)
    db = Database(path)
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report)"
            " VALUES (2, 1, 'changed', 'new line', '{}')"
        )
    )
    assert db.query("SELECT verdict, summary FROM version_reports ORDER BY id") == [
        {"verdict": "no_change", "summary": "old line"},
        {"verdict": "changed", "summary": "new line"},
    ]
    db.close()
