"""Scoring primitives on the shared model: log-probabilities of given answers, and two answers to one prompt.

Everything that measures versions builds on these: side by side, automatic evaluation, active learning and the
"what changed" reports (core.compare), safety evaluation, and the policy judge (core.judging.judges) that reads
its own probability of replying "A" or "B". They sit in the serving layer, next to generation, so judging does
not depend on comparing.

* :func:`sequence_logprobs` -- ``sum log pi(answer tokens | prompt)`` per row, each row under its own LoRA adapter
  (or the base), in batches of ``LOGPROB_BATCH`` forward passes. Answers are re-tokenised from their text as the
  chat template renders them (:func:`encode_answer`), cut to ``MAX_LOGPROB_TOKENS`` (the prompt from the left).
* :func:`adapter_names` / :func:`row_adapter` -- load two versions' adapters on the shared model and name the
  adapter of each row.
* :func:`generate_pair_answers` -- both rows' answers from one batched ``generate`` call (or the external inference
  engine when one is configured), with the time each row took.

Threads: torch work runs in short-lived threads (see core.serving.generate's note on OpenMP pools), and forward passes
on the shared model take the generation lock, because the per-row adapter hooks they install would otherwise
leak into a chat generating at the same time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import ValidationError
from core.serving.adapters import BASE_ADAPTER, lora_adapter_names, mixed_adapters
from core.serving.generate import SamplingParams, in_short_thread, stream_pair
from core.serving.host import ModelHost
from core.serving.scheduler import MODEL_LOCK

MAX_LOGPROB_TOKENS = 1024  # prompt + answer tokens scored per row (the prompt is cut from the left)
LOGPROB_BATCH = 4

Messages = list[dict[str, str]]


@dataclass
class PairAnswers:
    """Two answers to one prompt from one batched call, with their token counts and per-row latencies."""

    text_a: str
    text_b: str
    tokens_a: int
    tokens_b: int
    latency_a_ms: float  # from the start of the batched call until row A finished
    latency_b_ms: float
    cut_a: bool = False  # row A stopped at the length limit
    cut_b: bool = False


def generate_pair_answers(
    studio: ModelHost,
    rows: tuple[str | None, str | None] | None,
    prompt: Messages,
    sampling: SamplingParams,
    seed: int,
    policies: tuple[str, str] | None = None,
) -> PairAnswers:
    """Both rows' answers from one batched call; per-row latency = when that row stopped growing.

    ``policies``: the two versions by name, for comparisons that an external inference engine serves when one
    is configured (without it, or without ``policies``, the in-process model answers with ``rows``)."""
    if policies is not None and studio.engine is not None:
        updates, _ = studio.pair_stream(prompt, sampling, *policies, seed=seed)
    else:
        model, tokenizer = studio.model()
        studio.share_cpu()
        updates = stream_pair(model, tokenizer, prompt, sampling, adapter_names=rows, seed=seed)
    started = time.perf_counter()
    done_at: list[float | None] = [None, None]
    final = None
    for final in updates:
        now = (time.perf_counter() - started) * 1000
        for i, done in enumerate((final.done_a, final.done_b)):
            if done and done_at[i] is None:
                done_at[i] = now
    assert final is not None and final.latency_ms is not None
    return PairAnswers(
        final.text_a,
        final.text_b,
        final.new_tokens_a,
        final.new_tokens_b,
        done_at[0] or final.latency_ms,
        done_at[1] or final.latency_ms,
        *final.cut,
    )


END_MARK = "MARK7319"  # plain text any template keeps as it is: what follows it is the end of an assistant turn


def end_of_turn_text(tokenizer: Any) -> str:
    """What the chat template writes after an assistant message's text ("<|im_end|>\\n" for SmolLM2; "" if nothing):
    the part a cut answer never produced."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": END_MARK}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text[text.rindex(END_MARK) + len(END_MARK) :] if END_MARK in text else ""


def encode_answer(
    tokenizer: Any, prompt: Messages, answer: str, cut: bool = False, end: str = ""
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as the chat template renders them; the answer includes its end-of-turn, unless it
    was ``cut`` at the length limit: a cut answer never wrote one (core.training.cut trains it the same way).
    ``end``: :func:`end_of_turn_text` of ``tokenizer`` when the caller has it already (read here otherwise)."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": answer}], tokenize=False)
    end = (end or end_of_turn_text(tokenizer)) if cut else ""
    if full_text.startswith(prompt_text):
        answer_text = full_text[len(prompt_text) :]
        answer_text = answer_text[: -len(end)] if end and answer_text.endswith(end) else answer_text
    else:  # a template that rewrites earlier turns: fall back to the answer plus eos
        answer_text = answer + ("" if cut else tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"][: MAX_LOGPROB_TOKENS // 2]
    keep = MAX_LOGPROB_TOKENS - len(answer_ids)
    return prompt_ids[-keep:], answer_ids


def sequence_logprobs(
    studio: ModelHost,
    adapters: Sequence[str | None],
    prompts: Sequence[Messages],
    answers: Sequence[str],
    cut: Sequence[bool] | None = None,
) -> list[tuple[float, int]]:
    """(sum of log pi(answer tokens | prompt), answer token count) per row, row i under adapter ``adapters[i]``
    (a loaded adapter name, or None for the base) on the shared model. ``cut[i]``: answer i stopped at the length
    limit, so its end-of-turn (a token it never produced) is not scored, as training leaves it out too."""
    import torch

    model, tokenizer = studio.model()
    flags = list(cut) if cut is not None else [False] * len(answers)
    end = end_of_turn_text(tokenizer) if any(flags) else ""  # the template is read once, not per cut answer
    encoded = [encode_answer(tokenizer, p, a, c, end) for p, a, c in zip(prompts, answers, flags)]
    # Once any adapter is loaded on the shared model, every row names its adapter (BASE_ADAPTER = none):
    # a plain forward would apply whichever adapter happens to be active.
    loaded = lora_adapter_names(model)
    unknown = sorted({a for a in adapters if a} - loaded)
    if unknown:
        raise ValidationError(
            f"adapter(s) {', '.join(unknown)} are not loaded on the model",
            hint="load them with Studio.adapter_rows first",
        )
    has_adapters = bool(loaded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run() -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        with MODEL_LOCK, torch.inference_mode():
            for start in range(0, len(encoded), LOGPROB_BATCH):
                batch = encoded[start : start + LOGPROB_BATCH]
                rows = [n or BASE_ADAPTER for n in adapters[start : start + LOGPROB_BATCH]] if has_adapters else None
                width = max(len(p) + len(a) for p, a in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, (p, a) in enumerate(batch):
                    ids[i, : len(p) + len(a)] = torch.tensor(p + a)
                    mask[i, : len(p) + len(a)] = 1
                with mixed_adapters(model, rows) as extra:
                    logits = model(
                        input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **extra
                    ).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
                for i, (p, a) in enumerate(batch):
                    out.append((float(logp[i, len(p) - 1 : len(p) + len(a) - 1].sum()), len(a)))
        return out

    return in_short_thread(run)


def adapter_names(studio: ModelHost, a: str, b: str) -> tuple[str | None, str | None] | None:
    """Load both versions' adapters on the shared model; the per-row adapter names for ``stream_pair`` (None =
    the base row), or None when no adapter is loaded at all (the plain model is the base)."""
    rows, _ = studio.adapter_rows(a, b)
    return rows


def row_adapter(rows: tuple[str | None, str | None] | None, i: int) -> str | None:
    """Row ``i``'s adapter name from :func:`adapter_names` (None = the plain model)."""
    return rows[i] if rows else None
