"""The blind check by people: after a job, labelers are offered pairs of the new version against its parent.

Each pair is an arena battle (core.compare.arena) on a held-out prompt (one neither version trained on, the same
set the "what changed" report samples), with the sides drawn at random and the names shown only after the vote.
The votes are the version's blind check: the report's verdict and the release gate read them
(core.compare.arena.blind_check). The studio stops asking once the votes decide (two-sided sign test, p < 0.05,
over wins and losses) or after ``BLIND_CHECK_VOTES`` votes, and never shows one labeler the same prompt twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from core.compare.arena import blind_check
from core.compare.evaluation import last_user_text
from core.compare.report import held_out_prompts
from core.compare.signature import SIGNIFICANCE, two_sided
from core.compare.verdict import pairs_needed
from core.errors import StudioError, ValidationError
from core.serving.policies import newest_version
from storage.db import Database

BLIND_CHECK_VOTES = 10  # votes offered per version, unless they decide sooner
PROMPT_POOL = 60  # held-out prompts to draw from


@dataclass(frozen=True)
class BlindStatus:
    """Where the blind check of ``version`` against ``against`` stands."""

    version: str
    against: str
    votes: int
    wins: int
    losses: int
    ties: int
    target: int = BLIND_CHECK_VOTES

    @property
    def p_value(self) -> float:
        return two_sided(self.wins, self.losses)

    @property
    def decided(self) -> bool:
        return self.wins != self.losses and self.p_value < SIGNIFICANCE

    @property
    def open(self) -> bool:
        """Still asking: not decided and fewer than ``target`` votes."""
        return not self.decided and self.votes < self.target

    def text(self) -> str:
        """One line for the labeling app and the console."""
        tally = f"{self.votes} of {self.target} votes: {self.version} won {self.wins}, lost {self.losses}" + (
            f", {self.ties} ties" if self.ties else ""
        )
        if self.decided:
            winner = self.version if self.wins > self.losses else self.against
            return f"Blind check of {self.version} against {self.against} decided: people prefer {winner} ({tally})."
        needed = pairs_needed(self.wins, self.wins + self.losses) if self.wins > self.losses else None
        hint = f"; about {needed - self.wins - self.losses} more decisive votes would decide it" if needed else ""
        if not self.open:
            return f"Blind check of {self.version} against {self.against}: not decided after {tally}{hint}."
        return f"Blind check of {self.version} against {self.against}: {tally}{hint}."


def blind_status(db: Database, version: str | None = None, against: str | None = None) -> BlindStatus | None:
    """The blind check of ``version`` (default: the newest trained version, against its parent), or None when
    there is no trained version."""
    if version is None:
        newest = newest_version(db)
        if newest is None:
            return None
        version, against = newest["name"], newest["parent"]
    if against is None:
        from core.serving.policies import default_against

        against = default_against(db, version)
    tally = blind_check(db, version, against) or {"votes": 0, "wins": 0, "losses": 0, "ties": 0}
    return BlindStatus(version, against, tally["votes"], tally["wins"], tally["losses"], tally["ties"])


def next_blind_pair(db: Database, user: Any, rng: random.Random | None = None) -> tuple[str, str, str, BlindStatus]:
    """(prompt, name shown as A, name shown as B, status) of the next blind-check pair for ``user``: the newest
    version against its parent on a held-out prompt this user has not judged them on, sides at random."""
    status = blind_status(db)
    if status is None:
        raise ValidationError("No trained version to check yet", hint="train one on the console's Train page")
    if not status.open:
        raise ValidationError(
            status.text() + " Nothing more to ask.", hint="use the Arena for free battles", code="blind_check_done"
        )
    seen = {
        row["text"]
        for row in db.query(
            "SELECT pr.text FROM battles b JOIN prompts pr ON pr.id = b.prompt_id JOIN policies pa ON pa.id ="
            " b.policy_a_id JOIN policies pb ON pb.id = b.policy_b_id WHERE b.judge_id = ? AND"
            " ((pa.name = ? AND pb.name = ?) OR (pa.name = ? AND pb.name = ?))",
            [getattr(user, "id", None), status.version, status.against, status.against, status.version],
        )
    }
    try:
        prompts = held_out_prompts(db, status.version, status.against, PROMPT_POOL)
    except StudioError as exc:
        raise ValidationError(f"{status.version} cannot be checked blind: {exc.message}", hint=exc.hint) from exc
    fresh = [text for text in (last_user_text(p).strip() for p in prompts) if text and text not in seen]
    if not fresh:
        raise ValidationError(
            f"You have judged {status.version} on every held-out prompt",
            hint="other labelers can add votes; label more prompts to hold out more",
            code="blind_check_done",
        )
    pair = [status.version, status.against]
    (rng or random.Random()).shuffle(pair)
    return fresh[0], pair[0], pair[1], status
