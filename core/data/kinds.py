"""The dataset kinds: the one registry of what a training set can be, and how its rows are built.

Every place that deals in kinds reads this table: each algorithm names the kind it trains on
(core.training ``AlgorithmSpec.dataset_kind``), training jobs build and split its rows
(core.data.job_data), the Data page previews it, dataset exports write it with a card (core.share), and the
job planner words its counts with ``unit`` ("64 pairs"). Adding a kind means adding one entry here.

| Kind | Rows (core.data.trainsets) | Unit | Exported as a dataset |
|---|---|---|---|
| ``preference`` | ``preference_rows`` | pairs | yes |
| ``reward`` | ``preference_rows(margin_from_ratings=True)`` | pairs | yes |
| ``unpaired`` | ``unpaired_rows`` | labeled answers | yes |
| ``sft`` | ``sft_rows`` | conversations | yes |
| ``prompts`` | ``prompt_rows`` (the prompts of the preference pairs) | prompts | no: online RL only |
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from core.data import trainsets
from core.data.filters import Filters
from core.data.trainsets import Built, Rows
from core.errors import ValidationError
from storage.db import Database


@dataclass(frozen=True)
class DatasetKind:
    """One kind of training set: what the console, the jobs and the exports need to know about it."""

    name: str
    label: str                                   # how the console names it (Data and Export pages)
    unit: str                                    # what one row is, in words: "64 pairs"
    rows: Callable[[Database, Filters], Rows]    # the rows and the builder's stats, from the labels
    exportable: bool                             # a TRL dataset with a fixed schema and a dataset card
    evaluated_while_training: bool = True        # its held-out rows are evaluated on while a job trains

    def dataset(self, db: Database, filters: Filters) -> Built:
        """The rows as a ``datasets.Dataset`` with the kind's fixed schema (exportable kinds only)."""
        built = self.rows(db, filters)
        return Built(trainsets.to_dataset(self.name, built.rows), built.stats)


def prompt_rows(db: Database, filters: Filters) -> Rows:
    """``{"prompt": ...}`` rows, one per distinct prompt of the preference pairs (online RL generates its own
    answers to them). The stats are those of the preference pairs they come from."""
    pairs = trainsets.preference_rows(db, filters)
    seen: dict[str, dict] = {}
    for row in pairs.rows:
        seen.setdefault(json.dumps(row["prompt"], sort_keys=True), {"prompt": row["prompt"]})
    return Rows(list(seen.values()), pairs.stats)


KINDS: dict[str, DatasetKind] = {kind.name: kind for kind in (
    DatasetKind("preference", "Preference (prompt / chosen / rejected) — DPO, ORPO", "pairs",
                lambda db, filters: trainsets.preference_rows(db, filters), exportable=True),
    DatasetKind("reward", "Reward model (preference + rating margin)", "pairs",
                lambda db, filters: trainsets.preference_rows(db, filters, margin_from_ratings=True),
                exportable=True),
    DatasetKind("unpaired", "Unpaired / KTO (prompt / completion / label)", "labeled answers",
                lambda db, filters: trainsets.unpaired_rows(db, filters), exportable=True),
    DatasetKind("sft", "SFT (messages: gold edits and chosen answers)", "conversations",
                lambda db, filters: trainsets.sft_rows(db, filters), exportable=True),
    # online RL trains on prompts and evaluates nothing while training: its curve is the reward itself
    DatasetKind("prompts", "Prompts (online RL)", "prompts", prompt_rows, exportable=False,
                evaluated_while_training=False),
)}

EXPORTABLE: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.exportable)


def get_kind(name: str) -> DatasetKind:
    """The kind called ``name``; an unknown name is a ValidationError."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValidationError(f"Unknown dataset kind {name!r}") from None


def exportable_kind(name: str) -> DatasetKind:
    """The kind called ``name`` when it can be exported as a dataset; otherwise a ValidationError naming those
    that can."""
    if name not in EXPORTABLE:
        raise ValidationError(f"Unknown dataset kind {name!r}", hint=f"use one of {', '.join(EXPORTABLE)}")
    return KINDS[name]


def unit(name: str) -> str:
    """What one row of kind ``name`` is, in words ("pairs"); "examples" for a name that is not a kind."""
    kind = KINDS.get(name)
    return kind.unit if kind else "examples"
