"""Moderation: admins redact items that must not stay in the studio (PII, abuse, leaked secrets).

Redaction is a real deletion of the text, not a hidden flag: prompt, candidate and message texts are
overwritten with ``[redacted]`` and ``redacted_at`` is set, so the words are gone from the database,
and every analytics view and dataset builder that checks ``redacted_at`` leaves the rows out. What is
kept is the fact that something was there (ids, times, who labeled) and one ``audit_log`` row saying
who redacted what and why. The audit row never contains the removed text.

What each kind removes (all in one transaction; rows already redacted are left as they are):

* ``preference``: the vote (``redacted_at``), its free-text note, and gold answers written with it.
* ``prompt``: the prompt text, the user messages that carried that text in conversations started from
  it, and the votes on it.
* ``candidate``: the answer text, the assistant message that showed it, gold answers edited from it,
  and the votes that compared it (a vote means nothing once one side is gone).
* ``conversation``: every message and candidate in it, and every vote and gold answer on them.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from core.errors import NotFound, PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from storage.db import Database, first_column, one_row, one_value

KINDS = ("preference", "prompt", "candidate", "conversation")
TABLE_OF = {
    "preference": "preferences",
    "prompt": "prompts",
    "candidate": "candidates",
    "conversation": "conversations",
}
REDACTED = "[redacted]"
_WORDS = {
    "prompts": ("prompt", "prompts"),
    "candidates": ("answer", "answers"),
    "messages": ("message", "messages"),
    "preferences": ("vote", "votes"),
    "gold_answers": ("gold answer", "gold answers"),
}
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class RedactionResult:
    kind: str
    item_id: int
    redacted: bool  # False: it already was redacted, nothing changed
    message: str  # one sentence for the UI
    affected: dict[str, int] = field(default_factory=dict)  # rows changed per table
    audit_id: int | None = None


def is_admin(db: Database, user_id: Any) -> bool:
    if user_id is None:
        return False
    return db.scalar("SELECT role FROM users WHERE id = ?", [user_id]) == "admin"


def redact_item(db: Database, admin_user_id: int, kind: str, item_id: int, reason: str) -> RedactionResult:
    """Redact one item and what depends on it; see the module docstring for what each kind removes.

    Raises PermissionDenied unless ``admin_user_id`` is a user with role ``admin``, ValidationError for
    an unknown kind, a bad id or an empty reason, and NotFound for an unknown id. Redacting something
    already redacted changes nothing, writes no audit row and says so in the result.
    """
    if not is_admin(db, admin_user_id):
        raise PermissionDenied("Only admins can redact items", hint="ask an admin to redact it")
    if kind not in KINDS:
        raise ValidationError(f"Unknown item kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    if isinstance(item_id, bool) or not isinstance(item_id, numbers.Integral):
        raise ValidationError(f"Item id {item_id!r} is not a whole number", hint=f"give the {kind} id")
    item_id = int(item_id)
    reason = clean_text(reason if isinstance(reason, str) else "", "reason", max_chars=MAX_REASON_CHARS).strip()

    with db.transaction() as cur:
        table = TABLE_OF[kind]
        exists = one_value(cur.execute(f"SELECT count(*) FROM {table} WHERE id = ?", [item_id]))
        if not exists:
            raise NotFound(
                f"There is no {kind} with id {item_id}", hint=f"check the id in the recent items table ({table}.id)"
            )
        affected = _REDACTORS[kind](cur, item_id)
        affected = {t: n for t, n in affected.items() if n}
        if not affected:
            return RedactionResult(
                kind, item_id, False, f"{kind.capitalize()} {item_id} was already redacted; nothing changed."
            )
        details = {"reason": reason, "kind": kind, "affected": affected}
        audit_id = one_value(
            cur.execute(
                "INSERT INTO audit_log (user_id, action, target_table, target_id, details)"
                " VALUES (?, 'redact', ?, ?, ?) RETURNING id",
                [admin_user_id, table, item_id, json.dumps(details)],
            )
        )
    summary = ", ".join(f"{n} {_WORDS[t][n != 1]}" for t, n in affected.items())
    return RedactionResult(
        kind, item_id, True, f"{kind.capitalize()} {item_id} redacted: {summary}.", affected, audit_id
    )


# ----------------------------------------------------------------------------- per kind

Cursor = duckdb.DuckDBPyConnection


def _ids(cur: Cursor, sql: str, params: list[Any]) -> list[int]:
    return first_column(cur.execute(sql, params))


def _redact_preferences(cur: Cursor, ids: list[int]) -> dict[str, int]:
    if not ids:
        return {}
    votes = len(
        cur.execute(
            "UPDATE preferences SET redacted_at = now(), note = CASE WHEN note IS NULL THEN NULL ELSE ? END"
            " WHERE redacted_at IS NULL AND id IN (SELECT unnest(?::BIGINT[])) RETURNING id",
            [REDACTED, ids],
        ).fetchall()
    )
    gold = _redact_gold(
        cur, _ids(cur, "SELECT id FROM gold_answers WHERE preference_id IN (SELECT unnest(?::BIGINT[]))", [ids])
    )
    return {"preferences": votes, "gold_answers": gold}


def _redact_gold(cur: Cursor, ids: list[int]) -> int:
    if not ids:
        return 0
    return len(
        cur.execute(
            "UPDATE gold_answers SET text = ? WHERE text <> ? AND id IN (SELECT unnest(?::BIGINT[])) RETURNING id",
            [REDACTED, REDACTED, ids],
        ).fetchall()
    )


def _redact_texts(cur: Cursor, table: str, column: str, ids: list[int]) -> int:
    if not ids:
        return 0
    # a candidate's sampling record may quote text too (a constitutional critique, core.judging.constitution): cleared
    extra = ", sampling = NULL" if table == "candidates" else ""
    return len(
        cur.execute(
            f"UPDATE {table} SET {column} = ?{extra}, redacted_at = now() WHERE redacted_at IS NULL"
            " AND id IN (SELECT unnest(?::BIGINT[])) RETURNING id",
            [REDACTED, ids],
        ).fetchall()
    )


def _merge(*parts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for table, n in part.items():
            total[table] = total.get(table, 0) + n
    return total


def _redact_candidates(cur: Cursor, ids: list[int]) -> dict[str, int]:
    if not ids:
        return {}
    candidates = _redact_texts(cur, "candidates", "text", ids)
    messages = _redact_texts(
        cur,
        "messages",
        "content",
        _ids(cur, "SELECT id FROM messages WHERE candidate_id IN (SELECT unnest(?::BIGINT[]))", [ids]),
    )
    gold = _redact_gold(
        cur, _ids(cur, "SELECT id FROM gold_answers WHERE candidate_id IN (SELECT unnest(?::BIGINT[]))", [ids])
    )
    votes = _redact_preferences(
        cur,
        _ids(
            cur,
            "SELECT id FROM preferences WHERE candidate_a IN (SELECT unnest(?::BIGINT[]))"
            " OR candidate_b IN (SELECT unnest(?::BIGINT[]))",
            [ids, ids],
        ),
    )
    return _merge({"candidates": candidates, "messages": messages, "gold_answers": gold}, votes)


def _redact_prompt(cur: Cursor, prompt_id: int) -> dict[str, int]:
    found = one_row(cur.execute("SELECT text FROM prompts WHERE id = ? AND redacted_at IS NULL", [prompt_id]))
    if found is None:
        return {}
    conversations = _ids(cur, "SELECT id FROM conversations WHERE prompt_id = ?", [prompt_id])
    copies = _ids(
        cur,
        "SELECT id FROM messages WHERE role = 'user' AND content = ? AND (conversation_id IN"
        " (SELECT unnest(?::BIGINT[])) OR conversation_id IN (SELECT conversation_id FROM"
        " candidates WHERE prompt_id = ?))",
        [found["text"], conversations, prompt_id],
    )
    prompts = _redact_texts(cur, "prompts", "text", [prompt_id])
    messages = _redact_texts(cur, "messages", "content", copies)
    # the answers stay, but a sampling record may quote the prompt (a constitutional critique): cleared
    cur.execute(
        "UPDATE candidates SET sampling = NULL WHERE sampling IS NOT NULL AND (prompt_id = ? OR conversation_id"
        " IN (SELECT unnest(?::BIGINT[])))",
        [prompt_id, conversations],
    )
    votes = _redact_preferences(
        cur,
        _ids(
            cur,
            "SELECT p.id FROM preferences p"
            " LEFT JOIN candidates ca ON ca.id = p.candidate_a LEFT JOIN candidates cb ON cb.id = p.candidate_b"
            " LEFT JOIN conversations c ON c.id = coalesce(p.conversation_id, ca.conversation_id)"
            " WHERE coalesce(p.prompt_id, ca.prompt_id, cb.prompt_id, c.prompt_id) = ?",
            [prompt_id],
        ),
    )
    return _merge({"prompts": prompts, "messages": messages}, votes)


def _redact_conversation(cur: Cursor, conversation_id: int) -> dict[str, int]:
    messages = _redact_texts(
        cur, "messages", "content", _ids(cur, "SELECT id FROM messages WHERE conversation_id = ?", [conversation_id])
    )
    candidates = _redact_candidates(
        cur, _ids(cur, "SELECT id FROM candidates WHERE conversation_id = ?", [conversation_id])
    )
    votes = _redact_preferences(
        cur, _ids(cur, "SELECT id FROM preferences WHERE conversation_id = ?", [conversation_id])
    )
    return _merge({"messages": messages}, candidates, votes)


_REDACTORS = {
    "preference": lambda cur, item_id: _redact_preferences(cur, [item_id]),
    "prompt": _redact_prompt,
    "candidate": lambda cur, item_id: _redact_candidates(cur, [item_id]),
    "conversation": _redact_conversation,
}


# ----------------------------------------------------------------------------- audit log


def audit_entries(db: Database, limit: int = 100) -> pd.DataFrame:
    """Latest audit log rows, newest first: ``id, created_at, user, action, target_table, target_id,
    details`` (details as JSON text)."""
    rows = db.query(
        "SELECT a.id, a.created_at, coalesce(u.name, CAST(a.user_id AS VARCHAR)) AS user, a.action,"
        " a.target_table, a.target_id, CAST(a.details AS VARCHAR) AS details"
        " FROM audit_log a LEFT JOIN users u ON u.id = a.user_id ORDER BY a.id DESC LIMIT ?",
        [int(limit)],
    )
    return pd.DataFrame(rows, columns=["id", "created_at", "user", "action", "target_table", "target_id", "details"])
