"""Compare policy versions with evidence: side by side, automatic evaluation, active learning.

Three questions, one module:

* **Side by side** -- "what do v7 and v5 answer to these prompts?" Both versions answer every prompt in ONE
  batched ``generate`` call (``core.serving.generate.stream_pair`` with one LoRA adapter per row, both adapters
  hot-swapped onto the shared base model), with the same settings and a fixed seed per prompt, so the table is
  reproducible. Each row carries the reward-model score of both answers (when an ``rmN`` is picked), their
  lengths, the time each row took, and a word diff.
* **Automatic evaluation** -- "is v7 better than v5?" in numbers, per version, stored in ``eval_results``:

  - *preference accuracy* on the held-out split (below), of the reward model (``r(chosen) > r(rejected)``) and of
    the version's implicit DPO reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` with the version's parent as
    reference (``beta`` from the version's config, else 0.1). Ties count half, so "no opinion" scores 0.5: the
    base has no parent and scores exactly 0.5 with an implicit margin of 0.
  - *mean reward-model score* of the version's generations on a fixed prompt set (the first N prompts of
    ``assets/seed_prompts.jsonl``, identical for every version and every run, fixed seeds).
  - *KL to the base*: the Monte Carlo estimate ``mean over samples y ~ pi of log pi(y|x) - log pi_base(y|x)``
    (nats per answer). It is unbiased when sampling at temperature 1 and top_p 1 (the defaults here); with other
    settings it measures the log-ratio on the tempered samples. Answers are re-tokenised from their text.
  - *mean length* of those generations, in tokens.

* **Active learning** -- "what should people label next?" From a prompt pool, generate two answers per prompt
  and rank the prompts by either
  ``disagreement`` between two versions (symmetric cross log-likelihood: each version's answer scored by both
  versions, ``[log pA(yA) - log pB(yA) + log pB(yB) - log pA(yB)] / tokens``, a per-token sample estimate of the
  Jeffreys divergence between them on that prompt; highest first) or ``uncertainty`` of a reward model (smallest
  score gap between the two answers first). Every pick has a reason in words; the picks become a normal prompt
  queue (``core.labeling.queue``) that the labeling app serves, and the reasons are kept in ``active_picks``.

Held-out split. A preference pair is held out when ``sha256(canonical JSON of its prompt conversation)`` taken
mod 100 is below ``held_out_percent`` (default 20). Hashing the prompt (not the pair) keeps every pair of one
prompt on the same side, and the split of a pair never changes as more labels arrive. Training jobs build their
data from all labels, so a held-out pair may have been trained on: every evaluation counts those pairs
(``seen_in_training``, from the version's frozen training snapshot ``runs/<job>/data/train.parquet``) and the
Compare page warns when it is not 0.

Threads: torch work runs in short-lived threads (see core.serving.generate's note on OpenMP pools), and forward passes
on the shared model take the generation lock, because the per-row adapter hooks they install would otherwise
leak into a chat generating at the same time.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import html
import io
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from core.labeling import queue as prompt_queue
from core.errors import Conflict, NotFound, ValidationError
from core.serving.adapters import BASE_ADAPTER, lora_adapter_names, mixed_adapters
from core.serving.generate import SamplingParams, in_short_thread, stream_pair
from core.serving.scheduler import MODEL_LOCK
from core.serving.policies import BASE_POLICY
from core.data.trainsets import HELD_OUT_PERCENT, prompt_bucket, prompt_key  # noqa: F401 - the split is shared with training
from storage.db import Database

Progress = Callable[[float, str], None]
DEFAULT_BETA = 0.1                 # DPOConfig's default, for versions whose config names no beta
MAX_LOGPROB_TOKENS = 1024          # prompt + answer tokens scored per row (the prompt is cut from the left)
LOGPROB_BATCH = 4
SCORE_BATCH = 8
PROMPT_SOURCES = ("held_out", "queue", "typed", "seed")
STRATEGIES = ("disagreement", "uncertainty")

Messages = list[dict[str, str]]


# --- settings ---------------------------------------------------------------------------------------------


@dataclass
class CompareSettings:
    """How both versions answer in a side-by-side comparison (the form on the Compare page)."""

    temperature: float = field(default=0.0, metadata={
        "help": "0 = greedy: each version gives its single most likely answer, so every difference comes from the "
                "versions. With sampling the two rows of the batch draw different random numbers (still "
                "reproducible through the seed).", "min": 0.0, "max": 2.0})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass.", "min": 0.05, "max": 1.0})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens.", "min": 1, "max": 2048})
    seed: int = field(default=0, metadata={
        "help": "Prompt i is generated with seed + i: the same table comes out when run again.", "min": 0,
        "max": 2**31 - 1})

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens).validate()


@dataclass
class EvalSettings:
    """What an automatic evaluation measures on (the same for every version, so rows are comparable)."""

    held_out_percent: int = field(default=HELD_OUT_PERCENT, metadata={
        "help": "Share of prompts (by a fixed hash of the prompt) whose preference pairs are held out for "
                "accuracy.", "min": 1, "max": 100})
    max_pairs: int = field(default=200, metadata={
        "help": "At most this many held-out pairs are scored (the first ones by hash order).", "min": 1,
        "max": 100_000})
    prompts: int = field(default=8, metadata={
        "help": "Fixed prompt set: the first N seed prompts; each version answers each twice.", "min": 1,
        "max": 40})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest generated answer.", "min": 1, "max": 2048})
    temperature: float = field(default=1.0, metadata={
        "help": "1.0 (with top_p 1.0) makes the KL estimate unbiased.", "min": 0.05, "max": 2.0})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass.", "min": 0.05, "max": 1.0})
    seed: int = field(default=0, metadata={"help": "Prompt i is sampled with seed + i.", "min": 0, "max": 2**31 - 1})

    def validate(self) -> "EvalSettings":
        for name, f in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if not f.metadata["min"] <= value <= f.metadata["max"]:
                raise ValidationError(f"{name}={value} is out of range",
                                      hint=f"choose {name} between {f.metadata['min']} and {f.metadata['max']}")
        return self


# --- prompt sets ------------------------------------------------------------------------------------------


@dataclass
class PromptSet:
    """Where the prompts come from: the held-out split, a labeling queue, typed text, or the seed prompts."""

    source: str = "held_out"
    queue_id: int | None = None
    text: str = ""                   # typed prompts, one per line
    limit: int = 20
    held_out_percent: int = HELD_OUT_PERCENT


def resolve_prompts(db: Database, spec: PromptSet) -> list[Messages]:
    """The prompt conversations of a prompt set (each ends with a user message); empty sets are an error."""
    if spec.source not in PROMPT_SOURCES:
        raise ValidationError(f"Unknown prompt source {spec.source!r}", hint=f"use one of {', '.join(PROMPT_SOURCES)}")
    if spec.limit < 1:
        raise ValidationError("The prompt limit must be at least 1", hint="compare at least one prompt")
    hint = "pick another prompt set"
    if spec.source == "typed":
        prompts = [_user(line.strip()) for line in spec.text.splitlines() if line.strip()]
        hint = "type at least one prompt (one per line)"
    elif spec.source == "queue":
        if spec.queue_id is None:
            raise ValidationError("Pick a queue", hint="create one on the Labeling setup page")
        if not db.scalar("SELECT count(*) FROM queues WHERE id = ?", [spec.queue_id]):
            raise NotFound(f"Queue {spec.queue_id} does not exist", hint="pick another queue")
        prompts = [_user(r["text"]) for r in db.query(
            "SELECT text FROM prompts WHERE queue_id = ? AND redacted_at IS NULL ORDER BY id", [spec.queue_id])]
        hint = "import prompts into the queue on the Labeling setup page"
    elif spec.source == "seed":
        prompts = [_user(p) for p in seed_prompts()]
    else:
        seen: dict[str, Messages] = {}
        for pair in held_out_pairs(db, spec.held_out_percent):
            seen.setdefault(prompt_key(pair["prompt"]), pair["prompt"])
        prompts = list(seen.values())
        hint = "label more pairs, or raise the held-out percentage"
    if not prompts:
        raise ValidationError(f"The prompt set ({spec.source.replace('_', '-')}) is empty", hint=hint)
    return prompts[: spec.limit]


def seed_prompts() -> list[str]:
    """The fixed prompt set of automatic evaluation, in file order."""
    return prompt_queue.parse_prompts(prompt_queue.SEED_PROMPTS.read_text(encoding="utf-8"),
                                      prompt_queue.SEED_PROMPTS.name)


def held_out_pairs(db: Database, percent: int = HELD_OUT_PERCENT, filters: Any = None) -> list[dict[str, Any]]:
    """Preference pairs (``prompt/chosen/rejected``, the training builder's rows, optionally filtered) in the
    held-out split, ordered by their hash so a ``max_pairs`` cut is a fixed, unbiased subset."""
    from core.data.trainsets import preference_rows

    rows = [r for r in preference_rows(db, filters).rows if prompt_bucket(r["prompt"]) < percent]
    return sorted(rows, key=lambda r: hashlib.sha256(json.dumps(
        [prompt_key(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"]]).encode()).hexdigest())


def last_user_text(prompt: Messages) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


# --- versions ---------------------------------------------------------------------------------------------


def _policy(db: Database, name: str) -> dict[str, Any]:
    rows = db.query("SELECT p.id, p.name, p.algorithm, p.adapter_path, p.config, p.deleted_at, p.job_id,"
                    " parent.name AS parent FROM policies p LEFT JOIN policies parent ON parent.id = p.parent_id"
                    " WHERE p.name = ?", [name])
    if not rows:
        raise NotFound(f"Policy version {name!r} does not exist", hint="pick a version from the list")
    policy = rows[0]
    if policy["deleted_at"] is not None:
        raise NotFound(f"Policy version {name!r} was deleted", hint="pick a live version (deleted ones stay "
                       "on disk for the record but cannot be compared)")
    policy["config"] = json.loads(policy["config"]) if policy["config"] else {}
    return policy


def comparable_policy(db: Database, name: str) -> dict[str, Any]:
    """A live chat policy that can run on the shared base model (the base, or a version with an adapter)."""
    policy = _policy(db, name)
    if policy["algorithm"] == "reward":
        raise ValidationError(f"{name} is a reward model, not a chat policy",
                              hint="compare base or vN versions; pick rmN as the reward model instead")
    if policy["name"] != BASE_POLICY and not policy["adapter_path"]:
        raise ValidationError(f"{name} is fully fine-tuned (its own weights, no adapter), so it cannot share a "
                              "batch with other versions", hint="compare LoRA versions, or start the studio with "
                              "--model <its model dir> to chat with it")
    return policy


def comparable_policies(db: Database) -> list[str]:
    """Names of the versions the Compare page offers: base first, then every live adapter version."""
    return [r["name"] for r in db.query(
        "SELECT name FROM policies WHERE deleted_at IS NULL AND (name = ? OR adapter_path IS NOT NULL)"
        " AND coalesce(algorithm, '') <> 'reward' ORDER BY id", [BASE_POLICY])]


def check_pair(db: Database, a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both versions exist, are live and comparable, and are two different versions."""
    if a == b:
        raise ValidationError(f"Cannot compare {a} with itself", hint="pick two different versions")
    return comparable_policy(db, a), comparable_policy(db, b)


def reward_models(db: Database) -> list[str]:
    """Live reward models (rm1, rm2, ...), newest first."""
    return [r["name"] for r in db.query("SELECT name FROM policies WHERE algorithm = 'reward'"
                                        " AND deleted_at IS NULL ORDER BY id DESC")]


NO_REWARD_MODEL = ("No reward model is registered yet, so answers are not scored. Train one on the Train page "
                   "(algorithm 'Reward model'); it appears here as rm1.")


class RewardScorer:
    """A trained reward model (rmN), loaded once per process, scoring (prompt, answer) pairs."""

    _cache: dict[str, "RewardScorer"] = {}
    _lock = threading.Lock()

    def __init__(self, name: str, policy_id: int, path: str) -> None:
        from core.training.reward import load_reward_model

        self.name, self.policy_id, self.path = name, policy_id, path
        self.model, self.tokenizer = in_short_thread(lambda: load_reward_model(path))

    @classmethod
    def load(cls, db: Database, name: str) -> "RewardScorer":
        policy = _policy(db, name)
        if policy["algorithm"] != "reward":
            raise ValidationError(f"{name} is not a reward model", hint="pick one of the rmN versions")
        path = policy["config"].get("reward_model_path")
        if not path or not Path(path).exists():
            raise NotFound(f"The files of reward model {name} are missing ({path})",
                           hint="retrain the reward model")
        with cls._lock:
            if path not in cls._cache:
                cls._cache[path] = cls(name, policy["id"], path)
            scorer = cls._cache[path]
        scorer.name, scorer.policy_id = name, policy["id"]  # renamed versions keep their loaded model
        return scorer

    def score(self, prompts: Sequence[Messages], answers: Sequence[str]) -> list[float]:
        from core.training.reward import score

        conversations = [list(p) + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)]

        def run() -> list[float]:
            out: list[float] = []
            for i in range(0, len(conversations), SCORE_BATCH):
                out += score(self.model, self.tokenizer, conversations[i:i + SCORE_BATCH])
            return out

        with self._lock:  # one scorer model, many page sessions
            return in_short_thread(run)


