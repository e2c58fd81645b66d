"""The data of a training job: the rows it trains on, the held-out rows it evaluates on, and their fingerprints.

The supervisor (core.training.jobs) freezes these rows into the job's run directory; its dry run shows
``data_stats``; ``content_hash`` names the data a version was trained on (and an exported dataset, so a model card
can point at the dataset it came from). This module only needs to know, of an algorithm, the dataset kind it
reads and how many examples it needs (`DataNeeds`), so the data layer never imports core.training.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.data import kinds
from core.data.filters import Filters
from core.data.split import split_held_out
from storage.db import Database

MAX_EVAL_ROWS = 48   # held-out rows evaluated while training: enough to see a trend, cheap to run ~8 times


class DataNeeds(Protocol):
    """What building a job's data needs to know of its algorithm (core.training's AlgorithmSpec has both)."""

    @property
    def dataset_kind(self) -> str: ...

    @property
    def min_examples(self) -> int: ...


@dataclass
class TrainingData:
    """The rows a job trains on, the held-out rows it evaluates on while training, and how they were chosen."""

    rows: list[dict]
    eval_rows: list[dict]
    stats: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def build_rows(db: Database, spec: DataNeeds, filters: Filters) -> tuple[list[dict], dict]:
    """The training rows for an algorithm's dataset kind, from the labels in the database."""
    data = build_training_data(db, spec, filters)
    return data.rows, data.stats


def build_training_data(db: Database, spec: DataNeeds, filters: Filters) -> TrainingData:
    """Training rows and the held-out split (``filters.hold_out_percent`` of prompts, by a fixed hash).

    When holding out would leave fewer rows than the algorithm needs, the job trains on every row instead and
    says so (a first job on a dozen labels should run; its report then has no held-out pairs to measure on).
    Online RL trains on prompts and evaluates nothing while training (its curve is the reward itself).
    """
    kind = kinds.get_kind(spec.dataset_kind)
    built = kind.rows(db, filters)
    kept, held = split_held_out(built.rows, filters.hold_out_percent)
    if not kind.evaluated_while_training:
        return TrainingData(kept, [], with_held_out(built.stats, len(held)))
    if held and len(kept) < spec.min_examples:
        notes = [] if len(built.rows) < spec.min_examples else [
            f"too few labels to hold out an evaluation split ({len(kept)} would be left, {spec.min_examples} "
            f"needed): training on all {len(built.rows)} {kind.unit}; label more to get a held-out measurement"]
        return TrainingData(built.rows, [], built.stats, notes)
    return TrainingData(kept, eval_subset(held), with_held_out(built.stats, len(held)))


def eval_subset(rows: list[dict]) -> list[dict]:
    """At most MAX_EVAL_ROWS held-out rows, a fixed subset (by content hash) so reruns evaluate the same ones."""
    if len(rows) <= MAX_EVAL_ROWS:
        return rows
    return sorted(rows, key=lambda r: hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode())
                  .hexdigest())[:MAX_EVAL_ROWS]


def with_held_out(stats: dict[str, Any], held: int) -> dict[str, Any]:
    """The builder's stats, with the examples the evaluation split took counted among the skipped ones."""
    return {**stats, "skipped": {**stats.get("skipped", {}), **({"held_out": held} if held else {})}}


def unit(spec: DataNeeds) -> str:
    """What one training row of this algorithm is, in words ("pairs")."""
    return kinds.unit(spec.dataset_kind)


def data_stats(rows: list[dict]) -> dict[str, Any]:
    """A few numbers people check before training: sizes, label balance, margins, lengths."""
    stats: dict[str, Any] = {"rows": len(rows)}
    if rows and "label" in rows[0]:
        stats["desirable"] = sum(1 for r in rows if r["label"])
        stats["undesirable"] = len(rows) - stats["desirable"]
    if rows and "margin" in rows[0]:
        margins = [r["margin"] for r in rows if r.get("margin") is not None]
        stats["mean_margin"] = round(sum(margins) / len(margins), 3) if margins else None
    if rows and "chosen" in rows[0]:
        stats["mean_chosen_chars"] = round(sum(len(r["chosen"][0]["content"]) for r in rows) / len(rows))
        stats["mean_rejected_chars"] = round(sum(len(r["rejected"][0]["content"]) for r in rows) / len(rows))
    return stats


def content_hash(rows: list[dict]) -> str:
    """Hash of the rows themselves (not of parquet bytes, which vary with library versions)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()
