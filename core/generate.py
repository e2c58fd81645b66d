"""Chat generation: token streaming for the chat tab.

One model is shared by every user of the process, so generation is serialised with a lock: two
concurrent ``generate`` calls on two CPU cores only slow each other down, and queueing keeps the
latency a labeler sees predictable.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from transformers import TextIteratorStreamer

from core.errors import ValidationError

_GENERATE_LOCK = threading.Lock()


@dataclass
class SamplingParams:
    """How candidates are sampled; the chat tab's accordion is generated from these fields."""

    temperature: float = field(default=0.7, metadata={
        "help": "Randomness: 0 = always the most likely token (greedy).", "min": 0.0, "max": 2.0})
    top_p: float = field(default=0.9, metadata={
        "help": "Sample only from the smallest set of tokens whose probability adds up to this.",
        "min": 0.05, "max": 1.0})
    max_new_tokens: int = field(default=256, metadata={
        "help": "Longest answer, in tokens.", "min": 1, "max": 2048})

    def validate(self) -> "SamplingParams":
        for name, meta in self.__dataclass_fields__.items():
            value = getattr(self, name)
            lo, hi = meta.metadata["min"], meta.metadata["max"]
            if not lo <= value <= hi:
                raise ValidationError(f"{name}={value} is out of range",
                                      hint=f"choose {name} between {lo} and {hi}")
        return self

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedPrompt:
    input_ids: torch.Tensor
    truncated_tokens: int      # how many prompt tokens were dropped to fit the context window


def prepare_chat(tokenizer: Any, model: Any, messages: list[dict[str, str]],
                 max_new_tokens: int) -> PreparedPrompt:
    """Apply the chat template and keep the most recent tokens that fit the model's context."""
    if not messages or messages[-1]["role"] != "user":
        raise ValidationError("The conversation must end with a user message", hint="type a message first")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    budget = max(16, context - max_new_tokens)
    dropped = max(0, ids.shape[1] - budget)
    if dropped:
        ids = ids[:, -budget:]
    return PreparedPrompt(ids, dropped)


def stream_chat(model: Any, tokenizer: Any, messages: list[dict[str, str]],
                sampling: SamplingParams | None = None) -> Iterator[str]:
    """Yield the growing answer text as tokens arrive."""
    sampling = (sampling or SamplingParams()).validate()
    prompt = prepare_chat(tokenizer, model, messages, sampling.max_new_tokens)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    input_ids = prompt.input_ids.to(model.device)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with _GENERATE_LOCK, torch.inference_mode():
                model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                               streamer=streamer, pad_token_id=tokenizer.pad_token_id,
                               **sampling.generate_kwargs())
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    worker.join()
    if errors:
        raise errors[0]


def generate_once(model: Any, tokenizer: Any, messages: list[dict[str, str]],
                  sampling: SamplingParams | None = None) -> tuple[str, float]:
    """Complete answer and its latency in milliseconds (used by the API and tests)."""
    start = time.perf_counter()
    text = ""
    for text in stream_chat(model, tokenizer, messages, sampling):
        pass
    return text, (time.perf_counter() - start) * 1000