def _scorer(db: Database, reward_model: str | None) -> RewardScorer | None:
    return RewardScorer.load(db, reward_model) if reward_model else None


# --- generation and log-probs on the shared model ---------------------------------------------------------


@dataclass
class PairAnswers:
    text_a: str
    text_b: str
    tokens_a: int
    tokens_b: int
    latency_a_ms: float           # from the start of the batched call until row A finished
    latency_b_ms: float


def generate_pair_answers(studio: Any, rows: tuple[str | None, str | None] | None, prompt: Messages,
                          sampling: SamplingParams, seed: int,
                          policies: tuple[str, str] | None = None) -> PairAnswers:
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
    return PairAnswers(final.text_a, final.text_b, final.new_tokens_a, final.new_tokens_b,
                       done_at[0] or final.latency_ms, done_at[1] or final.latency_ms)


def _encode(tokenizer: Any, prompt: Messages, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as the chat template renders them; the answer includes its end-of-turn."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": answer}],
                                              tokenize=False)
    if full_text.startswith(prompt_text):
        answer_text = full_text[len(prompt_text):]
    else:  # a template that rewrites earlier turns: fall back to the answer plus eos
        answer_text = answer + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"][:MAX_LOGPROB_TOKENS // 2]
    keep = MAX_LOGPROB_TOKENS - len(answer_ids)
    return prompt_ids[-keep:], answer_ids


