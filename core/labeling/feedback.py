"""Feedback records: validation and storage of what people say about answers.

Validation lives here, not in the UIs or the API, so every entry point enforces the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.errors import ValidationError
from storage.db import Database, one_row, one_value

MAX_TEXT_CHARS = 100_000
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(value: str, field_name: str, *, required: bool = True, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Strip control characters (keep newlines and tabs); refuse empty or oversized text."""
    if not isinstance(value, str):
        raise ValidationError(f"{field_name} must be text", hint=f"send {field_name} as a JSON string")
    text = _CONTROL_CHARS.sub("", value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON may carry "\ud800": a lone surrogate no file or database can store
        raise ValidationError(
            f"{field_name} is not valid unicode (character {exc.start} is a lone surrogate)",
            hint=f"send {field_name} as proper UTF-8 text",
        ) from exc
    if required and not text.strip():
        raise ValidationError(f"{field_name} is empty", hint=f"provide a non-empty {field_name}")
    if len(text) > max_chars:
        raise ValidationError(
            f"{field_name} has {len(text)} characters, more than {max_chars}", hint=f"shorten {field_name}"
        )
    return text


@dataclass(frozen=True)
class Feedback:
    """A scored single response (seed N3 shape): score 0 = bad, 1 = good."""

    prompt: str
    response: str
    score: float
    run_id: str | None = None
    notes: str | None = None
    source: str = "api"

    def validated(self) -> Feedback:
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)):
            raise ValidationError("score must be a number", hint="send a score between 0 and 1")
        if not 0.0 <= float(self.score) <= 1.0:
            raise ValidationError(f"score {self.score} is outside 0..1", hint="send a score between 0 and 1")
        return Feedback(
            prompt=clean_text(self.prompt, "prompt"),
            response=clean_text(self.response, "response"),
            score=float(self.score),
            run_id=clean_text(self.run_id, "run_id", required=False, max_chars=200) if self.run_id else None,
            notes=clean_text(self.notes, "notes", required=False, max_chars=10_000) if self.notes else None,
            source=self.source,
        )


def record_feedback(
    db: Database, feedback: Feedback, labeler_id: int | None = None, idempotency_key: str | None = None
) -> tuple[int, bool]:
    """Validate and store one feedback row from ``labeler_id``; returns (id, created) once committed.

    A repeated ``idempotency_key`` from the same sender returns the first row's id and stores nothing."""
    fb = feedback.validated()
    key = clean_text(idempotency_key, "idempotency_key", max_chars=200) if idempotency_key is not None else None

    def insert(cur: Any) -> tuple[int, bool]:  # writes are serialised: check-then-insert is atomic
        if key:
            row = one_row(
                cur.execute(
                    "SELECT id FROM feedback WHERE labeler_id IS NOT DISTINCT FROM ? AND idempotency_key = ?",
                    [labeler_id, key],
                )
            )
            if row:
                return row["id"], False
        return one_value(
            cur.execute(
                "INSERT INTO feedback (prompt, response, score, run_id, notes, labeler_id, source, idempotency_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [fb.prompt, fb.response, fb.score, fb.run_id, fb.notes, labeler_id, fb.source, key],
            )
        ), True

    return db.write(insert)


def recent_feedback(db: Database, labeler_id: int | None = None, limit: int = 50) -> list[dict]:
    """The newest scored feedback, with its sender's name; only ``labeler_id``'s when given."""
    return db.query(
        "SELECT f.id, f.created_at, f.score, f.prompt, f.response, f.run_id, f.notes,"
        " u.name AS sender, f.source FROM feedback f LEFT JOIN users u ON u.id = f.labeler_id"
        " WHERE ? IS NULL OR f.labeler_id = ? ORDER BY f.id DESC LIMIT ?",
        [labeler_id, labeler_id, limit],
    )
