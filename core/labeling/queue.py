"""Prompt queues: admins import prompts; each prompt is served to ``overlap`` labelers, never twice to
the same one; labelers can skip; progress per labeler and per queue.

Serving happens under a process lock: this process is the only writer of the database, so the lock
makes "pick a prompt that still needs labels and assign it" atomic even when many labelers ask at once.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path
from typing import Any

from core import ASSETS
from core.errors import NotFound, PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from core.labeling.identity import User
from storage.db import Database, first_column, one_row, one_value

SEED_PROMPTS = ASSETS / "seed_prompts.jsonl"
GUIDELINES = ASSETS / "guidelines.md"
ABANDONED_AFTER_MINUTES = 30  # a served-but-unfinished prompt stops blocking its slot after this
MAX_PROMPT_CHARS = 20_000
_SERVE_LOCK = threading.Lock()


def _require_admin(user: User, what: str) -> None:
    if not user.is_admin:
        raise PermissionDenied(f"Only admins can {what}", hint="ask an admin")


def create_queue(db: Database, admin: User, name: str, overlap: int = 1, daily_goal: int = 50) -> int:
    _require_admin(admin, "create queues")
    name = clean_text(name, "queue name", max_chars=100).strip()
    if overlap < 1 or daily_goal < 1:
        raise ValidationError("Overlap and daily goal must be at least 1", hint="use 1 or more")
    with db.transaction() as cur:
        row = one_row(cur.execute("SELECT id FROM queues WHERE name = ?", [name]))
        if row:
            cur.execute("UPDATE queues SET overlap = ?, daily_goal = ? WHERE id = ?", [overlap, daily_goal, row["id"]])
            return row["id"]
        return one_value(
            cur.execute(
                "INSERT INTO queues (name, overlap, daily_goal, created_by) VALUES (?, ?, ?, ?) RETURNING id",
                [name, overlap, daily_goal, admin.id],
            )
        )


def list_queues(db: Database) -> list[dict[str, Any]]:
    return db.query(
        "SELECT q.id, q.name, q.overlap, q.daily_goal, count(DISTINCT p.id) AS prompts,"
        " count(DISTINCT p.id) * q.overlap AS labels_needed,"
        " count(a.prompt_id) FILTER (WHERE a.status = 'done') AS labels_done,"
        " count(a.prompt_id) FILTER (WHERE a.status = 'skipped') AS skips"
        " FROM queues q LEFT JOIN prompts p ON p.queue_id = q.id AND p.redacted_at IS NULL"
        " LEFT JOIN assignments a ON a.prompt_id = p.id GROUP BY q.id, q.name, q.overlap, q.daily_goal"
        " ORDER BY q.id"
    )


def parse_prompts(data: bytes | str, filename: str) -> list[str]:
    """Prompts from a .txt (one per line), .jsonl/.json (``prompt`` or ``text`` field) or .csv file."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    suffix = Path(filename).suffix.lower()
    prompts: list[str] = []
    if suffix == ".txt":
        prompts = [line for line in text.splitlines() if line.strip()]
    elif suffix in (".jsonl", ".json"):
        records: list[Any]
        if suffix == ".json":
            loaded = json.loads(text)
            records = loaded if isinstance(loaded, list) else [loaded]
        else:
            records = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValidationError(
                            f"{filename} line {number} is not JSON: {exc.msg}", hint="one JSON object per line"
                        ) from None
        for number, rec in enumerate(records, 1):
            value = (
                rec
                if isinstance(rec, str)
                else (rec.get("prompt") or rec.get("text"))
                if isinstance(rec, dict)
                else None
            )
            if not isinstance(value, str):
                raise ValidationError(
                    f"{filename} record {number} has no 'prompt' or 'text' string",
                    hint='write {"prompt": "..."} per line',
                )
            prompts.append(value)
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        column = next((c for c in (reader.fieldnames or []) if c.strip().lower() in ("prompt", "text")), None)
        if column is None:
            raise ValidationError(f"{filename} has no 'prompt' or 'text' column", hint="add a header row")
        prompts = [row[column] for row in reader if (row.get(column) or "").strip()]
    else:
        raise ValidationError(f"Cannot import {filename}: unknown file type", hint="use .txt, .jsonl, .json or .csv")
    cleaned = [clean_text(p, "prompt", max_chars=MAX_PROMPT_CHARS).strip() for p in prompts]
    if not cleaned:
        raise ValidationError(f"{filename} contains no prompts", hint="check the file")
    return cleaned


def import_prompts(db: Database, admin: User, queue_id: int, prompts: list[str], source: str) -> int:
    """Add prompts to a queue in one transaction; exact duplicates already in the queue are skipped."""
    _require_admin(admin, "import prompts")
    with db.transaction() as cur:
        if one_value(cur.execute("SELECT count(*) FROM queues WHERE id = ?", [queue_id])) == 0:
            raise NotFound(f"Queue {queue_id} does not exist", hint="create the queue first")
        existing = set(first_column(cur.execute("SELECT text FROM prompts WHERE queue_id = ?", [queue_id])))
        new = list(dict.fromkeys(p for p in prompts if p not in existing))
        if new:
            cur.executemany(
                "INSERT INTO prompts (text, source, queue_id) VALUES (?, ?, ?)", [[p, source, queue_id] for p in new]
            )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, target_id, details)"
            " VALUES (?, 'import', 'queues', ?, ?)",
            [admin.id, queue_id, json.dumps({"source": source, "added": len(new)})],
        )
    return len(new)