def sequence_logprobs(studio: Any, adapters: Sequence[str | None], prompts: Sequence[Messages],
                      answers: Sequence[str]) -> list[tuple[float, int]]:
    """(sum of log pi(answer tokens | prompt), answer token count) per row, row i under adapter ``adapters[i]``
    (a loaded adapter name, or None for the base) on the shared model."""
    import torch


    model, tokenizer = studio.model()
    encoded = [_encode(tokenizer, p, a) for p, a in zip(prompts, answers)]
    # Once any adapter is loaded on the shared model, every row names its adapter (BASE_ADAPTER = none):
    # a plain forward would apply whichever adapter happens to be active.
    loaded = lora_adapter_names(model)
    unknown = sorted({a for a in adapters if a} - loaded)
    if unknown:
        raise ValidationError(f"adapter(s) {', '.join(unknown)} are not loaded on the model",
                              hint="load them with Studio.adapter_rows first")
    has_adapters = bool(loaded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run() -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        with MODEL_LOCK, torch.inference_mode():
            for start in range(0, len(encoded), LOGPROB_BATCH):
                batch = encoded[start:start + LOGPROB_BATCH]
                rows = [n or BASE_ADAPTER for n in adapters[start:start + LOGPROB_BATCH]] if has_adapters else None
                width = max(len(p) + len(a) for p, a in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, (p, a) in enumerate(batch):
                    ids[i, :len(p) + len(a)] = torch.tensor(p + a)
                    mask[i, :len(p) + len(a)] = 1
                with mixed_adapters(model, rows) as extra:
                    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                   **extra).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
                for i, (p, a) in enumerate(batch):
                    out.append((float(logp[i, len(p) - 1:len(p) + len(a) - 1].sum()), len(a)))
        return out

    return in_short_thread(run)


def adapter_names(studio: Any, a: str, b: str) -> tuple[str | None, str | None] | None:
    """Load both versions' adapters on the shared model; the per-row adapter names for ``stream_pair`` (None =
    the base row), or None when no adapter is loaded at all (the plain model is the base)."""
    rows, _ = studio.adapter_rows(a, b)
    return rows


def row_adapter(rows: tuple[str | None, str | None] | None, i: int) -> str | None:
    return rows[i] if rows else None


# --- side by side -----------------------------------------------------------------------------------------


@dataclass
class SideBySideRow:
    prompt: str
    answer_a: str
    answer_b: str
    score_a: float | None
    score_b: float | None
    tokens_a: int
    tokens_b: int
    chars_a: int
    chars_b: int
    latency_a_ms: float
    latency_b_ms: float
    seed: int


@dataclass
class SideBySide:
    policy_a: str
    policy_b: str
    reward_model: str | None
    settings: CompareSettings
    rows: list[SideBySideRow]

    def table(self) -> list[dict[str, Any]]:
        """Rows for a data frame or CSV, the version names in the column names."""
        a, b = self.policy_a, self.policy_b
        return [{"prompt": r.prompt, f"answer {a}": r.answer_a, f"answer {b}": r.answer_b,
                 f"score {a}": r.score_a, f"score {b}": r.score_b, f"tokens {a}": r.tokens_a,
                 f"tokens {b}": r.tokens_b, f"chars {a}": r.chars_a, f"chars {b}": r.chars_b,
                 f"latency ms {a}": round(r.latency_a_ms, 1), f"latency ms {b}": round(r.latency_b_ms, 1),
                 "seed": r.seed} for r in self.rows]

    def to_csv(self) -> str:
        table = self.table()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["prompt"])
        writer.writeheader()
        writer.writerows(table)
        return buffer.getvalue()


