"""Chat generation: token streaming for the chat tab, and paired candidates for the labeling tab.

One model is shared by every user of the process. Every request (a chat answer, a pair of candidates, a batch of
evaluation answers) goes to the model's generation scheduler (``core.serving.scheduler``), which decodes the rows of
all concurrent requests together, one shared step at a time: eight labelers asking at once wait about as long as one.

Paired candidates (two answers to one prompt, shown side by side) are two rows of the same prompt. With LoRA adapters
loaded, each row can use its own adapter (PEFT's mixed-adapter batches), which is how two policy versions trained on
one base are compared in one pair.

Streaming: the scheduler hands every step's tokens to a :class:`PairStreamer`, which decodes each row incrementally (a
small window of tokens per step, never the whole answer) and queues text snapshots for the caller. Errors in the
scheduler are re-raised in the caller's thread; a caller that stops iterating (closed browser tab) cancels its request
at the next step.

Threads and speed (measured, 2-core CPU): every thread that runs torch ops keeps an idle OpenMP thread pool while it
lives, and once two pools exist libgomp stops spin-waiting, so every op in the generating thread gets ~1.6x slower (64
tokens: 2.3 s -> 3.8 s). Hence the scheduler's worker thread exits when it has no work (it leaves no pool behind), and
the rule for the rest of the process: no torch work in threads that stay alive (load models in a thread that exits, as
``Studio.warm_up`` does; not in the main thread).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from transformers.generation.streamers import BaseStreamer

from core.errors import ValidationError
from core.serving.adapters import BASE_ADAPTER, resolve_adapter_rows
from core.serving.scheduler import DEFAULT_TOP_K, Decoding, Request, scheduler_for

__all__ = [
    "BASE_ADAPTER",
    "SamplingParams",
    "PairStreamer",
    "stream_chat",
    "stream_pair",
    "generate_pair",
    "generate_once",
    "generate_batch",
    "prepare_chat",
    "in_short_thread",
]

# generate() arguments that stream_chat / stream_pair set themselves: overriding them would break streaming
_RESERVED_GENERATE_ARGS = frozenset(
    {
        "input_ids",
        "attention_mask",
        "streamer",
        "adapter_names",
        "stopping_criteria",
        "num_return_sequences",
        "num_beams",
    }
)
# extra generation options the scheduler honours per request
SUPPORTED_OVERRIDES = frozenset({"min_new_tokens"})


@dataclass
class SamplingParams:
    """How candidates are sampled; the chat tab's accordion is generated from these fields."""

    temperature: float = field(
        default=0.7, metadata={"help": "Randomness: 0 = always the most likely token (greedy).", "min": 0.0, "max": 2.0}
    )
    top_p: float = field(
        default=0.9,
        metadata={
            "help": "Sample only from the smallest set of tokens whose probability adds up to this.",
            "min": 0.05,
            "max": 1.0,
        },
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens.", "min": 1, "max": 2048})

    def validate(self) -> SamplingParams:
        for name, meta in self.__dataclass_fields__.items():
            value = getattr(self, name)
            lo, hi = meta.metadata["min"], meta.metadata["max"]
            if not lo <= value <= hi:
                raise ValidationError(f"{name}={value} is out of range", hint=f"choose {name} between {lo} and {hi}")
        return self

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedPrompt:
    input_ids: torch.Tensor
    truncated_tokens: int  # how many prompt tokens were dropped to fit the context window


def prepare_chat(tokenizer: Any, model: Any, messages: list[dict[str, str]], max_new_tokens: int) -> PreparedPrompt:
    """Apply the chat template and keep the most recent tokens that fit the model's context."""
    if not messages or messages[-1]["role"] != "user":
        raise ValidationError("The conversation must end with a user message", hint="type a message first")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    budget = max(16, context - max_new_tokens)
    dropped = max(0, ids.shape[1] - budget)
    if dropped:
        ids = ids[:, -budget:]
    return PreparedPrompt(ids, dropped)


def in_short_thread(fn: Callable[[], Any], name: str = "studio-torch") -> Any:
    """Run torch work in a thread that exits afterwards (no idle OpenMP pool left behind, see above); return its
    result and re-raise its error in the caller's thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --- incremental decoding ---------------------------------------------------------------------------------


class _RowDecoder:
    """Text of one generated sequence, decoded incrementally.

    Each step decodes only a short window (the tokens since the last emitted piece plus the piece before it, for
    context), the scheme used by TGI and vLLM: a piece is emitted once it decodes to complete characters, so a
    multi-byte character split over several byte-level tokens never shows up as U+FFFD. Decoding the whole answer
    every step, as ``TextIteratorStreamer`` does within a line, costs O(n^2) over long answers.
    """

    __slots__ = ("decode", "stop_ids", "ids", "text", "prefix", "read", "done", "eos", "count")

    def __init__(self, decode: Any, stop_ids: frozenset[int]) -> None:
        self.decode, self.stop_ids = decode, stop_ids
        self.ids: list[int] = []
        self.text = ""
        self.prefix = self.read = 0  # ids[prefix:read] = the last emitted piece, ids[read:] = pending
        self.done = self.eos = False
        self.count = 0  # generated tokens, the eos included, the padding after it not

    def push(self, token_ids: Sequence[int]) -> bool:
        """Take one step's token(s); True when the visible state (text or done) changed."""
        if self.done:
            return False
        changed = False
        for token in token_ids:
            self.count += 1
            if token in self.stop_ids:
                self.done = self.eos = True
                return True
            self.ids.append(token)
            changed |= self._advance()
        return changed

    def _advance(self) -> bool:
        before = self.decode(self.ids[self.prefix : self.read]) if self.read > self.prefix else ""
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
            return True
        return False

    def finish(self) -> None:
        """Final text from one full decode: exactly what ``tokenizer.decode`` gives for the answer."""
        self.text = self.decode(self.ids)
        self.done = True


class StreamSnapshot(NamedTuple):
    """State of every row after one generation step."""

    texts: tuple[str, ...]
    done: tuple[bool, ...]
    eos: tuple[bool, ...]  # the row ended by itself (eos), not by the length limit
    new_tokens: tuple[int, ...]
    ahead: int | None = None  # while waiting for a place in the running batch: requests ahead of it


class _End(NamedTuple):
    error: BaseException | None


class PairStreamer(BaseStreamer):
    """Streamer for batched ``generate``: one incrementally decoded text per row, snapshots in a queue.

    Iterating yields ``(text_a, text_b)`` tuples (one text per row; ``rows=1`` gives 1-tuples) until
    generation ends; an error passed to :meth:`fail` is raised by the iterator. If the consumer falls
    behind, it gets the latest snapshot only (intermediate ones are skipped, the final one never is).
    A row stops accumulating once it emits a stop token (eos or pad); the prompt (first ``put``) is skipped.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop_token_ids: Iterable[int],
        rows: int = 2,
        timeout: float | None = None,
        skip_prompt: bool = True,
    ) -> None:
        decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
        stops = frozenset(int(t) for t in stop_token_ids)
        self.rows = [_RowDecoder(decode, stops) for _ in range(rows)]
        self.timeout = timeout
        self.ahead: int | None = None
        self._queue: queue.SimpleQueue[StreamSnapshot | _End] = queue.SimpleQueue()
        self._prompt_pending = skip_prompt
        self._ended = False
        self._ended_event = threading.Event()

    # producer side (the generation thread)

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_pending:
            self._prompt_pending = False
            return
        self.ahead = None
        tokens = value.tolist()
        if value.dim() == 0 or len(tokens) != len(self.rows):
            raise ValueError(f"PairStreamer expects {len(self.rows)} rows, got tokens of shape {tuple(value.shape)}")
        changed = False
        for row, step in zip(self.rows, tokens):
            changed |= row.push(step if isinstance(step, list) else (step,))
        if changed:
            self._queue.put(self.snapshot())

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for row in self.rows:
            row.finish()
        self._queue.put(self.snapshot())
        self._queue.put(_End(None))
        self._ended_event.set()

    def fail(self, error: BaseException) -> None:
        """End the stream with an error, re-raised in the consumer's thread."""
        if not self._ended:
            self._ended = True
            self._queue.put(_End(error))
            self._ended_event.set()

    def waiting(self, ahead: int) -> None:
        """The request waits for a place in the running batch, behind ``ahead`` others."""
        self.ahead = ahead
        self._queue.put(self.snapshot())

    def snapshot(self) -> StreamSnapshot:
        rows = self.rows
        return StreamSnapshot(
            tuple(r.text for r in rows),
            tuple(r.done for r in rows),
            tuple(r.eos for r in rows),
            tuple(r.count for r in rows),
            self.ahead,
        )

    # consumer side

    def snapshots(self, interval: float | Callable[[], float] = 0.0) -> Iterator[StreamSnapshot]:
        """Full snapshots (texts, done flags, token counts), latest first when the consumer lags.

        ``interval``: at most one snapshot per that many seconds (a callable is asked after every snapshot; the
        final snapshot is never held back). The consumer sleeps in between instead of waking at every decoding
        step: with many streams at once, those wake-ups compete with the scheduler for the interpreter (see
        bench/concurrency.py).
        """
        while True:
            item = self._queue.get(timeout=self.timeout)
            while not isinstance(item, _End):  # skip to the newest snapshot already queued
                try:
                    newer = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(newer, _End):  # deliver the last snapshot before ending
                    yield item
                    item = newer
                    break
                item = newer
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
            pause = interval() if callable(interval) else interval
            if pause:
                self._ended_event.wait(pause)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return (snap.texts for snap in self.snapshots())


# --- requests to the scheduler ---------------------------------------------------------------------------


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
    return ids


def _check_overrides(overrides: dict[str, Any]) -> None:
    clash = sorted(set(overrides) & _RESERVED_GENERATE_ARGS)
    if clash:
        raise ValidationError(
            f"generate arguments {', '.join(clash)} are set by the studio itself",
            hint="pass only extra generation options, e.g. min_new_tokens",
        )
    unknown = sorted(set(overrides) - SUPPORTED_OVERRIDES)
    if unknown:
        raise ValidationError(
            f"generation option(s) {', '.join(unknown)} are not supported",
            hint=f"supported: {', '.join(sorted(SUPPORTED_OVERRIDES))}",
        )


def _submit(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    sampling: SamplingParams,
    adapter_rows: list[str] | None,
    seed: int | None,
    overrides: dict[str, Any],
    background: bool = False,
) -> tuple[PairStreamer, Request]:
    """Queue rows on the model's scheduler; the streamer that receives them and the request (to cancel it)."""
    stops = _stop_token_ids(model, tokenizer)
    top_k = getattr(getattr(model, "generation_config", None), "top_k", None)
    decoding = Decoding(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.temperature > 0,
        temperature=sampling.temperature or 1.0,
        top_p=sampling.top_p,
        top_k=DEFAULT_TOP_K if top_k is None else top_k,
        min_new_tokens=int(overrides.get("min_new_tokens") or 0),
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops, default=0)
    streamer = PairStreamer(tokenizer, stops, rows=len(prompts), skip_prompt=False)
    request = Request(
        prompts=prompts,
        decoding=decoding,
        stop_ids=frozenset(stops),
        pad_id=pad,
        sink=streamer,
        adapters=adapter_rows,
        seed=seed,
        background=background,
    )
    scheduler_for(model).submit(request)
    return streamer, request


# --- public API -------------------------------------------------------------------------------------------


def stream_chat(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    sampling: SamplingParams | None = None,
    *,
    interval: float | Callable[[], float] = 0.0,
    **generate_overrides: Any,
) -> Iterator[str]:
    """Yield the growing answer text as tokens arrive (at most one text per ``interval`` seconds).

    ``generate_overrides``: extra generation options (``min_new_tokens``, for benchmarks).
    """
    sampling = (sampling or SamplingParams()).validate()
    _check_overrides(generate_overrides)
    prompt = prepare_chat(tokenizer, model, messages, sampling.max_new_tokens)
    streamer, request = _submit(
        model, tokenizer, [prompt.input_ids[0].tolist()], sampling, None, None, generate_overrides
    )
    try:
        for snap in streamer.snapshots(interval):
            if snap.ahead is None:
                yield snap.texts[0]
    finally:
        request.cancel.set()  # leaves the batch at the next step if the caller stopped early


@dataclass(frozen=True)
class PairUpdate:
    """One step of a paired turn. ``finished`` marks the last update, which also carries latency_ms.
    ``ahead`` is not None: still waiting for a place in the running batch, behind that many requests."""

    text_a: str
    text_b: str
    done_a: bool
    done_b: bool
    new_tokens_a: int
    new_tokens_b: int
    truncated_tokens: int  # prompt tokens dropped to fit the context window
    finished: bool = False
    latency_ms: float | None = None
    eos_a: bool = False  # the answer ended by itself (not cut at max_new_tokens)
    eos_b: bool = False
    ahead: int | None = None

    @property
    def cut(self) -> tuple[bool, bool]:
        """Whether each answer of the finished pair stopped at the length limit instead of ending by itself: stored
        with the answer, so that training never teaches a cut answer as a finished one."""
        return (self.finished and not self.eos_a, self.finished and not self.eos_b)

    def cut_note(self, max_new_tokens: int) -> str:
        """A sentence for the person comparing the answers when one was cut (empty when neither was)."""
        sides = [side for side, cut in zip("AB", self.cut, strict=True) if cut]
        if not sides:
            return ""
        which = "Both answers were" if len(sides) == 2 else f"Answer {sides[0]} was"
        return (
            f" {which} cut at the length limit ({max_new_tokens} tokens): judge what you can read; "
            "a longer limit is under Sampling."
        )


@dataclass(frozen=True)
class PairResult:
    text_a: str
    text_b: str
    latency_ms: float
    new_tokens_a: int
    new_tokens_b: int
    truncated_tokens: int
    eos_a: bool
    eos_b: bool


def stream_pair(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    sampling: SamplingParams | None = None,
    adapter_names: tuple[str | None, str | None] | None = None,
    seed: int | None = None,
    *,
    interval: float | Callable[[], float] = 0.0,
    **generate_overrides: Any,
) -> Iterator[PairUpdate]:
    """Two candidate answers to one conversation, decoded as two rows of the shared batch, streamed together.

    ``adapter_names=(a, b)`` (PEFT models): row A uses adapter ``a``, row B adapter ``b``, ``None`` = the
    base model without adapters. Without it both rows are samples of the model as it is. ``seed`` makes
    sampling reproducible (the same as ``torch.manual_seed(seed)`` before a batched ``generate``), however busy
    the model is. Greedy decoding (temperature 0) gives two identical answers. While the request waits for room
    in the batch, updates carry ``ahead`` (requests before it) and no text. ``interval``: at most one update per
    that many seconds (screens do not need more; the final update is never held back).
    """
    started = time.perf_counter()
    sampling = (sampling or SamplingParams()).validate()
    _check_overrides(generate_overrides)
    adapter_rows = resolve_adapter_rows(model, adapter_names)
    prompt = prepare_chat(tokenizer, model, messages, sampling.max_new_tokens)
    ids = prompt.input_ids[0].tolist()
    streamer, request = _submit(model, tokenizer, [ids, ids], sampling, adapter_rows, seed, generate_overrides)
    try:
        last: StreamSnapshot | None = None
        for last in streamer.snapshots(interval):
            yield _update(last, prompt.truncated_tokens)
        assert last is not None  # end() always queues a final snapshot before the end marker
        yield _update(last, prompt.truncated_tokens, latency_ms=(time.perf_counter() - started) * 1000)
    finally:
        request.cancel.set()


def _update(snap: StreamSnapshot, truncated: int, latency_ms: float | None = None) -> PairUpdate:
    return PairUpdate(
        text_a=snap.texts[0],
        text_b=snap.texts[1],
        done_a=snap.done[0],
        done_b=snap.done[1],
        new_tokens_a=snap.new_tokens[0],
        new_tokens_b=snap.new_tokens[1],
        truncated_tokens=truncated,
        finished=latency_ms is not None,
        latency_ms=latency_ms,
        eos_a=snap.eos[0],
        eos_b=snap.eos[1],
        ahead=snap.ahead,
    )


def generate_pair(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    sampling: SamplingParams | None = None,
    adapter_names: tuple[str | None, str | None] | None = None,
    seed: int | None = None,
    **generate_overrides: Any,
) -> PairResult:
    """Both candidates, complete (consumes :func:`stream_pair`)."""
    final: PairUpdate | None = None
    for final in stream_pair(model, tokenizer, messages, sampling, adapter_names, seed, **generate_overrides):
        pass
    assert final is not None and final.finished and final.latency_ms is not None
    return PairResult(
        text_a=final.text_a,
        text_b=final.text_b,
        latency_ms=final.latency_ms,
        new_tokens_a=final.new_tokens_a,
        new_tokens_b=final.new_tokens_b,
        truncated_tokens=final.truncated_tokens,
        eos_a=final.eos_a,
        eos_b=final.eos_b,
    )


def generate_once(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], sampling: SamplingParams | None = None
) -> tuple[str, float]:
    """Complete answer and its latency in milliseconds (used by the API and tests)."""
    start = time.perf_counter()
    text = ""
    for text in stream_chat(model, tokenizer, messages, sampling):
        pass
    return text, (time.perf_counter() - start) * 1000


