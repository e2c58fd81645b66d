"""Review: people check the pairs an AI labeled (judge runs, constitutional revisions) in the labeling app.

Why it looks like this:
- A review is a person's own vote on the same pair (source 'review'): it never edits the AI's label, so the
  judge's agreement with people (core.judging.runs) grows with every review and training takes people's labels.
- The next pair is the one people have looked at least, least confident AI verdict first: where a person's
  eye is worth most.
- The AI's verdict is shown after the vote by default (seeing it first anchors people to it); a reviewer may
  choose to see it first for speed, and the vote records which way it was done.
- A labeler reviews only text that is not another person's: pairs an AI made (a queue's prompts, constitutional
  revisions: conversations owned by an AI labeler) and pairs from their own chats. Admins review every pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.labeling.identity import User
from core.labeling.votes import OUTCOMES
from storage.db import Database, one_row, one_value

SOURCE = "review"

# AI-labeled pairs the reviewer has not voted on, one row per pair (its first AI label), fewest human votes first.
_NEXT = """
WITH ai AS (
    SELECT p.id, p.candidate_a, p.candidate_b, p.outcome, p.confidence, p.note, u.name AS judge
    FROM preferences p JOIN users u ON u.id = p.labeler_id AND u.kind = 'ai'
    WHERE p.retracted_at IS NULL AND p.redacted_at IS NULL
    QUALIFY row_number() OVER (PARTITION BY p.candidate_a, p.candidate_b ORDER BY p.id) = 1
), people AS (
    SELECT h.candidate_a, h.candidate_b, count(*) AS votes, bool_or(h.labeler_id = $user) AS mine
    FROM preferences h LEFT JOIN users hu ON hu.id = h.labeler_id
    WHERE h.retracted_at IS NULL AND coalesce(hu.kind, 'human') = 'human'
    GROUP BY ALL
)
SELECT ai.*, coalesce(people.votes, 0) AS human_votes, a.text AS text_a, b.text AS text_b,
       a.conversation_id, a.turn, a.prompt_id,
       coalesce((SELECT list({'role': m.role, 'content': m.content} ORDER BY m.turn) FROM messages m
                 WHERE m.conversation_id = a.conversation_id AND m.turn < a.turn AND m.redacted_at IS NULL),
                [{'role': 'user', 'content': pr.text}]) AS prompt
FROM ai
JOIN candidates a ON a.id = ai.candidate_a AND a.redacted_at IS NULL
JOIN candidates b ON b.id = ai.candidate_b AND b.redacted_at IS NULL
LEFT JOIN prompts pr ON pr.id = a.prompt_id AND pr.redacted_at IS NULL
LEFT JOIN people ON people.candidate_a = ai.candidate_a AND people.candidate_b = ai.candidate_b
LEFT JOIN conversations cv ON cv.id = a.conversation_id
LEFT JOIN users owner ON owner.id = cv.user_id
WHERE NOT coalesce(people.mine, false)
  AND ($admin OR cv.user_id = $user OR owner.kind = 'ai' OR (a.conversation_id IS NULL AND pr.queue_id IS NOT NULL))
ORDER BY human_votes, ai.confidence NULLS LAST, ai.id
LIMIT 1
"""


@dataclass(frozen=True)
class ReviewItem:
    """One AI-labeled pair to review; ``ai_outcome`` / ``ai_confidence`` / ``judge`` are what the AI said."""

    candidate_a: int
    candidate_b: int
    prompt: list[dict[str, str]]
    text_a: str
    text_b: str
    judge: str
    ai_outcome: str
    ai_confidence: float | None
    human_votes: int
    critique: str | None  # constitutional revisions: the critique that led to answer B


def next_item(db: Database, user: User) -> ReviewItem | None:
    """The next pair for ``user`` to review, or None when every AI-labeled pair has their vote."""
    rows = db.query(_NEXT, {"user": user.id, "admin": bool(user.is_admin)})
    if not rows:
        return None
    row = rows[0]
    note = _note(row["note"])
    return ReviewItem(
        row["candidate_a"],
        row["candidate_b"],
        [dict(m) for m in row["prompt"] or []],
        row["text_a"],
        row["text_b"],
        row["judge"],
        row["outcome"],
        row["confidence"],
        row["human_votes"],
        note.get("critique"),
    )


def record_review(
    db: Database, user: User, candidate_a: int, candidate_b: int, outcome: str, saw_ai_first: bool = False
) -> int:
    """Store the reviewer's vote on an AI-labeled pair (one per person and pair); returns the preference id."""
    if outcome not in OUTCOMES:
        raise ValidationError(f"Unknown outcome {outcome!r}", hint=f"use one of {', '.join(OUTCOMES)}")

    def write(cur: Any) -> int:
        found = one_row(
            cur.execute(
                "SELECT conversation_id, turn, prompt_id FROM candidates WHERE id = ? AND redacted_at IS NULL",
                [candidate_a],
            )
        )
        other = cur.execute("SELECT 1 FROM candidates WHERE id = ? AND redacted_at IS NULL", [candidate_b]).fetchone()
        labeled = one_value(
            cur.execute(
                "SELECT count(*) FROM preferences p JOIN users u ON u.id = p.labeler_id AND u.kind = 'ai'"
                " WHERE p.candidate_a = ? AND p.candidate_b = ? AND p.retracted_at IS NULL",
                [candidate_a, candidate_b],
            )
        )
        if found is None or other is None or not labeled:
            raise NotFound("That pair is gone, or no AI labeled it", hint="take the next pair")
        owner = (
            None
            if found["conversation_id"] is None
            else one_row(
                cur.execute(
                    "SELECT c.user_id, u.kind FROM conversations c LEFT JOIN users u ON u.id = c.user_id WHERE c.id"
                    " = ?",
                    [found["conversation_id"]],
                )
            )
        )
        if owner is not None and not user.is_admin and owner["user_id"] != user.id and owner["kind"] != "ai":
            raise PermissionDenied("That pair comes from another person's chat", hint="take the next pair")
        if one_value(
            cur.execute(
                "SELECT count(*) FROM preferences WHERE candidate_a = ? AND candidate_b = ? AND labeler_id = ?"
                " AND retracted_at IS NULL",
                [candidate_a, candidate_b, user.id],
            )
        ):
            raise Conflict("You already voted on this pair", hint="take the next pair")
        return one_value(
            cur.execute(
                "INSERT INTO preferences (conversation_id, turn, prompt_id, candidate_a, candidate_b, outcome,"
                " labeler_id,"
                " source, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    found["conversation_id"],
                    found["turn"],
                    found["prompt_id"],
                    candidate_a,
                    candidate_b,
                    outcome,
                    user.id,
                    SOURCE,
                    json.dumps({"saw_ai_first": saw_ai_first}),
                ],
            )
        )

    return db.write(write)


def _note(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
