"""The guided loop: what training the console suggests next, once enough labels exist.

A first DPO run after FIRST_JOB_PAIRS preference pairs, then a new round from the newest version after
NEXT_JOB_PAIRS new pairs; the request carries no hyperparameters, so the data-chosen defaults apply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.data import trainsets
from core.serving.policies import BASE_POLICY, newest_version
from core.training.request import JobRequest
from storage.db import Database

FIRST_JOB_PAIRS = 40   # preference pairs before the first suggested job: ~32 to train on, ~8 held out to measure
NEXT_JOB_PAIRS = 20    # new pairs since the newest version before suggesting the next round


@dataclass
class Suggestion:
    """What the console suggests next: a DPO job from the newest version once enough labels exist."""

    ready: bool
    parent: str                 # the version to train from (the newest chat version)
    pairs: int                  # usable preference pairs (all, before the held-out split)
    new_pairs: int              # of those, labeled after the parent was trained (all of them for base)
    needed: int                 # more labels before the suggestion is ready (0 when ready)
    text: str
    request: JobRequest


def suggest_next_job(db: Database) -> Suggestion:
    """The next training the console suggests: a first DPO run after FIRST_JOB_PAIRS pairs, then a new round from
    the newest version after NEXT_JOB_PAIRS new pairs; always with the data-chosen defaults."""
    newest = newest_version(db)
    parent: dict[str, Any] = {"name": newest["name"], "created_at": newest["trained_at"]} if newest else \
        {"name": BASE_POLICY, "created_at": None}
    # the lengths of preference_rows(db, Filters()) and of (since=the parent's training), from one read of the votes
    pairs, new_pairs = trainsets.preference_pair_counts(db, parent["created_at"])
    target = FIRST_JOB_PAIRS if parent["created_at"] is None else NEXT_JOB_PAIRS
    request = JobRequest("dpo", parent["name"])
    needed = max(0, target - new_pairs)
    first = parent["name"] == "base"
    if needed:
        text = (f"{new_pairs} preference pair(s) labeled{'' if first else ' since ' + parent['name'] + ' was trained'}"
                f": {needed} more and the studio suggests {'a first' if first else 'the next'} DPO run"
                f"{'' if first else ' from ' + parent['name']}.")
    else:
        text = (f"{new_pairs} {'preference pairs labeled' if first else 'new pairs since ' + parent['name']}: "
                f"ready for {'a first' if first else 'the next'} DPO run from {parent['name']}, with settings "
                "chosen for this data.")
    return Suggestion(not needed, parent["name"], pairs, new_pairs, needed, text, request)
