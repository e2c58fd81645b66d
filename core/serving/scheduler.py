"""Batched serving: one generation scheduler per shared model, so concurrent requests share decoding steps.

Why: on a CPU one decoding step costs about the same for 2 rows as for 16 (the weights are read once per step
for every row), so eight labelers asking for a pair at once should wait about as long as one. A lock around
``model.generate`` made each of them wait for the other seven.

How (the "filter and concatenate" design of TGI's first server): one worker thread owns two running batches
(people's and evaluations', see Fairness), each with its KV cache. Each iteration it picks one and

1. admits waiting requests in arrival order while their rows fit (``MAX_BATCH_ROWS``): their prompts are
   prefilled together (left-padded) and their caches concatenated onto the running batch's (left-padded to
   the same length, the attention mask hides the padding);
2. runs ONE decoding step for every row of the batch, each row with its own LoRA adapter (PEFT's per-row
   hooks), and samples each request's rows with that request's own settings and random generator;
3. streams every request its new tokens and retires finished or cancelled requests (their cache rows are
   dropped, and cache columns that only padding uses any more are trimmed).

Why not transformers' continuous batching (``generate_batch``, paged attention): it flattens every request
into one ragged row, which PEFT's per-row adapters cannot address, and it samples with one generation config
for all requests; comparing two policy versions in one pair needs both. Measured with the default model on
2 cores, see ``bench/concurrency.py``.

Guarantees:
- Same result as ``model.generate``: a request's rows use the processors ``generate`` would (min new tokens,
  temperature, top-k, top-p) and one ``torch.Generator`` seeded like ``torch.manual_seed(seed)``, sampled
  with one ``multinomial`` call over the request's rows per step as ``generate`` does; so a seeded request
  gives the same answer alone or in a busy batch (the other rows do not touch its random stream).
- Fairness: people before evaluations. Chat, labeling and arena requests decode in one batch, evaluations
  (``background``: a report's 96 rows, a safety run's 102) in another, and while people's rows decode the
  evaluation's rows pause, stepping once every ``EVALUATION_TURN_S`` so they still finish. Decoded together, a
  labeler's tokens came at the pace of a 98-row step (4.7x a 2-row step with the default model on 2 cores); now at
  the pace of their own rows plus one evaluation step a second. Within each kind admission is first come, first
  served and nobody overtakes the head of its line (``MAX_BATCH_ROWS`` rows per batch), so no chat starves. Every
  request ends after ``max_new_tokens`` steps at most.
- Back-pressure: at most ``MAX_WAITING`` requests wait; one more gets :class:`core.errors.Busy` (HTTP 503).
  Waiting requests are told how many are ahead of them.
- Cancellation: a request whose consumer went away (closed tab) leaves the batch at the next step.
- An error in a forward pass fails the requests of that batch only; the worker goes on with the others.
- The worker thread exits when there is no work (no idle OpenMP pool stays behind, see ``core.serving.generate``),
  and applies the thread count the studio chose to share the CPU with a training job.
- Background rows wait for training: while the hold the studio set says a job is training on this CPU
  (``set_background_hold``), the evaluations' batch does not step (its rows keep their cache, cancelled ones
  leave); people's requests still run at once, without the evaluation's rows.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from core.errors import Busy
from core.serving.adapters import mixed_adapters

MAX_BATCH_ROWS = 32  # rows decoded together (a pair is 2 rows); a bigger request runs when the batch is empty
MAX_WAITING = 64  # requests waiting for room; one more is refused with Busy
CACHE_ROOM = 64  # spare cache columns kept ahead of the running batch (steps before the next copy)
DEFAULT_TOP_K = 50  # what ``generate`` uses when the model's generation config sets no top_k

# One forward pass on a shared model at a time: the scheduler holds it for each step, other users of the model
# (log-probability scoring) for theirs. Per-row adapter hooks live on the model during a pass.
MODEL_LOCK = threading.Lock()

_wanted_threads: int | None = None
_background_hold: Callable[[], object] | None = None
HOLD_RECHECK_S = 1.0  # how often held background rows ask again whether they may go on
EVALUATION_TURN_S = 1.0  # while people's rows decode, an evaluation's rows step at most once per this many seconds


def set_generation_threads(threads: int) -> None:
    """Intra-op threads for generation from now on (the studio lends cores to a training job this way)."""
    global _wanted_threads
    _wanted_threads = max(1, int(threads))
    torch.set_num_threads(_wanted_threads)


def set_background_hold(hold: Callable[[], object] | None) -> None:
    """While ``hold()`` is truthy, background requests alone do not step (the studio: a job is training on the CPU).
    None: never hold."""
    global _background_hold
    _background_hold = hold


def clear_background_hold(hold: Callable[[], object]) -> None:
    """Remove ``hold`` if it is the one set (a closing studio, leaving another studio's hold alone)."""
    global _background_hold
    if _background_hold == hold:
        _background_hold = None


def _hold_background() -> bool:
    hold = _background_hold
    if hold is None:
        return False
    try:
        return bool(hold())
    except Exception:  # noqa: BLE001 - a hold that cannot answer (a closing studio) must not stop generation
        return False


class Sink(Protocol):
    """Where a request's tokens go (``core.serving.generate.PairStreamer``)."""

    def put(self, value: torch.Tensor) -> None: ...
    def end(self) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def waiting(self, ahead: int) -> None: ...


@dataclass(frozen=True)
class Decoding:
    """How one request's next tokens are chosen (the ``generate`` arguments the studio uses)."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = DEFAULT_TOP_K
    min_new_tokens: int = 0

    def warpers(self) -> LogitsProcessorList:
        """The sampling processors ``generate`` builds for these settings, in its order."""
        chain = LogitsProcessorList()
        if self.do_sample:
            if self.temperature != 1.0:
                chain.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                chain.append(TopKLogitsWarper(top_k=self.top_k, min_tokens_to_keep=1))
            if self.top_p < 1.0:
                chain.append(TopPLogitsWarper(top_p=self.top_p, min_tokens_to_keep=1))
        return chain


@dataclass(eq=False)
class Request:
    """Rows to continue together: prompts (token ids), per-row adapters, decoding settings, a sink."""

    prompts: list[list[int]]
    decoding: Decoding
    stop_ids: frozenset[int]
    pad_id: int
    sink: Sink
    adapters: list[str] | None = None  # per-row adapter names; None = the model as it is
    seed: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    background: bool = False  # an evaluation's rows: they may wait while a job trains (set_background_hold)
    # set by the scheduler
    generated: int = 0
    finished: list[bool] = field(default_factory=list)
    ahead: int = -1
    _generator: torch.Generator | None = None
    _warpers: LogitsProcessorList | None = None

    @property
    def rows(self) -> int:
        return len(self.prompts)

    def batch_key(self) -> str:
        """Requests join one batch only when their forward passes agree on adapter handling."""
        return "as-is" if self.adapters is None else "per-row"


class _RoomyLayer(DynamicLayer):
    """A growing cache layer with spare room along the sequence: a decoding step writes its keys and values in
    place instead of copying the whole cache (``DynamicLayer.update``'s ``torch.cat`` took 18% of a 16-row step
    of the default model). ``keys``/``values`` are views of the filled part, as the attention code expects."""

    keys: torch.Tensor  # set from the start (DynamicLayer's begin as None)
    values: torch.Tensor

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int = CACHE_ROOM) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._store(keys, values, room)

    def _store(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        size = (*keys.shape[:2], keys.shape[2] + room, keys.shape[3])
        self._k, self._v = keys.new_empty(size), values.new_empty(size)
        n = keys.shape[2]
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, add = self.keys.shape[2], key_states.shape[2]
        if n + add > self._k.shape[2]:
            self._store(self.keys, self.values, room=max(add, CACHE_ROOM, n // 2))
        self._k[:, :, n : n + add], self._v[:, :, n : n + add] = key_states, value_states
        self.keys, self.values = self._k[:, :, : n + add], self._v[:, :, : n + add]
        return self.keys, self.values


class _Batch:
    """The running batch: requests (their rows contiguous, in order), KV cache, attention mask, pending tokens."""

    def __init__(self, model: Any, joinable: bool) -> None:
        self.model, self.joinable = model, joinable
        self.requests: list[Request] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.pending = torch.zeros((0,), dtype=torch.long)  # each row's newest token, fed at the next step
        self.last_turn = 0.0  # when it last stepped (time.monotonic), for the evaluations' turn among people's

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.requests)

    def key(self) -> str | None:
        return self.requests[0].batch_key() if self.requests else None

    def _adapter_rows(self, requests: list[Request]) -> list[str] | None:
        if not requests or requests[0].adapters is None:
            return None
        return [name for r in requests for name in r.adapters]  # type: ignore[union-attr]

    def _forward(self, requests: list[Request], **inputs: Any) -> Any:
        device = self.model.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with MODEL_LOCK, torch.inference_mode(), mixed_adapters(self.model, self._adapter_rows(requests)) as extra:
            return self.model(**inputs, use_cache=True, logits_to_keep=1, **extra)

    def join(self, requests: list[Request]) -> None:
        """Prefill the new requests together, sample their first tokens, and append them to the batch."""
        prompts = [p for r in requests for p in r.prompts]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), requests[0].pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):  # left padding: every row's next token comes at the same column
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(requests, input_ids=ids, attention_mask=mask, position_ids=positions)
        for request in requests:
            request.finished = [False] * request.rows
            request._warpers = request.decoding.warpers()
            if request.seed is not None:
                request._generator = torch.Generator().manual_seed(request.seed)
        first = _sample(requests, out.logits[:, -1, :].to("cpu"))
        if not self.requests:
            self.cache, self.mask, self.pending = out.past_key_values, mask, first
        else:
            self.cache = _concat_caches(self.cache, self.mask.shape[1], out.past_key_values, width)
            self.mask = _concat_left_padded(self.mask, mask)
            self.pending = torch.cat([self.pending, first])
        self.requests.extend(requests)
        self._make_room()

    def _make_room(self) -> None:
        """Give every cache layer spare room (one copy now instead of one per step); plain layers only."""
        if self.joinable and all(type(layer) in (DynamicLayer, _RoomyLayer) for layer in self.cache.layers):
            self.cache.layers = [_RoomyLayer(layer.keys, layer.values) for layer in self.cache.layers]

    def step(self) -> None:
        """One decoding step for every row: feed the pending tokens, sample the next ones."""
        positions = self.mask.sum(-1, keepdim=True)  # the next token's position = real tokens so far
        self.mask = torch.cat([self.mask, torch.ones((self.mask.shape[0], 1), dtype=torch.long)], dim=1)
        out = self._forward(
            self.requests,
            input_ids=self.pending[:, None],
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
        )
        self.cache = out.past_key_values
        self.pending = _sample(self.requests, out.logits[:, -1, :].to("cpu"))

    def retire(self) -> None:
        """End finished requests' streams, drop finished and cancelled requests' rows, trim padding columns."""
        keep_rows: list[int] = []
        kept: list[Request] = []
        start = 0
        for request in self.requests:
            if all(request.finished) or request.cancel.is_set():
                request.sink.end()  # the last snapshot, then the end marker (nobody reads it after a cancel)
            else:
                kept.append(request)
                keep_rows.extend(range(start, start + request.rows))
            start += request.rows
        if len(kept) == len(self.requests):
            return
        self.requests = kept
        if not kept:
            self.cache, self.mask, self.pending = None, torch.zeros((0, 0), dtype=torch.long), self.pending[:0]
            return
        index = torch.tensor(keep_rows, dtype=torch.long)
        self.mask, self.pending = self.mask[index], self.pending[index]
        if not self.joinable:  # windowed caches keep their own bookkeeping: select rows only
            self.cache.batch_select_indices(index.to(self.model.device))
            return
        first_used = int(self.mask.any(0).nonzero()[0])  # columns before it are padding in every row
        self.mask = self.mask[:, first_used:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, first_used:]
            layer.values = layer.values[index.to(layer.values.device), :, first_used:]
        self._make_room()

    def fail(self, error: BaseException) -> None:
        for request in self.requests:
            request.sink.fail(error)
        self.requests = []
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.pending = self.pending[:0]


def _sample(requests: list[Request], logits: torch.Tensor) -> torch.Tensor:
    """Next token of every row, request by request as ``generate`` would choose them; streams them too."""
    chosen = []
    start = 0
    for request in requests:
        scores = logits[start : start + request.rows].to(dtype=torch.float32, copy=True)
        start += request.rows
        decoding = request.decoding
        if request.generated < decoding.min_new_tokens:
            scores[:, sorted(request.stop_ids)] = -float("inf")
        if decoding.do_sample:
            # _warpers is set for sampling requests; transformers' warpers accept input_ids=None (they ignore them)
            probs = torch.softmax(request._warpers(None, scores), dim=-1)  # type: ignore[misc, arg-type]
            tokens = torch.multinomial(probs, num_samples=1, generator=request._generator).squeeze(1)
        else:
            tokens = scores.argmax(dim=-1)
        tokens = torch.where(torch.tensor(request.finished), torch.tensor(request.pad_id), tokens)
        request.generated += 1
        for row, token in enumerate(tokens.tolist()):
            if token in request.stop_ids or request.generated >= decoding.max_new_tokens:
                request.finished[row] = True
        request.sink.put(tokens)
        chosen.append(tokens)
    return torch.cat(chosen)


def _concat_left_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = max(a.shape[1], b.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (width - t.shape[1], 0))  # noqa: E731 - zeros on the left
    return torch.cat([pad(a), pad(b)])


def _concat_caches(cache: Any, width_a: int, other: Any, width_b: int) -> Any:
    """Rows of ``other`` appended to ``cache``, both left-padded (with zeros, masked) to the longer one."""
    width = max(width_a, width_b)
    for mine, theirs in zip(cache.layers, other.layers):
        for name in ("keys", "values"):
            a, b = getattr(mine, name), getattr(theirs, name)
            a = torch.nn.functional.pad(a, (0, 0, width - a.shape[2], 0))
            b = torch.nn.functional.pad(b, (0, 0, width - b.shape[2], 0))
            setattr(mine, name, torch.cat([a, b]))
    return cache


def _joinable(model: Any) -> bool:
    """Whether running batches can grow: only plain growing caches can be padded and concatenated. Models
    with sliding-window or recurrent layers run one admitted group at a time (still batched, never merged)."""
    layer_types = getattr(model.config, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in layer_types) and not getattr(model.config, "sliding_window", None)


@dataclass
class SchedulerStats:
    """Counters for operators (``/metrics``) and benchmarks."""

    requests: int = 0
    refused: int = 0
    tokens: int = 0
    steps: int = 0
    busy_s: float = 0.0
    max_rows: int = 0


class Scheduler:
    """The generation scheduler of one model (see the module docstring)."""

    def __init__(self, model: Any, max_rows: int = MAX_BATCH_ROWS, max_waiting: int = MAX_WAITING) -> None:
        self.model = model
        self.max_rows, self.max_waiting = max_rows, max_waiting
        self.joinable = _joinable(model)
        self.stats = SchedulerStats()
        self._cv = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._running_rows = self._running_requests = 0
        self._worker: threading.Thread | None = None

    # -- callers ---------------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue a request; its tokens arrive in its sink. Raises Busy when the waiting line is full."""
        with self._cv:
            self._waiting = deque(r for r in self._waiting if not r.cancel.is_set())
            if len(self._waiting) >= self.max_waiting:
                self.stats.refused += 1
                raise Busy(
                    f"The model is busy: {len(self._waiting)} requests are waiting already",
                    hint="try again in a few seconds",
                )
            self.stats.requests += 1
            self._waiting.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="studio-generate", daemon=True)
                self._worker.start()
            self._cv.notify()

    def load(self) -> dict[str, int]:
        """Requests and rows decoding now, requests waiting (health, metrics, screen update pacing)."""
        with self._cv:
            return {
                "running_requests": self._running_requests,
                "running_rows": self._running_rows,
                "waiting": len(self._waiting),
            }

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing runs or waits; True when idle (tests use it to see cancellation take effect)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._worker is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cv.wait(left):
                    return self._worker is None
            return True

    # -- the worker ------------------------------------------------------------------------------------
    def _admit(self, batch: _Batch, background: bool) -> list[Request]:
        """Pop the requests of one kind (people's, or evaluations' when ``background``) that may join ``batch``:
        in arrival order while their rows fit (``max_rows``; a bigger request runs alone), nobody overtaking the
        head of the line. Everyone left is told how many wait ahead of them."""
        line = sorted(self._waiting, key=lambda r: r.background)  # stable: people first, each kind in arrival order
        admitted: list[Request] = []
        if not batch.requests or self.joinable:
            rows, key = batch.rows, batch.key()
            for request in (r for r in line if r.background == background):
                fits = rows + request.rows <= self.max_rows or rows == 0
                if not fits or (key is not None and request.batch_key() != key):
                    break
                admitted.append(request)
                rows, key = rows + request.rows, request.batch_key()
        taken = {id(r) for r in admitted}
        self._waiting = deque(r for r in line if id(r) not in taken)
        for position, request in enumerate(self._waiting):
            if request.ahead != position:
                request.ahead = position
                request.sink.waiting(position)
        return admitted

    def _turn(self, people: _Batch, evaluations: _Batch) -> tuple[_Batch, bool] | None:
        """Which batch steps next (call with the lock held): people's while any wait or decode, the evaluations'
        otherwise, and once every ``EVALUATION_TURN_S`` while people keep the model busy; never the evaluations'
        while the studio holds them (a job trains on this CPU). None: wait (only held evaluations are left)."""
        for request in [r for r in self._waiting if r.cancel.is_set()]:
            self._waiting.remove(request)
            request.sink.end()
        people_work = bool(people.requests) or any(not r.background for r in self._waiting)
        evaluation_work = bool(evaluations.requests) or any(r.background for r in self._waiting)
        if evaluation_work and _hold_background():
            evaluations.retire()  # cancelled rows leave even while held
            held = bool(evaluations.requests) or any(r.background for r in self._waiting)
            return None if held and not people_work else (people, False)
        if evaluation_work and (not people_work or time.monotonic() - evaluations.last_turn >= EVALUATION_TURN_S):
            evaluations.last_turn = time.monotonic()
            return evaluations, True
        return people, False

    def _run(self) -> None:
        people, evaluations = _Batch(self.model, self.joinable), _Batch(self.model, self.joinable)
        while True:
            with self._cv:
                turn = self._turn(people, evaluations)
                if turn is None:
                    self._cv.wait(HOLD_RECHECK_S)  # a new request wakes it at once
                    continue
                batch, background = turn
                admitted = self._admit(batch, background)
                self._running_rows = people.rows + evaluations.rows + sum(r.rows for r in admitted)
                self._running_requests = len(people.requests) + len(evaluations.requests) + len(admitted)
                if not admitted and not people.requests and not evaluations.requests and not self._waiting:
                    self._worker = None
                    self._cv.notify_all()
                    return
            if _wanted_threads is not None and torch.get_num_threads() != _wanted_threads:
                torch.set_num_threads(_wanted_threads)
            started = time.perf_counter()
            try:
                sampled = self._iterate(batch, admitted)
            except BaseException as exc:  # noqa: BLE001 - handed to every consumer of the failed batch
                batch.requests.extend(r for r in admitted if r not in batch.requests)
                batch.fail(exc)
                sampled = 0
            self.stats.steps += 1
            self.stats.tokens += sampled
            self.stats.busy_s += time.perf_counter() - started

    @torch.inference_mode()
    def _iterate(self, batch: _Batch, admitted: list[Request]) -> int:
        """Admit, step, retire; the number of tokens sampled."""
        sampled = 0
        if admitted:
            batch.join(admitted)
            sampled += sum(r.rows for r in admitted)
        batch.retire()
        if batch.requests:
            self.stats.max_rows = max(self.stats.max_rows, batch.rows)
            batch.step()
            sampled += batch.rows
            batch.retire()
        return sampled


_SCHEDULERS: weakref.WeakKeyDictionary[Any, Scheduler] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def scheduler_for(model: Any) -> Scheduler:
    """The one scheduler of a model object (created on first use, gone with the model)."""
    with _REGISTRY_LOCK:
        scheduler = _SCHEDULERS.get(model)
        if scheduler is None:
            scheduler = _SCHEDULERS[model] = Scheduler(model)
        return scheduler
