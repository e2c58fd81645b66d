"""Answers cut at the length limit, trained as the start of an answer rather than a finished one.

A sampled answer that hit ``max_new_tokens`` stops mid-thought. Rendered through the chat template it gains the
end-of-turn tokens a finished answer has (``<|im_end|>`` and a newline for SmolLM2), so DPO on a pair whose chosen
answer was cut raises the probability of stopping there: the policy learns to stop mid-sentence. The labels still
say something true about the visible text, so the pair is kept and only those end-of-turn tokens are dropped from
the cut side's completion (preference rows mark it with ``chosen_cut`` / ``rejected_cut``; core.data.trainsets).

The end-of-turn is read from the tokenizer's own chat template, so any model's template works. When a cut
completion does not end with exactly those tokens (a template that renders the end differently), it is left as
it is and counted: the job log says how many were trimmed and how many could not be.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.serving.scoring import end_of_turn_text
from core.training.common import log


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The tokens the chat template writes after an assistant message's text ([] when it writes none)."""
    tail = end_of_turn_text(tokenizer)
    return list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []


def trim_cut_endings(dataset: Any, tokenizer: Any, sides: tuple[str, ...]) -> tuple[Any, Counter[str]]:
    """``dataset`` (tokenized by TRL: ``<side>_ids`` columns) with the end-of-turn removed from every side whose
    ``<side>_cut`` flag is set, the flags dropped, and how many sides were ``trimmed`` / left ``untrimmed``."""
    flagged = [side for side in sides if f"{side}_cut" in dataset.column_names]
    counts: Counter[str] = Counter()
    if not flagged:
        return dataset, counts
    suffix = end_of_turn_ids(tokenizer)

    def trimmed(ids: list[int]) -> list[int] | None:
        return ids[: -len(suffix)] if suffix and len(ids) > len(suffix) and ids[-len(suffix) :] == suffix else None

    for row in dataset.select_columns([name for side in flagged for name in (f"{side}_cut", f"{side}_ids")]):
        for side in flagged:
            if row[f"{side}_cut"]:
                counts["trimmed" if trimmed(row[f"{side}_ids"]) is not None else "untrimmed"] += 1

    def trim(row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for side in flagged:
            ids = trimmed(row[f"{side}_ids"]) if row[f"{side}_cut"] else None
            if ids is not None:
                out[f"{side}_ids"] = ids
        return out

    trimmed_dataset = dataset.map(trim, desc="Trimming the end of answers cut at the length limit")
    return trimmed_dataset.remove_columns([f"{side}_cut" for side in flagged]), counts


def cut_aware_dpo_trainer() -> type:
    """TRL's ``DPOTrainer`` whose dataset preparation also trims the end of cut answers. The trim happens right
    after TRL tokenizes and before it caches the reference log-probs, so the cached figures match what is trained."""
    from trl import DPOTrainer

    class CutAwareDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            dataset, counts = trim_cut_endings(dataset, tokenizer, ("chosen", "rejected"))
            if counts:
                log(
                    f"{dataset_name}: {counts['trimmed']} answer(s) cut at the length limit count as the start "
                    f"of an answer (end-of-turn left out)"
                    + (
                        f"; {counts['untrimmed']} did not end as the chat template ends a turn and were kept whole"
                        if counts["untrimmed"]
                        else ""
                    )
                )
            return dataset

    return CutAwareDPOTrainer