def side_by_side(studio: Any, policy_a: str, policy_b: str, prompts: Sequence[Messages],
                 settings: CompareSettings | None = None, reward_model: str | None = None,
                 progress: Progress | None = None) -> SideBySide:
    """Both versions answer every prompt (one batched call per prompt, seed = settings.seed + i)."""
    settings = settings or CompareSettings()
    sampling = settings.sampling()
    check_pair(studio.db, policy_a, policy_b)
    if not prompts:
        raise ValidationError("The prompt set is empty", hint="pick or type at least one prompt")
    scorer = _scorer(studio.db, reward_model)
    rows = adapter_names(studio, policy_a, policy_b)
    out: list[SideBySideRow] = []
    for i, prompt in enumerate(prompts):
        report_progress(progress, i / len(prompts), f"prompt {i + 1} of {len(prompts)}: generating")
        answers = generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i, (policy_a, policy_b))
        out.append(SideBySideRow(last_user_text(prompt), answers.text_a, answers.text_b, None, None,
                                 answers.tokens_a, answers.tokens_b, len(answers.text_a), len(answers.text_b),
                                 answers.latency_a_ms, answers.latency_b_ms, settings.seed + i))
    if scorer is not None:
        report_progress(progress, 0.99, f"scoring with {scorer.name}")
        scores = scorer.score([p for p in prompts for _ in (0, 1)], [t for r in out for t in (r.answer_a, r.answer_b)])
        for row, k in zip(out, range(0, len(scores), 2)):
            row.score_a, row.score_b = scores[k], scores[k + 1]
    report_progress(progress, 1.0, "done")
    return SideBySide(policy_a, policy_b, scorer.name if scorer else None, settings, out)


