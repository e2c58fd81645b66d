"""Chat-and-label records: conversations, candidate pairs, votes (with ratings, thumbs, gold edits,
flags and notes), undo of the last vote.

Every function here commits before it returns, so when a UI says "saved" the vote is on disk. Votes are
idempotent: a repeated submission (double click, network retry, two tabs) returns the first receipt
instead of writing a second row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from core.labeling.identity import User
from storage.db import Database, all_rows, first_column, one_row, one_value

OUTCOMES = ("a", "b", "tie", "both_bad")
OUTCOME_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
FLAGS = ("unsafe", "pii", "off_topic")
RATING_MIN, RATING_MAX = 1, 5
MAX_MESSAGE_CHARS = 200_000  # longer chat messages are refused; long ones are cut to the model context
SIDES = ("a", "b")


# -- aspects ---------------------------------------------------------------------------------------
def active_aspects(db: Database) -> list[dict[str, Any]]:
    return db.query("SELECT name, description, weight FROM aspects WHERE active ORDER BY position, name")


def save_aspects(db: Database, admin: User, aspects: list[dict[str, Any]]) -> None:
    """Replace the active aspect set (old aspects are deactivated, never deleted: ratings refer to them)."""
    if not admin.is_admin:
        raise PermissionDenied("Only admins can change the rating aspects", hint="ask an admin")
    names = [clean_text(a["name"], "aspect name", max_chars=40).strip().lower().replace(" ", "_") for a in aspects]
    if len(set(names)) != len(names) or not names:
        raise ValidationError("Aspect names must be unique and at least one is needed", hint="rename the duplicates")
    with db.transaction() as cur:
        cur.execute("UPDATE aspects SET active = FALSE")
        for position, (name, aspect) in enumerate(zip(names, aspects), 1):
            weight = float(aspect.get("weight", 1.0))
            if weight < 0:
                raise ValidationError(f"Weight of {name} is negative", hint="use a weight ≥ 0")
            cur.execute(
                "INSERT INTO aspects (name, description, weight, position, active) VALUES (?, ?, ?, ?, TRUE)"
                " ON CONFLICT (name) DO UPDATE SET description = excluded.description,"
                " weight = excluded.weight, position = excluded.position, active = TRUE",
                [name, str(aspect.get("description", "")), weight, position],
            )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, details) VALUES (?, 'edit', 'aspects', ?)",
            [admin.id, json.dumps({"aspects": names})],
        )


# -- conversations ---------------------------------------------------------------------------------
def new_conversation(db: Database, user: User, policy_id: int | None, prompt_id: int | None = None) -> int:
    with db.transaction() as cur:
        return one_value(
            cur.execute(
                "INSERT INTO conversations (user_id, policy_id, prompt_id) VALUES (?, ?, ?) RETURNING id",
                [user.id, policy_id, prompt_id],
            )
        )


def _own_conversation(cur: duckdb.DuckDBPyConnection, conversation_id: int, user: User) -> None:
    row = one_row(cur.execute("SELECT user_id FROM conversations WHERE id = ?", [conversation_id]))
    if row is None:
        raise NotFound(f"Conversation {conversation_id} does not exist", hint="start a new chat")
    if row["user_id"] != user.id:
        raise PermissionDenied("This conversation belongs to another labeler", hint="start your own chat")


def history(db: Database, conversation_id: int) -> list[dict[str, str]]:
    """The conversation so far in chat-template format."""
    return db.query(
        "SELECT role, content FROM messages WHERE conversation_id = ? AND redacted_at IS NULL ORDER BY turn",
        [conversation_id],
    )


def add_user_message(db: Database, user: User, conversation_id: int, text: str) -> int:
    """Append the user's message; returns the turn index the answer candidates will have."""
    text = clean_text(text, "message", max_chars=MAX_MESSAGE_CHARS)
    with db.transaction() as cur:
        _own_conversation(cur, conversation_id, user)
        last = one_row(
            cur.execute(
                "SELECT turn, role FROM messages WHERE conversation_id = ? ORDER BY turn DESC LIMIT 1",
                [conversation_id],
            )
        )
        if last is not None and last["role"] == "user":
            raise Conflict(
                "The last message has no accepted answer yet",
                hint="vote on the two answers (or regenerate them) before writing again",
            )
        turn = 0 if last is None else last["turn"] + 1
        cur.execute(
            "INSERT INTO messages (conversation_id, turn, role, content) VALUES (?, ?, 'user', ?)",
            [conversation_id, turn, text],
        )
        return turn + 1


