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

FIRST_JOB_PAIRS = 40  # preference pairs before the first suggested job: ~32 to train on, ~8 held out to measure
NEXT_JOB_PAIRS = 20  # new pairs since the newest version before suggesting the next round


@dataclass
class Suggestion:
    """What the console suggests next: a DPO job from the newest version once enough labels exist."""

    ready: bool
    parent: str  # the version to train from (the newest chat version)
    pairs: int  # usable preference pairs (all, before the held-out split)
    new_pairs: int  # of those, labeled after the parent was trained (all of them for base)
    needed: int  # more labels before the suggestion is ready (0 when ready)
    text: str
    request: JobRequest


def next_parent(db: Database) -> tuple[str, Any]:
    """The version the next suggested job trains from (the newest chat version, else base) and when it was trained
    (None for base): the pairs labeled since then are the new ones."""
    newest = newest_version(db)
    return (newest["name"], newest["trained_at"]) if newest else (BASE_POLICY, None)


def suggest_next_job(db: Database, texts: list[tuple[str, str, bool]] | None = None) -> Suggestion:
    """The next training the console suggests: a first DPO run after FIRST_JOB_PAIRS pairs, then a new round from
    the newest version after NEXT_JOB_PAIRS new pairs; always with the data-chosen defaults. ``texts``:
    ``trainsets.preference_texts(db, None, since=next_parent(db)[1])`` when the caller has read them already (the
    Data page reads them once for this and the label signature)."""
    parent, trained_at = next_parent(db)
    if texts is None:
        texts = trainsets.preference_texts(db, None, trained_at)
    # the lengths of preference_rows(db, Filters()) and of (since=the parent's training)
    pairs, new_pairs = len(texts), sum(recent for *_, recent in texts)
    target = FIRST_JOB_PAIRS if trained_at is None else NEXT_JOB_PAIRS
    request = JobRequest("dpo", parent)
    needed = max(0, target - new_pairs)
    first = parent == "base"
    if needed:
        text = (
            f"{new_pairs} preference pair(s) labeled{'' if first else ' since ' + parent + ' was trained'}"
            f": {needed} more and the studio suggests {'a first' if first else 'the next'} DPO run"
            f"{'' if first else ' from ' + parent}."
        )
    else:
        text = (
            f"{new_pairs} {'preference pairs labeled' if first else 'new pairs since ' + parent}: "
            f"ready for {'a first' if first else 'the next'} DPO run from {parent}, with settings "
            "chosen for this data."
        )
    return Suggestion(not needed, parent, pairs, new_pairs, needed, text, request)
