"""External inference engines: chat, pairs, arena and compare served by an OpenAI-compatible server.

Where a team outgrows one CPU process it runs vLLM, SGLang, TGI, Ollama, a llama.cpp server or
``transformers serve``; they all speak the OpenAI chat-completions protocol. With ``--inference-url`` the studio
sends generation there instead of to its in-process scheduler, and keeps everything else (labels, training,
reports) local.

- A pair is two streamed chat completions sent at once (``n=2`` is not supported everywhere); the engine
  batches them with everyone else's.
- Versions are LoRA adapters: a version is served under its own name once registered with the engine
  (vLLM ``--enable-lora``: ``POST /v1/load_lora_adapter``). A finished job registers its version; an engine
  without that endpoint answers 404 and the version says clearly that this engine cannot serve it.
- Any failure to reach or read the engine is an :class:`EngineUnavailable` (HTTP 503) with the engine's URL and
  what to do; nothing the user already saved is touched.
- The API key comes from ``STUDIO_INFERENCE_API_KEY`` at the moment of use and is never stored.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from core.errors import StudioError
from core.serving.generate import PairUpdate, SamplingParams

API_KEY_ENV = "STUDIO_INFERENCE_API_KEY"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # between two streamed chunks
PROBE_TIMEOUT_S = 5.0
STATUS_MAX_AGE_S = 10.0


class EngineUnavailable(StudioError):
    """The inference engine could not be reached, or answered with an error."""

    code = "engine_unavailable"
    http_status = 503


@dataclass(frozen=True)
class EngineStatus:
    """What Health and Settings show about the engine."""

    url: str
    model: str
    status: str  # "ok" or "unreachable: ..."
    latency_ms: float | None  # one GET /v1/models round trip
    lora: bool | None  # adapters registered so far were accepted (None: none tried yet)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "lora": self.lora,
        }


def _api_base(url: str) -> str:
    """``http://host:8000``, ``.../v1`` or ``.../v1/`` all mean the same server."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class Engine:
    """One OpenAI-compatible server; thread-safe (one HTTP client, connection pooling)."""

    def __init__(self, url: str, model: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.base = _api_base(url)
        self._model = model
        self._served: dict[str, str] = {}  # version name -> model name to request
        self._refused: dict[str, str] = {}  # version name -> why the engine cannot serve it
        self._lora: bool | None = None
        self._status: tuple[float, EngineStatus] | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    # -- plumbing --------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = os.environ.get(API_KEY_ENV)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _unavailable(self, what: str, exc: BaseException | str) -> EngineUnavailable:
        return EngineUnavailable(
            f"The inference engine at {self.url} {what}: {exc}",
            hint="check that the engine is running (see README 'Past one machine'); "
            "your labels are saved, try again once it is back",
        )

    @property
    def model(self) -> str:
        """The engine's model name: the configured one, else the first the engine lists."""
        if self._model is None:
            try:
                response = self._client.get(f"{self.base}/models", headers=self._headers(), timeout=PROBE_TIMEOUT_S)
                response.raise_for_status()
                models = [m["id"] for m in response.json().get("data", [])]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise self._unavailable("did not list its models", exc) from None
            if not models:
                raise EngineUnavailable(
                    f"The inference engine at {self.url} lists no models",
                    hint="start it with a model, or set --inference-model",
                )
            self._model = models[0]
        return self._model

    def status(self, max_age_s: float = STATUS_MAX_AGE_S) -> EngineStatus:
        """Reachability, model and one round trip's latency; probed at most once per ``max_age_s`` (health is
        polled, and must not turn into a stream of requests to the engine)."""
        cached = self._status
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        status = self._probe()
        self._status = (time.monotonic(), status)
        return status

    def _probe(self) -> EngineStatus:
        started = time.perf_counter()
        try:
            response = self._client.get(f"{self.base}/models", headers=self._headers(), timeout=PROBE_TIMEOUT_S)
            latency = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            listed = [m.get("id") for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return EngineStatus(self.url, self._model or "?", f"unreachable: {exc}", None, self._lora)
        model = self._model or (listed[0] if listed else "? (the engine lists none: set --inference-model)")
        return EngineStatus(self.url, model, "ok", round(latency, 1), self._lora)

    # -- versions --------------------------------------------------------------------------------------
    def register_adapter(self, name: str, path: str) -> bool:
        """Ask the engine to serve LoRA adapter ``path`` as ``name`` (vLLM's dynamic LoRA endpoint). False when
        the engine has no such endpoint; the reason is kept for :meth:`model_for`."""
        try:
            response = self._client.post(
                f"{self.base}/load_lora_adapter",
                headers=self._headers(),
                json={"lora_name": name, "lora_path": path},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            self._refused[name] = f"registering its adapter failed ({exc})"
            return False
        if response.status_code in (404, 405):
            self._lora = False
            self._refused[name] = "this engine does not load LoRA adapters (no /v1/load_lora_adapter)"
            return False
        if response.status_code >= 400 and "already" not in response.text.lower():
            self._refused[name] = f"the engine refused its adapter: HTTP {response.status_code} {response.text[:200]}"
            return False
        self._lora = True
        self._served[name] = name
        self._refused.pop(name, None)
        return True

    def model_for(self, version: str, adapter_path: str | None) -> str:
        """The model name to request for a policy version (the base model when it has no adapter)."""
        if not adapter_path:
            return self.model
        if version not in self._served and version not in self._refused:
            self.register_adapter(version, adapter_path)
        if version in self._served:
            return self._served[version]
        raise EngineUnavailable(
            f"{version} cannot be served by the inference engine at {self.url}: {self._refused[version]}",
            hint="start vLLM with --enable-lora (and VLLM_ALLOW_RUNTIME_LORA_UPDATING=1), "
            "serve the merged model, or pick the base policy",
        )

    # -- generation ------------------------------------------------------------------------------------
    def _stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        sampling: SamplingParams,
        seed: int | None,
        out: queue.SimpleQueue[tuple[int, str, Any]],
        row: int,
        cancel: threading.Event,
    ) -> None:
        """One streamed chat completion; puts (row, "text", piece), (row, "end", (tokens, finish reason)) or
        (row, "error", exc). Tokens come from the engine's usage report (0 when it sends none: chunks are counted)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream_options": {"include_usage": True},
        }
        if seed is not None:
            body["seed"] = seed + row  # two rows of one pair must not be the same sample
        tokens, finish = 0, None
        try:
            with self._client.stream(
                "POST", f"{self.base}/chat/completions", json=body, headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._unavailable(f"refused the request (HTTP {response.status_code})", response.text[:300])
                for line in response.iter_lines():
                    if cancel.is_set():
                        return
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or {}
                    if usage.get("completion_tokens"):
                        tokens = int(usage["completion_tokens"])
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            out.put((row, "text", piece))
                        finish = choice.get("finish_reason") or finish
            out.put((row, "end", (tokens, finish)))
        except EngineUnavailable as exc:
            out.put((row, "error", exc))
        except (httpx.HTTPError, ValueError) as exc:
            out.put((row, "error", self._unavailable("stopped answering", exc)))

    def stream_pair(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingParams,
        models: tuple[str, str],
        seed: int | None = None,
        interval: float | Callable[[], float] = 0.0,
    ) -> Iterator[PairUpdate]:
        """Two answers streamed side by side, as :func:`core.serving.generate.stream_pair` yields them."""
        sampling = sampling.validate()
        started = time.perf_counter()
        out: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
        cancel = threading.Event()
        texts, done, eos, counts = ["", ""], [False, False], [False, False], [0, 0]
        workers = [
            threading.Thread(
                target=self._stream,
                args=(models[i], messages, sampling, seed, out, i, cancel),
                name=f"engine-row-{i}",
                daemon=True,
            )
            for i in range(2)
        ]
        for worker in workers:
            worker.start()
        last_yield = 0.0
        try:
            while not all(done):
                row, kind, value = out.get()
                if kind == "error":
                    raise value
                if kind == "text":
                    texts[row] += value
                    counts[row] += 1
                else:
                    tokens, finish = value
                    done[row], eos[row] = True, finish == "stop"
                    counts[row] = tokens or counts[row]
                now = time.monotonic()
                if now - last_yield >= (interval() if callable(interval) else interval):
                    last_yield = now
                    yield self._update(texts, done, eos, counts)
            yield self._update(texts, done, eos, counts, latency_ms=(time.perf_counter() - started) * 1000)
        finally:
            cancel.set()

    @staticmethod
    def _update(
        texts: list[str], done: list[bool], eos: list[bool], counts: list[int], latency_ms: float | None = None
    ) -> PairUpdate:
        return PairUpdate(
            text_a=texts[0],
            text_b=texts[1],
            done_a=done[0],
            done_b=done[1],
            new_tokens_a=counts[0],
            new_tokens_b=counts[1],
            truncated_tokens=0,
            finished=latency_ms is not None,
            latency_ms=latency_ms,
            eos_a=eos[0],
            eos_b=eos[1],
        )

    def close(self) -> None:
        self._client.close()
