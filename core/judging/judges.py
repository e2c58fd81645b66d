"""AI judges: a model says which of two answers is better, in both orders, with a confidence.

Why it looks like this:
- Three backends answer the same question, "how likely is the FIRST answer the better one?":
  ``rm:<rmN>`` a reward model trained here (sigmoid of the score difference), ``policy[:<vN>]`` the in-process
  policy reading a judge prompt (the probability of the token "A" against "B" as its reply), and an
  OpenAI-compatible endpoint (vLLM, Ollama, a hosted API, ``transformers serve``: its top log-probabilities of
  "A" and "B" when it returns them, else its reply's first letter).
- Position bias is controlled, not assumed away: every pair is judged twice, A shown first and then B shown
  first. When the two orders disagree the verdict is a tie (``position_consistent`` False); when they agree the
  confidence is the mean probability the judge gave the winner. A reply that names neither A nor B (a weak
  judge model) is no verdict for that order: the pair becomes a tie marked ``readable`` False, and runs count
  them, so a judge that cannot follow the instruction shows it instead of failing the run.
- The rubric is built from what humans label against: the labeling guidelines and the active rating aspects.
- Remote endpoints fail in passing: connection errors, 429 and 5xx are retried with exponential backoff; anything
  else is a :class:`JudgeError` with the endpoint and what to do. The key comes from ``STUDIO_JUDGE_API_KEY`` or a
  one-off value held in memory for the run; it is never stored.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from core.errors import StudioError, ValidationError
from core.serving.host import ModelHost

Messages = list[dict[str, str]]
API_KEY_ENV = "STUDIO_JUDGE_API_KEY"
RETRIES = 3
BACKOFF_S = 0.5
TIMEOUT_S = 60.0
REPLY_TOKENS = 8  # room for "Answer A." from models that do not reply with the bare letter
MAX_ANSWER_CHARS = 4000  # each answer as the judge sees it (a judge prompt must fit small context windows)

SPEC_HELP = (
    "rm:<rmN> (a reward model trained here), policy or policy:<vN> (the in-process policy with a judge "
    "prompt), or an OpenAI-compatible endpoint: <url>#<model> (e.g. http://gpu-box:8000/v1#Qwen/Qwen3-8B)"
)


class JudgeError(StudioError):
    """The judge could not give a verdict (endpoint down or refusing, unreadable reply)."""

    code = "judge_unavailable"
    http_status = 503


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge: ``kind`` is rm | policy | endpoint; ``name`` the rm / policy version or the endpoint's model."""

    kind: str
    name: str
    url: str | None = None

    @property
    def labeler(self) -> str:
        """The labeler name its labels are stored under: its own kind, never mistaken for a person."""
        return f"ai:{self.kind}:{self.name}" if self.kind != "endpoint" else f"ai:{self.name}"

    def describe(self) -> str:
        return {
            "rm": f"reward model {self.name}",
            "policy": f"policy {self.name} with a judge prompt",
            "endpoint": f"{self.name} at {self.url}",
        }[self.kind]


def parse_judge(spec: str) -> JudgeSpec:
    """``rm:rm1`` | ``rm1`` | ``policy`` | ``policy:v2`` | ``http(s)://host/v1#model``."""
    text = (spec or "").strip()
    if re.fullmatch(r"rm\d+", text):
        return JudgeSpec("rm", text)
    if text.startswith("rm:") and len(text) > 3:
        return JudgeSpec("rm", text[3:])
    if text == "policy":
        return JudgeSpec("policy", "base")
    if text.startswith("policy:") and len(text) > 7:
        return JudgeSpec("policy", text[7:])
    if re.match(r"https?://", text):
        url, _, model = text.partition("#")
        if not model.strip():
            raise ValidationError(
                f"Judge endpoint {url!r} names no model",
                hint="add #<model> after the URL, e.g. http://gpu-box:8000/v1#Qwen/Qwen3-8B",
            )
        return JudgeSpec("endpoint", model.strip(), url.rstrip("/"))
    raise ValidationError(f"Unknown judge {spec!r}", hint=f"use {SPEC_HELP}")


# --- the question asked ----------------------------------------------------------------------------------------