_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


def diff_html(text_a: str, text_b: str) -> tuple[str, str]:
    """Word diff of two answers as two HTML fragments: words only in A struck in red, words only in B in green."""
    words_a, words_b = _WORDS.findall(text_a), _WORDS.findall(text_b)
    out_a: list[str] = []
    out_b: list[str] = []

    def esc(words: Iterable[str]) -> str:
        return html.escape("".join(words)).replace("\n", "<br>")

    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, words_a, words_b, autojunk=False).get_opcodes():
        if op == "equal":
            out_a.append(esc(words_a[i1:i2]))
            out_b.append(esc(words_b[j1:j2]))
            continue
        if i2 > i1:
            out_a.append(f'<del style="background:#fdd">{esc(words_a[i1:i2])}</del>')
        if j2 > j1:
            out_b.append(f'<ins style="background:#dfd">{esc(words_b[j1:j2])}</ins>')
    return "".join(out_a), "".join(out_b)


def word_overlap(text_a: str, text_b: str) -> float:
    """Share of words the two answers have in common, in order (difflib ratio over words)."""
    a, b = text_a.split(), text_b.split()
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# --- automatic evaluation ---------------------------------------------------------------------------------


@dataclass
class EvalResult:
    policy: str
    reference: str | None
    reward_model: str | None
    held_out_pairs: int
    seen_in_training: int
    rm_accuracy: float | None
    implicit_accuracy: float | None
    implicit_margin: float | None
    beta: float
    gen_reward: float | None
    kl_to_base: float
    mean_length: float
    samples: int
    rm_seen_in_training: int = 0  # held-out pairs whose prompt the reward model was trained on
    answers: list[dict[str, Any]] = field(default_factory=list)   # the generations, for inspection

    def metrics(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "answers"}


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Share of pairs with chosen scored above rejected; equal scores count half. None without pairs."""
    if not chosen:
        return None
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def implicit_rewards(studio: Any, policy: str, reference: str, prompts: Sequence[Messages],
                     answers: Sequence[str], beta: float) -> list[float]:
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` of each answer (0 when policy == reference)."""
    if len(prompts) != len(answers):
        raise ValidationError(f"{len(prompts)} prompts but {len(answers)} answers", hint="pass one prompt per answer")
    comparable_policy(studio.db, policy)
    comparable_policy(studio.db, reference)
    if policy == reference:
        rows = adapter_names(studio, policy, BASE_POLICY)
        names = [row_adapter(rows, 0)] * (2 * len(answers))
    else:
        rows = adapter_names(studio, policy, reference)
        names = [row_adapter(rows, 0)] * len(answers) + [row_adapter(rows, 1)] * len(answers)
    logps = sequence_logprobs(studio, names, list(prompts) * 2, list(answers) * 2)
    n = len(answers)
    return [beta * (logps[i][0] - logps[n + i][0]) for i in range(n)]