class Generated(NamedTuple):
    """One row of :func:`generate_batch`."""

    text: str
    new_tokens: int
    cut: bool  # stopped at max_new_tokens instead of ending by itself


def generate_batch(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    sampling: SamplingParams | None = None,
    adapter_names: Sequence[str | None] | None = None,
    seed: int | None = None,
    on_step: Callable[[StreamSnapshot], object] | None = None,
) -> list[Generated]:
    """Complete answers to many conversations as ONE request of many rows: (text, new tokens, cut) per row.

    ``on_step`` sees every snapshot: a caller's progress bar moves during the one long call, and an exception it
    raises (a stopping studio, a cancel) ends the request at the next decoding step instead of after it.

    For evaluations that read whole answers (reports): on a CPU a decoding step of 24 rows costs little more
    than one of 2, so 12 prompts x 2 versions take about the time of one pair; they wait while a job trains on the
    CPU (``scheduler.set_background_hold``). ``adapter_names[i]`` is row i's adapter (None = the base), as in
    :func:`stream_pair`. One ``seed`` for the whole batch: the same batch gives the same answers.
    """
    sampling = (sampling or SamplingParams()).validate()
    if not conversations:
        return []
    adapter_rows = resolve_adapter_rows(model, adapter_names, rows=len(conversations))
    prompts = [prepare_chat(tokenizer, model, m, sampling.max_new_tokens).input_ids[0].tolist() for m in conversations]
    streamer, request = _submit(model, tokenizer, prompts, sampling, adapter_rows, seed, {}, background=True)
    try:
        last: StreamSnapshot | None = None
        for last in streamer.snapshots():
            if on_step is not None:
                on_step(last)
    finally:
        request.cancel.set()
    assert last is not None
    return [Generated(text, n, not eos) for text, n, eos in zip(last.texts, last.new_tokens, last.eos)]