@dataclass
class CandidateIn:
    text: str
    policy_id: int | None
    latency_ms: float | None = None
    new_tokens: int | None = None
    cut: bool | None = None  # stopped at the length limit (None: unknown); see migration 017


def save_pair(
    db: Database,
    conversation_id: int | None,
    turn: int | None,
    prompt_id: int | None,
    a: CandidateIn,
    b: CandidateIn,
    sampling: dict[str, Any] | None,
    truncated_tokens: int = 0,
) -> tuple[int, int]:
    """Store the two candidates shown for one assistant turn."""
    ids = []
    with db.transaction() as cur:
        for cand in (a, b):
            ids.append(
                one_value(
                    cur.execute(
                        "INSERT INTO candidates (conversation_id, turn, prompt_id, policy_id, text, sampling,"
                        " latency_ms, new_tokens, truncated_tokens, cut) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " RETURNING id",
                        [
                            conversation_id,
                            turn,
                            prompt_id,
                            cand.policy_id,
                            cand.text,
                            json.dumps(sampling) if sampling is not None else None,
                            cand.latency_ms,
                            cand.new_tokens,
                            truncated_tokens,
                            cand.cut,
                        ],
                    )
                )
            )
    return ids[0], ids[1]


def write_prompt_pair(
    cur: duckdb.DuckDBPyConnection,
    user: User,
    prompt_text: str,
    prompt_id: int | None,
    a: CandidateIn,
    b: CandidateIn,
    sampling: dict[str, Any] | None,
) -> tuple[int, int, int, int]:
    """A one-turn conversation of ``user`` (the prompt, then two candidate answers) inside the caller's
    transaction, for pairs made without a chat (AI judges on a queue, constitutional revisions): it exists whole
    or not at all. Returns (conversation id, candidates' turn, candidate A id, candidate B id)."""
    conversation_id = one_value(
        cur.execute(
            "INSERT INTO conversations (user_id, policy_id, prompt_id) VALUES (?, ?, ?) RETURNING id",
            [user.id, a.policy_id, prompt_id],
        )
    )
    cur.execute(
        "INSERT INTO messages (conversation_id, turn, role, content) VALUES (?, 0, 'user', ?)",
        [conversation_id, clean_text(prompt_text, "message", max_chars=MAX_MESSAGE_CHARS)],
    )
    ids = [
        one_value(
            cur.execute(
                "INSERT INTO candidates (conversation_id, turn, prompt_id, policy_id, text, sampling,"
                " latency_ms, new_tokens, cut) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    conversation_id,
                    prompt_id,
                    cand.policy_id,
                    cand.text,
                    json.dumps(sampling) if sampling is not None else None,
                    cand.latency_ms,
                    cand.new_tokens,
                    cand.cut,
                ],
            )
        )
        for cand in (a, b)
    ]
    return conversation_id, 1, ids[0], ids[1]


# -- votes -----------------------------------------------------------------------------------------
@dataclass
class Vote:
    """Everything a labeler says about one pair of candidates."""

    candidate_a: int
    candidate_b: int
    outcome: str
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> aspect -> 1..5
    thumbs: dict[str, bool] = field(default_factory=dict)  # side -> up?
    gold_text: str | None = None  # the answer it should have been
    gold_side: str | None = None  # which candidate it was edited from
    note: str | None = None
    flags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    source: str = "chat"


@dataclass(frozen=True)
class VoteReceipt:
    preference_id: int
    created: bool  # False when this was a repeat of an already saved vote
    continuation: str | None  # the answer that continues the conversation (None: regenerate)