def evaluate_version(studio: Any, name: str, reward_model: str | None = None, settings: EvalSettings | None = None,
                     user: Any = None, progress: Progress | None = None) -> EvalResult:
    """Every metric of one version (see the module docstring), saved as a row of ``eval_results``."""
    settings = (settings or EvalSettings()).validate()
    db = studio.db
    policy = comparable_policy(db, name)
    scorer = _scorer(db, reward_model)
    pairs = held_out_pairs(db, settings.held_out_percent)[: settings.max_pairs]
    seen = _seen_in_training(db, policy, pairs)
    prompts = [p["prompt"] for p in pairs]
    chosen = [p["chosen"][0]["content"] for p in pairs]
    rejected = [p["rejected"][0]["content"] for p in pairs]

    report_progress(progress, 0.02, f"{name}: reward-model accuracy on {len(pairs)} held-out pairs")
    rm_accuracy = None
    if scorer is not None and pairs:
        rm_accuracy = preference_accuracy(scorer.score(prompts, chosen), scorer.score(prompts, rejected))

    report_progress(progress, 0.15, f"{name}: implicit reward accuracy")
    reference = _reference(db, policy)
    beta = float(policy["config"].get("beta") or DEFAULT_BETA)
    implicit_accuracy = implicit_margin = None
    if pairs:
        if reference is None:  # the base: no reference, no preference -- every pair is a tie
            implicit_accuracy, implicit_margin = 0.5, 0.0
        else:
            both = implicit_rewards(studio, name, reference, prompts + prompts, chosen + rejected, beta)
            good, bad = both[: len(pairs)], both[len(pairs):]
            implicit_accuracy = preference_accuracy(good, bad)
            implicit_margin = sum(g - b for g, b in zip(good, bad)) / len(pairs)

    fixed = [_user(p) for p in seed_prompts()[: settings.prompts]]
    sampling = SamplingParams(settings.temperature, settings.top_p, settings.max_new_tokens).validate()
    rows = adapter_names(studio, name, name)
    answers: list[dict[str, Any]] = []
    for i, prompt in enumerate(fixed):
        report_progress(progress, 0.3 + 0.5 * i / len(fixed), f"{name}: generating answer {i + 1} of {len(fixed)}")
        pair = generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i)
        answers += [{"prompt": prompt[0]["content"], "answer": pair.text_a, "tokens": pair.tokens_a},
                    {"prompt": prompt[0]["content"], "answer": pair.text_b, "tokens": pair.tokens_b}]
    sample_prompts = [_user(a["prompt"]) for a in answers]
    texts = [a["answer"] for a in answers]

    report_progress(progress, 0.85, f"{name}: KL to the base")
    logps = sequence_logprobs(studio, [row_adapter(rows, 0)] * len(texts) + [None] * len(texts), sample_prompts * 2, texts * 2)
    kl = sum(logps[i][0] - logps[len(texts) + i][0] for i in range(len(texts))) / len(texts)
    gen_reward = None
    if scorer is not None:
        report_progress(progress, 0.95, f"{name}: scoring generations with {scorer.name}")
        scores = scorer.score(sample_prompts, texts)
        for answer, value in zip(answers, scores):
            answer["score"] = value
        gen_reward = sum(scores) / len(scores)

    result = EvalResult(name, reference, scorer.name if scorer else None, len(pairs), seen, rm_accuracy,
                        implicit_accuracy, implicit_margin, beta, gen_reward, kl,
                        sum(a["tokens"] for a in answers) / len(answers), len(answers),
                        _seen_in_training(db, _policy(db, scorer.name), pairs) if scorer else 0, answers)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO eval_results (policy_id, reward_model_id, reference_id, held_out_pairs, seen_in_training,"
            " rm_accuracy, implicit_accuracy, implicit_margin, beta, gen_reward, kl_to_base, mean_length, samples,"
            " settings, created_by) VALUES (?, ?, (SELECT id FROM policies WHERE name = ?), ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?)",
            [policy["id"], scorer.policy_id if scorer else None, reference, result.held_out_pairs, seen,
             rm_accuracy, implicit_accuracy, implicit_margin, beta, gen_reward, kl, result.mean_length,
             result.samples, json.dumps(asdict(settings)), getattr(user, "id", None)])
    report_progress(progress, 1.0, f"{name}: done")
    return result


def _reference(db: Database, policy: dict[str, Any]) -> str | None:
    """The implicit-reward reference: the version's parent (the base for first versions); None for the base."""
    if policy["name"] == BASE_POLICY:
        return None
    parent = policy["parent"] or BASE_POLICY
    try:
        comparable_policy(db, parent)
    except (NotFound, ValidationError) as exc:
        raise ValidationError(f"The reference of {policy['name']} (its parent {parent}) cannot be used: "
                              f"{exc.message}", hint="restore the parent version to evaluate this one") from None
    return parent


def _seen_in_training(db: Database, policy: dict[str, Any], pairs: list[dict[str, Any]]) -> int:
    """How many of the pairs have a prompt that was in the version's frozen training snapshot."""
    if not pairs:
        return 0
    trained = trained_prompt_keys(db, policy)
    return sum(1 for p in pairs if prompt_key(p["prompt"]) in trained)


def trained_prompt_keys(db: Database, policy: dict[str, Any]) -> set[str]:
    """The prompts (``prompt_key``) in a version's frozen training snapshot; empty for the base."""
    if policy.get("job_id") is None:
        return set()
    run_dir = db.scalar("SELECT run_dir FROM jobs WHERE id = ?", [policy["job_id"]])
    path = Path(run_dir or "") / "data" / "train.parquet"
    if not run_dir or not path.is_file():
        return set()
    import pyarrow.parquet as pq

    trained = set()
    for row in pq.read_table(path).to_pylist():
        prompt = row.get("prompt") or (row.get("messages") or [])[:-1]
        trained.add(prompt_key(prompt))
    return trained