def load_seed_queue(db: Database, admin: User) -> int:
    """The seed prompt set shipped in assets/, as queue 'seed'."""
    queue_id = create_queue(db, admin, "seed", overlap=1)
    import_prompts(
        db, admin, queue_id, parse_prompts(SEED_PROMPTS.read_text(encoding="utf-8"), SEED_PROMPTS.name), "seed"
    )
    return queue_id


def next_prompt(db: Database, user: User, queue_id: int) -> dict[str, Any] | None:
    """The labeler's current prompt, or a new one that still needs labels; None when the queue is done."""
    with _SERVE_LOCK, db.transaction() as cur:
        open_row = one_row(
            cur.execute(
                "SELECT p.id, p.text FROM assignments a JOIN prompts p ON p.id = a.prompt_id"
                " WHERE a.user_id = ? AND a.status = 'served' AND p.queue_id = ? AND p.redacted_at IS NULL"
                " ORDER BY a.served_at LIMIT 1",
                [user.id, queue_id],
            )
        )
        if open_row:
            return open_row
        row = one_row(
            cur.execute(
                f"""SELECT p.id, p.text FROM prompts p JOIN queues q ON q.id = p.queue_id
            WHERE p.queue_id = ? AND p.redacted_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.prompt_id = p.id AND a.user_id = ?)
              AND (SELECT count(*) FROM assignments a WHERE a.prompt_id = p.id AND (a.status = 'done'
                   OR (a.status = 'served' AND a.served_at > now() - INTERVAL {ABANDONED_AFTER_MINUTES} MINUTE)))
                  < q.overlap
            ORDER BY p.id LIMIT 1""",
                [queue_id, user.id],
            )
        )
        if row is None:
            return None
        cur.execute("INSERT INTO assignments (prompt_id, user_id) VALUES (?, ?)", [row["id"], user.id])
        return row


def skip_prompt(db: Database, user: User, prompt_id: int) -> None:
    with db.transaction() as cur:
        updated = cur.execute(
            "UPDATE assignments SET status = 'skipped', finished_at = now()"
            " WHERE prompt_id = ? AND user_id = ? AND status = 'served' RETURNING prompt_id",
            [prompt_id, user.id],
        ).fetchall()
        if not updated:
            raise NotFound("That prompt is not waiting for you", hint="ask for the next prompt")


def progress(db: Database, user: User, queue_id: int) -> dict[str, int]:
    """Labeler progress in a queue: done today vs the daily goal, done overall vs what is left for them."""
    found = db.query(
        """SELECT q.daily_goal,
             (SELECT count(*) FROM assignments a JOIN prompts p ON p.id = a.prompt_id WHERE p.queue_id = q.id
               AND a.user_id = ? AND a.status = 'done' AND a.finished_at >= current_date) AS today,
             (SELECT count(*) FROM assignments a JOIN prompts p ON p.id = a.prompt_id WHERE p.queue_id = q.id
               AND a.user_id = ? AND a.status = 'done') AS done,
             (SELECT count(*) FROM prompts p WHERE p.queue_id = q.id AND p.redacted_at IS NULL) AS prompts
           FROM queues q WHERE q.id = ?""",
        [user.id, user.id, queue_id],
    )
    if not found:
        raise NotFound(f"Queue {queue_id} does not exist", hint="pick another queue")
    return found[0]


def labeler_progress(db: Database, queue_id: int) -> list[dict[str, Any]]:
    return db.query(
        "SELECT u.name AS labeler, count(*) FILTER (WHERE a.status = 'done') AS done,"
        " count(*) FILTER (WHERE a.status = 'done' AND a.finished_at >= current_date) AS today,"
        " count(*) FILTER (WHERE a.status = 'skipped') AS skipped,"
        " count(*) FILTER (WHERE a.status = 'served') AS open"
        " FROM assignments a JOIN prompts p ON p.id = a.prompt_id JOIN users u ON u.id = a.user_id"
        " WHERE p.queue_id = ? GROUP BY u.name ORDER BY done DESC",
        [queue_id],
    )


def guidelines(db: Database) -> str:
    """Labeling guidelines: the admin-edited text if any, else assets/guidelines.md."""
    edited = db.scalar("SELECT value FROM studio_kv WHERE key = 'guidelines'")
    return edited if edited is not None else GUIDELINES.read_text(encoding="utf-8")


def save_guidelines(db: Database, admin: User, text: str) -> None:
    _require_admin(admin, "edit the guidelines")
    text = clean_text(text, "guidelines", max_chars=50_000)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO studio_kv (key, value, updated_by) VALUES ('guidelines', ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,"
            " updated_at = now()",
            [text, admin.id],
        )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table) VALUES (?, 'edit', 'guidelines')", [admin.id]
        )