def rubric(guidelines: str, aspects: Sequence[dict[str, Any]]) -> str:
    """The judge's instructions: the guidelines humans label with, and the aspects they rate."""
    lines = [
        "You are an impartial judge comparing two answers to the same conversation.",
        "Judge them the way the human labelers of this project do, by these guidelines:",
        "",
        guidelines.strip(),
        "",
    ]
    if aspects:
        lines.append("Weigh these aspects:")
        lines += [f"- {a['name']}: {a.get('description') or ''}".rstrip(": ") for a in aspects]
        lines.append("")
    lines.append("Reply with exactly one letter: A if Answer A is better, B if Answer B is better.")
    return "\n".join(lines)


def judge_messages(instructions: str, prompt: Messages, first: str, second: str) -> Messages:
    """The chat a judge model reads: the rubric as system prompt, the conversation and both answers."""
    conversation = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in prompt)
    user = (
        f"[Conversation]\n{conversation}\n\n[Answer A]\n{first[:MAX_ANSWER_CHARS]}\n\n"
        f"[Answer B]\n{second[:MAX_ANSWER_CHARS]}\n\nWhich answer is better? Reply with A or B."
    )
    return [{"role": "system", "content": instructions}, {"role": "user", "content": user}]


# --- verdicts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The judge's label for one pair: ``outcome`` a | b | tie, ``confidence`` in [0.5, 1] for a or b (the mean
    probability it gave the winner over both orders) and 0.5 for a tie."""

    outcome: str
    confidence: float
    p_a_shown_first: float | None  # P(A better) when A was shown first (None: unreadable reply)
    p_a_shown_second: float | None  # P(A better) when B was shown first
    position_consistent: bool
    readable: bool = True

    def as_dict(self) -> dict[str, Any]:
        def rounded(p: float | None) -> float | None:
            return None if p is None else round(p, 4)

        return {
            "outcome": self.outcome,
            "confidence": round(self.confidence, 4),
            "p_a_shown_first": rounded(self.p_a_shown_first),
            "p_a_shown_second": rounded(self.p_a_shown_second),
            "position_consistent": self.position_consistent,
            "readable": self.readable,
        }


def combine(p_first_ab: float | None, p_first_ba: float | None) -> Verdict:
    """Both orders into one verdict. ``p_first_ab``: P(first better) with A first; ``p_first_ba``: with B first
    (None: the judge's reply named neither)."""
    if p_first_ab is None or p_first_ba is None:
        return Verdict("tie", 0.5, p_first_ab, None if p_first_ba is None else 1.0 - p_first_ba, False, False)
    a1, a2 = p_first_ab, 1.0 - p_first_ba
    if a1 > 0.5 and a2 > 0.5:
        return Verdict("a", (a1 + a2) / 2, a1, a2, True)
    if a1 < 0.5 and a2 < 0.5:
        return Verdict("b", 1.0 - (a1 + a2) / 2, a1, a2, True)
    return Verdict("tie", 0.5, a1, a2, False)


class Backend(Protocol):
    batch: int  # pairs per call: in-process backends batch them; an endpoint takes one at a time, so a failure
    # mid-run loses no verdict already paid for

    def prefer_first(self, items: Sequence[tuple[Messages, str, str]]) -> Sequence[float | None]:
        """P(first answer better) for each (prompt, first, second); None when the judge named neither."""


def judge_pairs(backend: Backend, items: Sequence[tuple[Messages, str, str]]) -> list[Verdict]:
    """Each (prompt, answer A, answer B) judged in both orders."""
    forward = backend.prefer_first(items)
    backward = backend.prefer_first([(prompt, b, a) for prompt, a, b in items])
    return [combine(f, b) for f, b in zip(forward, backward)]


# --- backends -------------------------------------------------------------------------------------------------


class RewardBackend:
    """A reward model trained here: P(first better) = sigmoid(r(first) - r(second)), the Bradley-Terry model it
    was trained under."""

    batch = 8

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def prefer_first(self, items: Sequence[tuple[Messages, str, str]]) -> list[float]:
        prompts = [p for p, _, _ in items] * 2
        answers = [first for _, first, _ in items] + [second for _, _, second in items]
        scores = self.scorer.score(prompts, answers)
        n = len(items)
        return [1.0 / (1.0 + math.exp(-(scores[i] - scores[n + i]))) for i in range(n)]


class PolicyBackend:
    """The in-process policy (a version's adapter on the shared model) reading the judge prompt: the probability
    of replying "A" against replying "B", from one forward pass each (no sampling)."""

    batch = 8

    def __init__(self, studio: ModelHost, version: str, instructions: str) -> None:
        from core.serving.scoring import adapter_names

        self.studio, self.instructions = studio, instructions
        rows = adapter_names(studio, version, version)
        self.adapter = rows[0] if rows else None

    def prefer_first(self, items: Sequence[tuple[Messages, str, str]]) -> list[float]:
        from core.serving.scoring import sequence_logprobs

        chats = [judge_messages(self.instructions, p, first, second) for p, first, second in items]
        scored = sequence_logprobs(
            self.studio, [self.adapter] * (2 * len(chats)), chats * 2, ["A"] * len(chats) + ["B"] * len(chats)
        )
        n = len(chats)
        return [1.0 / (1.0 + math.exp(scored[n + i][0] - scored[i][0])) for i in range(n)]


class EndpointBackend:
    """An OpenAI-compatible chat-completions endpoint, one request per order of each pair."""

    batch = 1

    def __init__(
        self,
        url: str,
        model: str,
        instructions: str,
        api_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url, self.model, self.instructions = url.rstrip("/"), model, instructions
        self.base = self.url if self.url.endswith("/v1") else self.url + "/v1"
        self._key = api_key or os.environ.get(API_KEY_ENV) or None
        self._sleep = sleep
        self._client = httpx.Client(timeout=TIMEOUT_S)
        self.tokens = 0  # prompt + completion tokens the endpoint reported, for the run's record

    def prefer_first(self, items: Sequence[tuple[Messages, str, str]]) -> list[float | None]:
        return [self._one(judge_messages(self.instructions, p, first, second)) for p, first, second in items]

    def _one(self, messages: Messages) -> float | None:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": REPLY_TOKENS,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 10,
        }
        reply = self.post(body)
        choice = (reply.get("choices") or [{}])[0]
        usage = reply.get("usage") or {}
        self.tokens += int(usage.get("total_tokens") or 0)
        top = (((choice.get("logprobs") or {}).get("content") or [{}])[0] or {}).get("top_logprobs") or []
        p = choice_probability({t.get("token", ""): t.get("logprob") for t in top}, "A", "B")
        if p is not None:
            return p
        text = ((choice.get("message") or {}).get("content") or "").strip()
        letter = re.search(r"\b([AB])\b", text)
        if letter:
            return 1.0 if letter.group(1) == "A" else 0.0
        return None

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat-completions request with retries (connection errors, 429, 5xx) and backoff; the JSON reply."""
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        last: str = ""
        for attempt in range(RETRIES + 1):
            if attempt:
                self._sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = self._client.post(f"{self.base}/chat/completions", json=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"could not be reached ({exc.__class__.__name__}: {exc})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"answered {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JudgeError(
                    f"The judge endpoint {self.url} refused the request ({response.status_code}: "
                    f"{response.text[:200]})",
                    hint="check the model name and the API key (STUDIO_JUDGE_API_KEY)",
                )
            try:
                return response.json()
            except ValueError:
                last = "answered something that is not JSON"
        raise JudgeError(
            f"The judge endpoint {self.url} {last} ({RETRIES + 1} attempts)",
            hint="check that it is running; judged pairs are saved, run the judge again to resume",
        )

    def close(self) -> None:
        self._client.close()


def choice_probability(logprobs: dict[str, Any], first: str, second: str) -> float | None:
    """P(first) / (P(first) + P(second)) from a reply's top log-probabilities, tokens compared without spaces or
    case ("A", " a"; "yes", " Yes"); None when neither is among them."""
    mass = {first.lower(): 0.0, second.lower(): 0.0}
    for token, logprob in logprobs.items():
        word = token.strip().lower()
        if word in mass and logprob is not None:
            mass[word] += math.exp(logprob)
    total = sum(mass.values())
    return mass[first.lower()] / total if total > 0 else None