def eval_table(db: Database) -> list[dict[str, Any]]:
    """The latest evaluation of every live version, in version order (the versions table and trend plots).

    ``rm_seen_in_training`` (the reward model's overlap with the held-out pairs) is recomputed from the run's
    settings, so it stays right for a reward model evaluated against many versions.
    """
    rows = db.query(
        "SELECT p.name AS version, p.algorithm, coalesce(parent.name, CASE WHEN p.name = ? THEN NULL ELSE ? END)"
        " AS parent, rm.name AS reward_model, e.held_out_pairs, e.seen_in_training, e.rm_accuracy,"
        " e.implicit_accuracy, e.implicit_margin, e.beta, e.gen_reward, e.kl_to_base, e.mean_length, e.samples,"
        " e.created_at AS evaluated_at, e.settings FROM policies p"
        " JOIN (SELECT *, row_number() OVER (PARTITION BY policy_id ORDER BY id DESC) AS n FROM eval_results) e"
        "   ON e.policy_id = p.id AND e.n = 1"
        " LEFT JOIN policies parent ON parent.id = p.parent_id LEFT JOIN policies rm ON rm.id = e.reward_model_id"
        " WHERE p.deleted_at IS NULL ORDER BY p.id", [BASE_POLICY, BASE_POLICY])
    overlap: dict[tuple[str, int, int], int] = {}
    for row in rows:
        settings = json.loads(row.pop("settings") or "{}")
        row["rm_seen_in_training"] = None
        if row["reward_model"]:
            key = (row["reward_model"], settings.get("held_out_percent", HELD_OUT_PERCENT),
                   settings.get("max_pairs", row["held_out_pairs"]))
            if key not in overlap:
                pairs = held_out_pairs(db, key[1])[: key[2]]
                overlap[key] = _seen_in_training(db, _policy_any(db, key[0]), pairs)
            row["rm_seen_in_training"] = overlap[key]
    return rows


def _policy_any(db: Database, name: str) -> dict[str, Any]:
    """A policy row, deleted or not (a deleted reward model's training data still explains old results)."""
    rows = db.query("SELECT id, name, job_id FROM policies WHERE name = ?", [name])
    return rows[0] if rows else {"id": None, "name": name, "job_id": None}


# --- active learning --------------------------------------------------------------------------------------


@dataclass
class Pick:
    prompt: Messages
    score: float                  # disagreement (nats/token, higher first) or score gap (lower first)
    reason: str
    answer_a: str
    answer_b: str
    score_a: float | None = None
    score_b: float | None = None

    @property
    def text(self) -> str:
        return last_user_text(self.prompt)


