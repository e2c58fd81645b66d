"""Automatic evaluation of policy versions, and what every comparison shares: settings, prompt sets, versions.

"Is v7 better than v5?" in numbers, per version, stored in ``eval_results``:

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

Held-out split. A preference pair is held out when ``sha256(canonical JSON of its prompt conversation)`` taken
mod 100 is below ``held_out_percent`` (default 20). Hashing the prompt (not the pair) keeps every pair of one
prompt on the same side, and the split of a pair never changes as more labels arrive. Training jobs build their
data from all labels, so a held-out pair may have been trained on: every evaluation counts those pairs
(``seen_in_training``, from the version's frozen training snapshot ``runs/<job>/data/train.parquet``) and the
Compare page warns when it is not 0.

The other comparisons live beside this module and use its settings, prompt sets and version checks:
side by side (core.compare.sidebyside), active learning (core.compare.active), "what changed" reports
(core.compare.report) and safety evaluation (core.compare.safety). The log-prob and pair-generation primitives
they all score with are in core.serving.scoring; the reward-model scorer is core.training.reward.RewardScorer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core import ASSETS
from core.data.split import HELD_OUT_PERCENT, prompt_bucket, prompt_key  # noqa: F401 - the split is shared with training
from core.errors import NotFound, StudioError, ValidationError
from core.labeling import queue as prompt_queue
from core.serving.generate import SamplingParams
from core.serving.host import ModelHost
from core.serving.policies import BASE_POLICY, Version, comparable_policy, live_policy, run_dir_of, version_row
from core.serving.scoring import adapter_names, generate_pair_answers, row_adapter, sequence_logprobs
from core.training import rundir
from core.training.reward import RewardScorer
from storage.db import Database

Progress = Callable[[float, str], None]
DEFAULT_BETA = 0.1  # DPOConfig's default, for versions whose config names no beta
PROMPT_SOURCES = ("held_out", "queue", "typed", "seed")
REPORT_PROMPTS = ASSETS / "report_prompts.jsonl"  # never a labeling queue: see report_prompts()

Messages = list[dict[str, str]]


# --- settings ---------------------------------------------------------------------------------------------


@dataclass
class CompareSettings:
    """How both versions answer in a side-by-side comparison (the form on the Compare page)."""

    temperature: float = field(
        default=0.0,
        metadata={
            "help": "0 = greedy: each version gives its single most likely answer, so every difference comes from the "
            "versions. With sampling the two rows of the batch draw different random numbers (still "
            "reproducible through the seed).",
            "min": 0.0,
            "max": 2.0,
        },
    )
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass.", "min": 0.05, "max": 1.0})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens.", "min": 1, "max": 2048})
    seed: int = field(
        default=0,
        metadata={
            "help": "Prompt i is generated with seed + i: the same table comes out when run again.",
            "min": 0,
            "max": 2**31 - 1,
        },
    )

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens).validate()


@dataclass
class EvalSettings:
    """What an automatic evaluation measures on (the same for every version, so rows are comparable)."""

    held_out_percent: int = field(
        default=HELD_OUT_PERCENT,
        metadata={
            "help": "Share of prompts (by a fixed hash of the prompt) whose preference pairs are held out for "
            "accuracy.",
            "min": 1,
            "max": 100,
        },
    )
    max_pairs: int = field(
        default=200,
        metadata={
            "help": "At most this many held-out pairs are scored (the first ones by hash order).",
            "min": 1,
            "max": 100_000,
        },
    )
    prompts: int = field(
        default=8,
        metadata={
            "help": "Fixed prompt set: the first N seed prompts; each version answers each twice.",
            "min": 1,
            "max": 40,
        },
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest generated answer.", "min": 1, "max": 2048})
    temperature: float = field(
        default=1.0, metadata={"help": "1.0 (with top_p 1.0) makes the KL estimate unbiased.", "min": 0.05, "max": 2.0}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass.", "min": 0.05, "max": 1.0})
    seed: int = field(default=0, metadata={"help": "Prompt i is sampled with seed + i.", "min": 0, "max": 2**31 - 1})

    def validate(self) -> EvalSettings:
        for name, f in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if not f.metadata["min"] <= value <= f.metadata["max"]:
                raise ValidationError(
                    f"{name}={value} is out of range",
                    hint=f"choose {name} between {f.metadata['min']} and {f.metadata['max']}",
                )
        return self


# --- prompt sets ------------------------------------------------------------------------------------------


@dataclass
class PromptSet:
    """Where the prompts come from: the held-out split, a labeling queue, typed text, or the seed prompts."""

    source: str = "held_out"
    queue_id: int | None = None
    text: str = ""  # typed prompts, one per line
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
        prompts = [
            _user(r["text"])
            for r in db.query(
                "SELECT text FROM prompts WHERE queue_id = ? AND redacted_at IS NULL ORDER BY id", [spec.queue_id]
            )
        ]
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
    return prompt_queue.parse_prompts(
        prompt_queue.SEED_PROMPTS.read_text(encoding="utf-8"), prompt_queue.SEED_PROMPTS.name
    )


def report_prompts() -> list[str]:
    """Prompts only reports ask, after the held-out and seed prompts. Why: the seed prompts are also the first
    labeling queue, so a user who labeled them would leave a report too few prompts never trained on."""
    return prompt_queue.parse_prompts(REPORT_PROMPTS.read_text(encoding="utf-8"), REPORT_PROMPTS.name)


def held_out_pairs(db: Database, percent: int = HELD_OUT_PERCENT, filters: Any = None) -> list[dict[str, Any]]:
    """Preference pairs (``prompt/chosen/rejected``, the training builder's rows, optionally filtered) in the
    held-out split, ordered by their hash so a ``max_pairs`` cut is a fixed, unbiased subset."""
    from core.data.trainsets import preference_rows

    rows = [r for r in preference_rows(db, filters).rows if prompt_bucket(r["prompt"]) < percent]
    return sorted(
        rows,
        key=lambda r: hashlib.sha256(
            json.dumps([prompt_key(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"]]).encode()
        ).hexdigest(),
    )


def last_user_text(prompt: Messages) -> str:
    """The text of the conversation's last user message (what a table row or a queued prompt shows)."""
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


# --- versions ---------------------------------------------------------------------------------------------


def check_pair(db: Database, a: str, b: str) -> tuple[Version, Version]:
    """Both versions exist, are live and comparable, and are two different versions."""
    if a == b:
        raise ValidationError(f"Cannot compare {a} with itself", hint="pick two different versions")
    return comparable_policy(db, a), comparable_policy(db, b)


def reward_models(db: Database) -> list[str]:
    """Live reward models (rm1, rm2, ...), newest first."""
    return [
        r["name"]
        for r in db.query(
            "SELECT name FROM policies WHERE algorithm = 'reward' AND deleted_at IS NULL ORDER BY id DESC"
        )
    ]


NO_REWARD_MODEL = (
    "No reward model is registered yet, so answers are not scored. Train one on the Train page "
    "(algorithm 'Reward model'); it appears here as rm1."
)


def reward_scorer(db: Database, reward_model: str | None) -> RewardScorer | None:
    """The scorer of ``reward_model``, or None when no reward model was picked (answers are then not scored)."""
    return RewardScorer.load(db, reward_model) if reward_model else None


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
    answers: list[dict[str, Any]] = field(default_factory=list)  # the generations, for inspection

    def metrics(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "answers"}


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Share of pairs with chosen scored above rejected; equal scores count half. None without pairs."""
    if not chosen:
        return None
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def implicit_rewards(
    studio: ModelHost,
    policy: str,
    reference: str,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    beta: float,
    cut: Sequence[bool] | None = None,
) -> list[float]:
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` of each answer (0 when policy == reference);
    ``cut[i]``: answer i stopped at the length limit (scored without an end-of-turn, as DPO trained it)."""
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
    flags = list(cut) if cut is not None else [False] * len(answers)
    logps = sequence_logprobs(studio, names, list(prompts) * 2, list(answers) * 2, flags * 2)
    n = len(answers)
    return [beta * (logps[i][0] - logps[n + i][0]) for i in range(n)]


def evaluate_version(
    studio: ModelHost,
    name: str,
    reward_model: str | None = None,
    settings: EvalSettings | None = None,
    user: Any = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Every metric of one version (see the module docstring), saved as a row of ``eval_results``."""
    settings = (settings or EvalSettings()).validate()
    db = studio.db
    policy = comparable_policy(db, name)
    scorer = reward_scorer(db, reward_model)
    pairs = held_out_pairs(db, settings.held_out_percent)[: settings.max_pairs]
    seen = _seen_in_training(db, policy, pairs)
    prompts = [p["prompt"] for p in pairs]
    chosen = [p["chosen"][0]["content"] for p in pairs]
    rejected = [p["rejected"][0]["content"] for p in pairs]
    cut = [bool(p.get("chosen_cut")) for p in pairs] + [bool(p.get("rejected_cut")) for p in pairs]

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
            both = implicit_rewards(studio, name, reference, prompts + prompts, chosen + rejected, beta, cut)
            good, bad = both[: len(pairs)], both[len(pairs) :]
            implicit_accuracy = preference_accuracy(good, bad)
            implicit_margin = sum(g - b for g, b in zip(good, bad)) / len(pairs)

    fixed = [_user(p) for p in seed_prompts()[: settings.prompts]]
    sampling = SamplingParams(settings.temperature, settings.top_p, settings.max_new_tokens).validate()
    rows = adapter_names(studio, name, name)
    answers: list[dict[str, Any]] = []
    for i, prompt in enumerate(fixed):
        report_progress(progress, 0.3 + 0.5 * i / len(fixed), f"{name}: generating answer {i + 1} of {len(fixed)}")
        pair = generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i)
        answers += [
            {"prompt": prompt[0]["content"], "answer": pair.text_a, "tokens": pair.tokens_a, "cut": pair.cut_a},
            {"prompt": prompt[0]["content"], "answer": pair.text_b, "tokens": pair.tokens_b, "cut": pair.cut_b},
        ]
    sample_prompts = [_user(a["prompt"]) for a in answers]
    texts = [a["answer"] for a in answers]

    report_progress(progress, 0.85, f"{name}: KL to the base")
    cut = [a["cut"] for a in answers]  # the end-of-turn a cut answer never wrote is not in its KL
    logps = sequence_logprobs(
        studio, [row_adapter(rows, 0)] * len(texts) + [None] * len(texts), sample_prompts * 2, texts * 2, cut * 2
    )
    kl = sum(logps[i][0] - logps[len(texts) + i][0] for i in range(len(texts))) / len(texts)
    gen_reward = None
    if scorer is not None:
        report_progress(progress, 0.95, f"{name}: scoring generations with {scorer.name}")
        scores = scorer.score(sample_prompts, texts)
        for answer, value in zip(answers, scores):
            answer["score"] = value
        gen_reward = sum(scores) / len(scores)

    result = EvalResult(
        name,
        reference,
        scorer.name if scorer else None,
        len(pairs),
        seen,
        rm_accuracy,
        implicit_accuracy,
        implicit_margin,
        beta,
        gen_reward,
        kl,
        sum(a["tokens"] for a in answers) / len(answers),
        len(answers),
        _seen_in_training(db, live_policy(db, scorer.name), pairs) if scorer else 0,
        answers,
    )
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO eval_results (policy_id, reward_model_id, reference_id, held_out_pairs, seen_in_training,"
            " rm_accuracy, implicit_accuracy, implicit_margin, beta, gen_reward, kl_to_base, mean_length, samples,"
            " settings, created_by) VALUES (?, ?, (SELECT id FROM policies WHERE name = ?), ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?)",
            [
                policy["id"],
                scorer.policy_id if scorer else None,
                reference,
                result.held_out_pairs,
                seen,
                rm_accuracy,
                implicit_accuracy,
                implicit_margin,
                beta,
                gen_reward,
                kl,
                result.mean_length,
                result.samples,
                json.dumps(asdict(settings)),
                getattr(user, "id", None),
            ],
        )
    report_progress(progress, 1.0, f"{name}: done")
    return result


def _reference(db: Database, policy: Version) -> str | None:
    """The implicit-reward reference: the version's parent (the base for first versions); None for the base."""
    if policy["name"] == BASE_POLICY:
        return None
    parent = policy["parent"] or BASE_POLICY
    try:
        comparable_policy(db, parent)
    except (NotFound, ValidationError) as exc:
        raise ValidationError(
            f"The reference of {policy['name']} (its parent {parent}) cannot be used: {exc.message}",
            hint="restore the parent version to evaluate this one",
        ) from None
    return parent


def _seen_in_training(db: Database, policy: Version, pairs: list[dict[str, Any]]) -> int:
    """How many of the pairs have a prompt that was in the version's frozen training snapshot."""
    if not pairs:
        return 0
    trained = trained_prompt_keys(db, policy)
    return sum(1 for p in pairs if prompt_key(p["prompt"]) in trained)


def trained_rows(db: Database, policy: Version) -> list[dict[str, Any]]:
    """The labeled pairs a version was trained on (``prompt/chosen/rejected``): its frozen training snapshot when
    that holds preference pairs; otherwise (KTO or SFT data, no job) the preference pairs of the labels chosen
    like its training data (the job's filters), training split only."""
    run_dir = run_dir_of(db, policy)
    path = rundir.train_data_path(run_dir) if run_dir else None
    if path is not None and path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if {"prompt", "chosen", "rejected"} <= set(table.column_names):
            return table.to_pylist()
    from core.data.trainsets import preference_rows

    filters = job_filters(db, policy, drop=("since", "until"))
    try:
        rows = preference_rows(db, filters).rows
    except StudioError:  # a labeler or version named in the filters is gone: every label
        rows = preference_rows(db).rows
    return [r for r in rows if prompt_bucket(r["prompt"]) >= HELD_OUT_PERCENT]


def job_filters(db: Database, policy: Version, drop: tuple[str, ...]) -> Any:
    """The data filters a version's job chose its training labels with (less ``drop``), or None (no job, or no
    filters recorded). Reading labels with them raises StudioError when a labeler or version they name is gone."""
    from core.data.filters import filters_from_dict

    if policy.get("job_id") is None:
        return None
    raw = db.scalar("SELECT config FROM jobs WHERE id = ?", [policy["job_id"]])
    recorded = (json.loads(raw) if raw else {}).get("filters")
    if not recorded:
        return None
    return filters_from_dict({k: v for k, v in recorded.items() if k not in drop})


def trained_prompt_keys(db: Database, policy: Version) -> set[str]:
    """The prompts (``prompt_key``) in a version's frozen training snapshot; empty for the base."""
    run_dir = run_dir_of(db, policy)
    path = rundir.train_data_path(run_dir) if run_dir else None
    if path is None or not path.is_file():
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
        " WHERE p.deleted_at IS NULL ORDER BY p.id",
        [BASE_POLICY, BASE_POLICY],
    )
    overlap: dict[tuple[str, int, int], int] = {}
    for row in rows:
        settings = json.loads(row.pop("settings") or "{}")
        row["rm_seen_in_training"] = None
        if row["reward_model"]:
            key = (
                row["reward_model"],
                settings.get("held_out_percent", HELD_OUT_PERCENT),
                settings.get("max_pairs", row["held_out_pairs"]),
            )
            if key not in overlap:
                pairs = held_out_pairs(db, key[1])[: key[2]]
                # deleted or not: a deleted reward model's training data still explains old results
                scorer = version_row(db, key[0])
                overlap[key] = _seen_in_training(db, scorer, pairs) if scorer else 0
            row["rm_seen_in_training"] = overlap[key]
    return rows


# --- progress ---------------------------------------------------------------------------------------------


def report_progress(progress: Progress | None, value: float, text: str) -> None:
    """Tell a progress callback (if any) how far, clamped to 0..1."""
    if progress is not None:
        progress(min(1.0, max(0.0, value)), text)