@dataclass(frozen=True)
class UndoneVote:
    """The vote an undo retracted: the turn it reopened and the pair to vote on again."""

    preference_id: int
    conversation_id: int | None  # None for a vote on a queued prompt or an API pair
    turn: int | None
    candidate_a: int
    candidate_b: int


def validate_vote(vote: Vote, aspects: set[str]) -> Vote:
    """The vote checked and cleaned (outcome, ratings against ``aspects``, thumbs, flags, gold edit, note).

    Public because every way of voting (chat pairs, prompt queues, arena battles) must apply the same rules."""
    if vote.outcome not in OUTCOMES:
        raise ValidationError(f"Unknown choice {vote.outcome!r}", hint=f"choose one of {', '.join(OUTCOMES)}")
    if vote.candidate_a == vote.candidate_b:
        raise ValidationError("A vote needs two different candidates", hint="generate a new pair")
    for side, scores in vote.ratings.items():
        if side not in SIDES:
            raise ValidationError(f"Unknown side {side!r} in ratings", hint="rate side a or b")
        for aspect, score in scores.items():
            if aspect not in aspects:
                raise ValidationError(f"Unknown aspect {aspect!r}", hint=f"rate one of {', '.join(sorted(aspects))}")
            if (
                isinstance(score, bool)
                or not isinstance(score, (int, float))
                or not RATING_MIN <= score <= RATING_MAX
                or int(score) != score
            ):
                raise ValidationError(
                    f"Rating {aspect}={score!r} is not a whole number from 1 to 5", hint="rate 1 (worst) to 5 (best)"
                )
    if any(side not in SIDES for side in vote.thumbs):
        raise ValidationError("Thumbs must be for side a or b", hint="give thumbs to a or b")
    unknown = set(vote.flags) - set(FLAGS)
    if unknown:
        raise ValidationError(f"Unknown flag(s) {sorted(unknown)}", hint=f"use {', '.join(FLAGS)}")
    gold = clean_text(vote.gold_text, "gold answer") if vote.gold_text and vote.gold_text.strip() else None
    if gold is not None and vote.gold_side not in (None, *SIDES):
        raise ValidationError("gold_side must be a or b", hint="say which answer you edited")
    note = clean_text(vote.note, "note", required=False, max_chars=5000) if vote.note else None
    return Vote(**{**vote.__dict__, "gold_text": gold, "note": note, "flags": tuple(sorted(set(vote.flags)))})


def _continuation(vote: Vote, texts: dict[str, str]) -> tuple[str | None, str | None]:
    """(text, side) that continues the conversation: the gold edit if any, else the pick (A on a tie)."""
    if vote.gold_text:
        return vote.gold_text, vote.gold_side
    if vote.outcome in SIDES:
        return texts[vote.outcome], vote.outcome
    if vote.outcome == "tie":
        return texts["a"], "a"
    return None, None


def _insert_rows(
    cur: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """One multi-row INSERT: DuckDB's cost is per statement, not per row (the ids are drawn beforehand)."""
    if not rows:
        return
    marks = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(rows))
    cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks}", [value for row in rows for value in row])


_PREFERENCE_COLUMNS = (
    "id",
    "conversation_id",
    "turn",
    "prompt_id",
    "candidate_a",
    "candidate_b",
    "outcome",
    "labeler_id",
    "source",
    "note",
    "flags",
    "idempotency_key",
)