def pick_for_labeling(studio: Any, strategy: str, policy_a: str, policy_b: str, prompts: Sequence[Messages],
                      k: int = 10, reward_model: str | None = None, settings: CompareSettings | None = None,
                      progress: Progress | None = None) -> list[Pick]:
    """The ``k`` prompts most worth labeling, best first, each with its reason.

    ``disagreement``: the two versions (different ones) answer; ranked by the symmetric cross log-likelihood
    per token (see the module docstring), highest first. ``uncertainty``: two answers (two versions, or two
    samples of one version when ``policy_a == policy_b``) scored by ``reward_model``; smallest gap first.
    """
    settings = settings or CompareSettings()
    if strategy not in STRATEGIES:
        raise ValidationError(f"Unknown strategy {strategy!r}", hint=f"use {' or '.join(STRATEGIES)}")
    if k < 1:
        raise ValidationError("Pick at least one prompt", hint="set k to 1 or more")
    if not prompts:
        raise ValidationError("The prompt pool is empty", hint="pick or type at least one prompt")
    if strategy == "disagreement":
        check_pair(studio.db, policy_a, policy_b)
    else:
        comparable_policy(studio.db, policy_a)
        comparable_policy(studio.db, policy_b)
        if not reward_model:
            raise ValidationError("Uncertainty sampling needs a reward model", hint=NO_REWARD_MODEL)
        if policy_a == policy_b and settings.temperature == 0:
            raise ValidationError(f"Two greedy answers of {policy_a} are identical, so there is nothing to be unsure "
                                  "about", hint="raise the temperature (e.g. 0.7) or pick two different versions")
    scorer = _scorer(studio.db, reward_model)
    rows = adapter_names(studio, policy_a, policy_b)
    sampling = settings.sampling()
    answers: list[PairAnswers] = []
    for i, prompt in enumerate(prompts):
        report_progress(progress, 0.9 * i / len(prompts), f"prompt {i + 1} of {len(prompts)}: generating")
        answers.append(generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i,
                                             (policy_a, policy_b)))
    report_progress(progress, 0.9, "ranking")
    a_texts, b_texts = [x.text_a for x in answers], [x.text_b for x in answers]
    picks: list[Pick] = []
    if strategy == "uncertainty":
        assert scorer is not None
        scores = scorer.score(list(prompts) * 2, a_texts + b_texts)
        n = len(prompts)
        for i, prompt in enumerate(prompts):
            sa, sb = scores[i], scores[n + i]
            who = f"{policy_a} and {policy_b}" if policy_a != policy_b else f"two samples of {policy_a}"
            picks.append(Pick(prompt, abs(sa - sb), f"{scorer.name} is unsure: it scores the answers of {who} "
                              f"{sa:.3f} vs {sb:.3f} (gap {abs(sa - sb):.3f})", a_texts[i], b_texts[i], sa, sb))
        picks.sort(key=lambda p: p.score)
    else:
        n = len(prompts)
        both = list(prompts) * 2
        under_a = sequence_logprobs(studio, [row_adapter(rows, 0)] * (2 * n), both, a_texts + b_texts)
        under_b = sequence_logprobs(studio, [row_adapter(rows, 1)] * (2 * n), both, a_texts + b_texts)
        for i, prompt in enumerate(prompts):
            (a_on_a, len_a), (a_on_b, len_b) = under_a[i], under_a[n + i]
            b_on_a, b_on_b = under_b[i][0], under_b[n + i][0]
            gap_a, gap_b = a_on_a - b_on_a, b_on_b - a_on_b
            value = (gap_a + gap_b) / max(1, len_a + len_b)
            overlap = word_overlap(a_texts[i], b_texts[i])
            picks.append(Pick(prompt, value, f"{policy_a} and {policy_b} disagree: {policy_b} finds {policy_a}'s "
                              f"answer {gap_a:.1f} nats less likely than {policy_a} does, and {policy_a} finds "
                              f"{policy_b}'s {gap_b:.1f} nats less likely ({value:.3f} nats/token); the answers "
                              f"share {overlap:.0%} of their words", a_texts[i], b_texts[i]))
        if scorer is not None:  # extra evidence for the labeler-to-be: what the reward model thinks
            scores = scorer.score(list(prompts) * 2, a_texts + b_texts)
            for i, pick in enumerate(picks):
                pick.score_a, pick.score_b = scores[i], scores[n + i]
                pick.reason += f"; {scorer.name} scores them {pick.score_a:.3f} vs {pick.score_b:.3f}"
        picks.sort(key=lambda p: -p.score)
    report_progress(progress, 1.0, "done")
    return picks[:k]


def queue_picks(db: Database, admin: Any, queue_name: str, strategy: str, policy_a: str, policy_b: str,
                picks: Sequence[Pick], reward_model: str | None = None) -> int:
    """Put the picks into a labeling queue (created if needed) and record why each was picked."""
    if not picks:
        raise ValidationError("Nothing to queue", hint="find prompts to label first")
    if db.scalar("SELECT count(*) FROM queues WHERE name = ?", [queue_name.strip()]):
        raise Conflict(f"A queue named {queue_name.strip()!r} already exists",
                       hint="each active-learning batch gets its own queue: pick a new name")
    texts = [p.text for p in picks]
    if any(not t.strip() for t in texts):
        raise ValidationError("A picked prompt has no user message", hint="pick from another prompt set")
    queue_id = prompt_queue.create_queue(db, admin, queue_name)
    prompt_queue.import_prompts(db, admin, queue_id, texts, f"import:active-{strategy}")
    ids = {r["text"]: r["id"] for r in db.query("SELECT id, text FROM prompts WHERE queue_id = ?", [queue_id])}
    with db.transaction() as cur:
        cur.executemany(
            "INSERT INTO active_picks (queue_id, prompt_id, strategy, score, rank, reason, policy_a, policy_b,"
            " reward_model, answer_a, answer_b, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[queue_id, ids[p.text], strategy, p.score, rank, p.reason, policy_a, policy_b, reward_model,
              p.answer_a, p.answer_b, admin.id] for rank, p in enumerate(picks, 1)])
    return queue_id


def queued_picks(db: Database, queue_id: int | None = None) -> list[dict[str, Any]]:
    """Active-learning picks with their reasons (newest batch first, then by rank)."""
    return db.query(
        "SELECT q.name AS queue, a.rank, p.text AS prompt, a.strategy, a.score, a.reason, a.policy_a, a.policy_b,"
        " a.reward_model, a.created_at FROM active_picks a JOIN queues q ON q.id = a.queue_id"
        " JOIN prompts p ON p.id = a.prompt_id WHERE ($queue::BIGINT IS NULL OR a.queue_id = $queue)"
        " ORDER BY a.created_at DESC, a.rank", {"queue": queue_id})


def report_progress(progress: Progress | None, value: float, text: str) -> None:
    """Tell a progress callback (if any) how far, clamped to 0..1."""
    if progress is not None:
        progress(min(1.0, max(0.0, value)), text)
