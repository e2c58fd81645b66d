"""The evaluation split: which prompts are held out of training, fixed forever by a hash of the prompt.

Training jobs (core.data.job_data) leave these prompts out and evaluate on them while training; the
"what changed" report and the evaluations (core.compare) measure new versions on them. One definition here, so
both sides always agree on which pairs a version never saw.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def prompt_key(prompt: list[dict[str, str]]) -> str:
    """Canonical JSON of a prompt conversation (roles and contents only)."""
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt], ensure_ascii=False)


def prompt_bucket(prompt: list[dict[str, str]]) -> int:
    """0..99, fixed for a prompt forever: the evaluation split is ``bucket < held-out percent``. All pairs of
    one prompt fall on the same side, and a pair never changes side as labels grow."""
    return int(hashlib.sha256(prompt_key(prompt).encode("utf-8")).hexdigest()[:8], 16) % 100


HELD_OUT_PERCENT = 20   # the evaluation split: prompts whose bucket is below this are held out of training jobs


def split_held_out(rows: list[dict[str, Any]], percent: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows whose prompt is outside the evaluation split, rows inside it)."""
    if not percent:
        return rows, []
    kept: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for row in rows:
        bucket = prompt_bucket(row["prompt"] if "prompt" in row else row["messages"][:-1])
        (kept if bucket >= percent else held).append(row)
    return kept, held


def drop_held_out(rows: list[dict[str, Any]], percent: int) -> tuple[list[dict[str, Any]], int]:
    """Rows whose prompt is outside the evaluation split, and how many were left out."""
    kept, held = split_held_out(rows, percent)
    return kept, len(held)