def _write_preferences(
    cur: duckdb.DuckDBPyConnection, votes: list[tuple[User, Vote, str, int | None, int | None, int | None]]
) -> list[int]:
    """Insert preference rows and everything said with them (ratings, thumbs, gold edits).

    ``votes`` holds (user, vote, idempotency key, conversation id, turn, prompt id); returns the new
    preference ids in the same order. A handful of statements whatever the number of votes.
    """
    ids = first_column(cur.execute("SELECT nextval('preferences_seq') FROM range(?)", [len(votes)]))
    _insert_rows(
        cur,
        "preferences",
        _PREFERENCE_COLUMNS,
        [
            (
                pid,
                conversation_id,
                turn,
                prompt_id,
                vote.candidate_a,
                vote.candidate_b,
                vote.outcome,
                user.id,
                vote.source,
                vote.note,
                list(vote.flags),
                key,
            )
            for pid, (user, vote, key, conversation_id, turn, prompt_id) in zip(ids, votes)
        ],
    )
    ratings, thumbs, gold = [], [], []
    for pid, (user, vote, *_) in zip(ids, votes):
        side_ids = {"a": vote.candidate_a, "b": vote.candidate_b}
        ratings += [
            (side_ids[side], user.id, aspect, score, pid)
            for side, scores in vote.ratings.items()
            for aspect, score in scores.items()
        ]
        thumbs += [(side_ids[side], pid, user.id, bool(up)) for side, up in vote.thumbs.items()]
        if vote.gold_text:
            gold.append((pid, side_ids.get(vote.gold_side or ""), user.id, vote.gold_text))
    _insert_rows(cur, "ratings", ("candidate_id", "user_id", "aspect", "score", "preference_id"), ratings)
    _insert_rows(cur, "thumbs", ("candidate_id", "preference_id", "user_id", "up"), thumbs)
    _insert_rows(cur, "gold_answers", ("preference_id", "candidate_id", "user_id", "text"), gold)
    return ids


def write_vote(
    cur: duckdb.DuckDBPyConnection,
    user: User,
    vote: Vote,
    key: str,
    conversation_id: int | None,
    turn: int | None,
    prompt_id: int | None,
) -> int:
    """Insert the preference row and everything said with it; returns the preference id (arena battles store
    their votes through this too, so every vote has the same rows)."""
    return _write_preferences(cur, [(user, vote, key, conversation_id, turn, prompt_id)])[0]


def record_vote(db: Database, user: User, vote: Vote) -> VoteReceipt:
    """Validate and store a vote with its ratings, thumbs, gold edit, note and flags in one transaction."""
    vote = validate_vote(vote, {a["name"] for a in active_aspects(db)})
    key = vote.idempotency_key or f"{vote.source}:{user.id}:{vote.candidate_a}:{vote.candidate_b}"
    # db.write serialises writers, so "already saved? else save" cannot interleave with a repeat
    return db.write(lambda cur: receipt_for_key(cur, key) or _insert_vote(cur, user, vote, key))


def receipt_for_key(cur: duckdb.DuckDBPyConnection, key: str) -> VoteReceipt | None:
    """The receipt of a vote already saved under this idempotency key, or None: a repeated request is not a new vote."""
    row = one_row(
        cur.execute(
            "SELECT p.id, m.content FROM preferences p LEFT JOIN messages m ON m.conversation_id = p.conversation_id"
            " AND m.turn = p.turn AND m.role = 'assistant' WHERE p.idempotency_key = ?",
            [key],
        )
    )
    return None if row is None else VoteReceipt(row["id"], False, row["content"])


