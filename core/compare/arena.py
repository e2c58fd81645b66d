"""The arena: blind A/B battles between policy versions, paired where a vote teaches the leaderboard most.

Pairing for the arena tab favours versions that have few battles and versions whose ratings are
close (the comparisons that teach the leaderboard the most), and randomises which one is shown as A.
A vote is stored as an ordinary preference record (source 'arena') and as a battle; the ratings are computed
in ``core.compare.leaderboard``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from core.compare.leaderboard import OUTCOME_TO_WINNER, Battle, battles_from_db, bt_ratings
from core.errors import NotFound, ValidationError
from core.labeling.feedback import clean_text
from core.labeling.identity import User
from core.labeling.votes import MAX_MESSAGE_CHARS, Vote, active_aspects, receipt_for_key, validate_vote, write_vote
from core.serving.policies import servable_policies
from storage.db import Database, one_row, one_value

if TYPE_CHECKING:
    from core.compare.style import Comparison

CLOSENESS = 200.0  # rating gap (points) at which pairing weight drops by e


# ------------------------------------------------------------------------------------ arena pairing


def pair_weights(models: Sequence[str], battles: Sequence[Battle]) -> dict[tuple[str, str], float]:
    """Sampling weight of every pair: novelty (few battles) times closeness (similar ratings).

    Novelty is ``1/sqrt(1 + n_i) + 1/sqrt(1 + n_j)`` with n the version's battle count, closeness is
    ``exp(-|R_i - R_j| / 200)``; versions without battles count as rated like everyone else (close).
    """
    counts: Counter = Counter()
    for battle in battles:
        counts[battle.model_a] += 1
        counts[battle.model_b] += 1
    rated = [b for b in battles if b.model_a in models and b.model_b in models]
    ratings = bt_ratings(rated) if len({m for b in rated for m in (b.model_a, b.model_b)}) >= 2 else {}
    weights = {}
    for a, b in combinations(models, 2):
        novelty = 1 / math.sqrt(1 + counts[a]) + 1 / math.sqrt(1 + counts[b])
        gap = abs(ratings[a] - ratings[b]) if a in ratings and b in ratings else 0.0
        weights[(a, b)] = novelty * math.exp(-gap / CLOSENESS)
    return weights


def sample_pair(
    models: Sequence[str], battles: Sequence[Battle], rng: np.random.Generator | None = None
) -> tuple[str, str]:
    """Two different versions as (shown as A, shown as B): weighted pair, sides by a coin flip."""
    if len(set(models)) < 2:
        raise NotFound(
            "The arena needs at least two versions",
            hint="train a version on the Train page (or with `launch.py train`) first",
        )
    rng = rng or np.random.default_rng()
    weights = pair_weights(sorted(set(models)), battles)
    pairs = list(weights)
    p = np.array([weights[k] for k in pairs])
    a, b = pairs[int(rng.choice(len(pairs), p=p / p.sum()))]
    return (a, b) if rng.random() < 0.5 else (b, a)


def next_pair(db: Database, rng: np.random.Generator | None = None) -> tuple[str, str]:
    """The next arena pair among the servable versions, given the battles so far."""
    return sample_pair([p["name"] for p in servable_policies(db)], battles_from_db(db), rng)


# ------------------------------------------------------------------------------------ recording votes


@dataclass
class PendingBattle:
    """A generated pair waiting for its vote; kept server-side until then, nothing is stored before."""

    prompt: str
    model_a: str
    model_b: str
    policy_a_id: int
    policy_b_id: int
    answer_a: str
    answer_b: str
    sampling: dict[str, Any] | None = None
    latency_ms: float | None = None
    new_tokens: tuple[int | None, int | None] = (None, None)
    cut: tuple[bool | None, bool | None] = (None, None)  # each answer stopped at the length limit
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # makes a repeated vote a no-op


def clean_prompt(prompt: str) -> str:
    return clean_text(prompt, "prompt", max_chars=MAX_MESSAGE_CHARS).strip()


@dataclass(frozen=True)
class BattleReceipt:
    battle_id: int
    preference_id: int
    created: bool
    model_a: str
    model_b: str
    winner: str


def record_battle(db: Database, user: User, pending: PendingBattle, outcome: str) -> BattleReceipt:
    """Store a vote as a preference record (source 'arena') and as a battle, in ONE transaction.

    The prompt and both answers become a ``prompts`` row and two ``candidates`` rows, the vote goes
    through the labeling module's own validation and writer, so dataset builders, redaction and
    analytics treat it like any other vote. A repeated vote on the same pair returns the first receipt.
    """
    if outcome not in OUTCOME_TO_WINNER:
        raise ValidationError(f"Unknown choice {outcome!r}", hint="vote a, b, tie or both_bad")
    if pending.model_a == pending.model_b:
        raise ValidationError("A battle needs two different versions", hint="start a new battle")
    prompt = clean_prompt(pending.prompt)
    answers = (
        clean_text(pending.answer_a, "answer A", required=False) or "",
        clean_text(pending.answer_b, "answer B", required=False) or "",
    )
    key = f"arena:{pending.token}"
    vote = validate_vote(
        Vote(candidate_a=-1, candidate_b=-2, outcome=outcome, idempotency_key=key, source="arena"),
        {a["name"] for a in active_aspects(db)},
    )
    sampling = json.dumps(pending.sampling) if pending.sampling is not None else None

    def write(cur: Any) -> BattleReceipt:
        seen = receipt_for_key(cur, key)
        if seen is not None:
            row = one_row(
                cur.execute(
                    "SELECT id, model_a, model_b, winner FROM battles WHERE preference_id = ?", [seen.preference_id]
                )
            )
            assert row is not None  # a battle's vote is written with its battle, in one transaction
            return BattleReceipt(row["id"], seen.preference_id, False, row["model_a"], row["model_b"], row["winner"])
        prompt_id = one_value(
            cur.execute("INSERT INTO prompts (text, source) VALUES (?, 'arena') RETURNING id", [prompt])
        )
        ids = [
            one_value(
                cur.execute(
                    "INSERT INTO candidates (prompt_id, policy_id, text, sampling, latency_ms, new_tokens, cut)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [prompt_id, policy_id, text, sampling, pending.latency_ms, tokens, cut],
                )
            )
            for policy_id, text, tokens, cut in (
                (pending.policy_a_id, answers[0], pending.new_tokens[0], pending.cut[0]),
                (pending.policy_b_id, answers[1], pending.new_tokens[1], pending.cut[1]),
            )
        ]
        stored = Vote(**{**vote.__dict__, "candidate_a": ids[0], "candidate_b": ids[1]})
        preference_id = write_vote(cur, user, stored, key, None, None, prompt_id)
        winner = OUTCOME_TO_WINNER[outcome]
        battle_id = one_value(
            cur.execute(
                "INSERT INTO battles (model_a, model_b, policy_a_id, policy_b_id, winner, judge, judge_id,"
                " prompt_id, candidate_a, candidate_b, preference_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                [
                    pending.model_a,
                    pending.model_b,
                    pending.policy_a_id,
                    pending.policy_b_id,
                    winner,
                    user.name,
                    user.id,
                    prompt_id,
                    ids[0],
                    ids[1],
                    preference_id,
                ],
            )
        )
        return BattleReceipt(battle_id, preference_id, True, pending.model_a, pending.model_b, winner)

    return db.write(write)


# ------------------------------------------------------------------------------------ the blind check


def blind_check(db: Database, version: str, against: str) -> dict[str, int] | None:
    """People's arena votes between two versions, from ``version``'s side: {"votes", "wins", "losses", "ties"}.

    Arena battles are blind (names shown only after the vote, sides drawn at random), so they are the blind check
    a "what changed" verdict may rest on. AI judges' battles are left out, and so are undone or redacted votes;
    "both bad" counts as a tie. None when people never compared the two."""
    rows = db.query(
        "SELECT pa.name AS a, pb.name AS b, t.winner FROM battles t"
        " JOIN policies pa ON pa.id = t.policy_a_id JOIN policies pb ON pb.id = t.policy_b_id"
        " LEFT JOIN preferences p ON p.id = t.preference_id LEFT JOIN users u ON u.id = t.judge_id"
        " WHERE coalesce(u.kind, 'human') = 'human' AND (p.id IS NULL OR (p.retracted_at IS NULL"
        " AND p.redacted_at IS NULL)) AND ((pa.name = ? AND pb.name = ?) OR (pa.name = ? AND pb.name = ?))",
        [version, against, against, version],
    )
    if not rows:
        return None
    wins = sum(1 for r in rows if r["winner"] == ("model_a" if r["a"] == version else "model_b"))
    losses = sum(1 for r in rows if r["winner"] == ("model_b" if r["a"] == version else "model_a"))
    return {"votes": len(rows), "wins": wins, "losses": losses, "ties": len(rows) - wins - losses}


def people_comparisons(db: Database, versions: Sequence[str] | None = None) -> list[Comparison]:
    """People's arena votes with both answers (for style control), optionally only between ``versions``."""
    from core.compare.style import Comparison

    rows = db.query(
        "SELECT coalesce(pa.name, r.model_a) AS a, coalesce(pb.name, r.model_b) AS b, r.winner, r.answer_a,"
        " r.answer_b FROM battle_records r LEFT JOIN policies pa ON pa.id = r.policy_a_id"
        " LEFT JOIN policies pb ON pb.id = r.policy_b_id LEFT JOIN preferences p ON p.id = r.preference_id"
        " LEFT JOIN users u ON u.id = r.judge_id WHERE coalesce(u.kind, 'human') = 'human'"
        " AND (p.id IS NULL OR (p.retracted_at IS NULL AND p.redacted_at IS NULL)) ORDER BY r.id"
    )
    score = {"model_a": 1.0, "model_b": 0.0}
    picked = set(versions) if versions else None
    return [
        Comparison(r["a"], r["b"], r["answer_a"] or "", r["answer_b"] or "", score.get(r["winner"], 0.5))
        for r in rows
        if picked is None or {r["a"], r["b"]} <= picked
    ]