def _insert_vote(cur: duckdb.DuckDBPyConnection, user: User, vote: Vote, key: str) -> VoteReceipt:
    rows = all_rows(
        cur.execute(
            "SELECT id, conversation_id, turn, prompt_id, text, redacted_at FROM candidates WHERE id IN (?, ?)",
            [vote.candidate_a, vote.candidate_b],
        )
    )
    found = {r["id"]: r for r in rows}
    for cid in (vote.candidate_a, vote.candidate_b):
        if cid not in found or found[cid]["redacted_at"] is not None:
            raise NotFound(f"Candidate {cid} does not exist (or was deleted)", hint="generate a new pair")
    a, b = found[vote.candidate_a], found[vote.candidate_b]
    if (a["conversation_id"], a["turn"]) != (b["conversation_id"], b["turn"]):
        raise ValidationError("The two candidates answer different turns", hint="vote on one pair at a time")
    conversation_id, turn, prompt_id = a["conversation_id"], a["turn"], a["prompt_id"]
    if conversation_id is not None:
        _own_conversation(cur, conversation_id, user)
        taken = one_value(
            cur.execute("SELECT count(*) FROM messages WHERE conversation_id = ? AND turn = ?", [conversation_id, turn])
        )
        if taken:
            raise Conflict(
                "This turn already has an accepted answer", hint="undo the last vote first if you want to change it"
            )
    preference_id = write_vote(cur, user, vote, key, conversation_id, turn, prompt_id)
    side_ids = {"a": vote.candidate_a, "b": vote.candidate_b}
    text, side = _continuation(vote, {"a": a["text"], "b": b["text"]})
    if conversation_id is not None and text is not None:
        cur.execute(
            "INSERT INTO messages (conversation_id, turn, role, content, candidate_id)"
            " VALUES (?, ?, 'assistant', ?, ?)",
            [conversation_id, turn, text, side_ids.get(side or "")],
        )
    if prompt_id is not None:
        cur.execute(
            "UPDATE assignments SET status = 'done', finished_at = now() WHERE prompt_id = ? AND user_id = ?",
            [prompt_id, user.id],
        )
    return VoteReceipt(preference_id, True, text)


def undo_last_vote(db: Database, user: User) -> UndoneVote:
    """Retract the labeler's most recent vote (kept for the record, ignored by builders) and reopen its turn."""
    with db.transaction() as cur:
        row = one_row(
            cur.execute(
                "SELECT id, conversation_id, turn, prompt_id, candidate_a, candidate_b FROM preferences"
                " WHERE labeler_id = ? AND retracted_at IS NULL AND redacted_at IS NULL ORDER BY id DESC LIMIT 1",
                [user.id],
            )
        )
        if row is None:
            raise NotFound("You have no vote to undo", hint="vote first")
        preference_id, conversation_id, turn = row["id"], row["conversation_id"], row["turn"]
        prompt_id, cand_a, cand_b = row["prompt_id"], row["candidate_a"], row["candidate_b"]
        if conversation_id is not None:
            later = one_value(
                cur.execute(
                    "SELECT count(*) FROM messages WHERE conversation_id = ? AND turn > ?", [conversation_id, turn]
                )
            )
            if later:
                raise Conflict(
                    "The conversation already went on after that vote",
                    hint="undo works until you send the next message",
                )
            cur.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND turn = ? AND role = 'assistant'",
                [conversation_id, turn],
            )
        cur.execute("UPDATE preferences SET retracted_at = now(), idempotency_key = NULL WHERE id = ?", [preference_id])
        if prompt_id is not None:
            cur.execute(
                "UPDATE assignments SET status = 'served', finished_at = NULL WHERE prompt_id = ? AND user_id = ?",
                [prompt_id, user.id],
            )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, target_id) VALUES (?, 'undo', 'preferences', ?)",
            [user.id, preference_id],
        )
    return UndoneVote(preference_id, conversation_id, turn, cand_a, cand_b)


@dataclass(frozen=True)
class LabeledPair:
    """A validated pair labeled outside the chat, ready to be written."""

    user: User
    prompt: str
    answers: tuple[str, str]
    vote: Vote
    cut: tuple[bool | None, bool | None] = (None, None)  # each answer stopped at a length limit (None: unknown)


def labeled_pair(
    db: Database,
    user: User,
    prompt: str,
    answer_a: str,
    answer_b: str,
    vote: Vote,
    cut: tuple[bool | None, bool | None] = (None, None),
) -> LabeledPair:
    """Validate a pair labeled outside the chat (REST API, scripts). Reads the DB only to check ratings."""
    prompt = clean_text(prompt, "prompt")
    answers = (clean_text(answer_a, "answer_a"), clean_text(answer_b, "answer_b"))
    aspects = {a["name"] for a in active_aspects(db)} if vote.ratings else set()
    vote = validate_vote(Vote(**{**vote.__dict__, "candidate_a": -1, "candidate_b": -2}), aspects)
    return LabeledPair(user, prompt, answers, vote, cut)


def submit_labeled_pair(db: Database, user: User, prompt: str, answer_a: str, answer_b: str, vote: Vote) -> VoteReceipt:
    """Store a prompt, both answers and the vote at once; returns after the commit.

    ``vote.candidate_a/b`` are ignored: the candidates are created here, in the same transaction.
    Concurrent submissions are written together (:meth:`Database.write_batched`).
    """
    return db.write_batched(write_labeled_pairs, labeled_pair(db, user, prompt, answer_a, answer_b, vote))


def write_labeled_pairs(cur: duckdb.DuckDBPyConnection, pairs: list[LabeledPair]) -> list[VoteReceipt]:
    """Store many labeled pairs with a few multi-row statements; repeats of a saved key are no-ops."""
    keys = [p.vote.idempotency_key for p in pairs if p.vote.idempotency_key]
    saved = (
        dict(
            cur.execute(
                "SELECT idempotency_key, id FROM preferences WHERE idempotency_key IN (SELECT unnest(?))", [keys]
            ).fetchall()
        )
        if keys
        else {}
    )
    fresh: list[int] = []  # indexes into pairs that get new rows
    first_of: dict[str, int] = {}  # key -> index of its first occurrence in this group
    for i, pair in enumerate(pairs):
        key = pair.vote.idempotency_key
        if key is None or (key not in saved and key not in first_of):
            fresh.append(i)
            if key is not None:
                first_of[key] = i
    ids = (
        cur.execute(
            "SELECT nextval('prompts_seq'), nextval('candidates_seq'), nextval('candidates_seq') FROM range(?)",
            [len(fresh)],
        ).fetchall()
        if fresh
        else []
    )
    _insert_rows(
        cur,
        "prompts",
        ("id", "text", "source"),
        [(prompt_id, pairs[i].prompt, pairs[i].vote.source) for i, (prompt_id, _, _) in zip(fresh, ids)],
    )
    _insert_rows(
        cur,
        "candidates",
        ("id", "prompt_id", "text", "cut"),
        [
            (cid, prompt_id, text, cut)
            for i, (prompt_id, c1, c2) in zip(fresh, ids)
            for cid, text, cut in zip(sorted((c1, c2)), pairs[i].answers, pairs[i].cut)
        ],
    )
    rows: list[tuple[User, Vote, str, int | None, int | None, int | None]] = []
    for i, (prompt_id, c1, c2) in zip(fresh, ids):
        pair = pairs[i]
        a, b = sorted((c1, c2))
        stored = Vote(**{**pair.vote.__dict__, "candidate_a": a, "candidate_b": b})
        rows.append(
            (
                pair.user,
                stored,
                pair.vote.idempotency_key or f"{stored.source}:{pair.user.id}:{a}:{b}",
                None,
                None,
                prompt_id,
            )
        )
    created = dict(zip(fresh, _write_preferences(cur, rows))) if rows else {}
    receipts = []
    for i, pair in enumerate(pairs):
        key = pair.vote.idempotency_key
        if i in created:
            receipts.append(VoteReceipt(created[i], True, None))
        elif key in saved:
            receipts.append(VoteReceipt(saved[key], False, None))
        else:  # a repeat of a key first seen earlier in this same group
            assert key is not None  # a pair without a key always got a new row
            receipts.append(VoteReceipt(created[first_of[key]], False, None))
    return receipts


def candidate_texts(db: Database, candidate_ids: list[int]) -> dict[int, str | None]:
    """Answer texts by candidate id; ids that do not exist are left out.

    The label app shows a pair's answers again after an undo and pre-fills an answer the labeler edits; it
    asks here rather than reading the candidates table itself (UIs never run SQL).
    """
    if not candidate_ids:
        return {}
    marks = ", ".join("?" for _ in candidate_ids)
    return {
        r["id"]: r["text"]
        for r in db.query(f"SELECT id, text FROM candidates WHERE id IN ({marks})", list(candidate_ids))
    }
