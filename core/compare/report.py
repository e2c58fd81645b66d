""" "What changed": did a new version learn from the labels, and did anything else move that should not have?

Computed in the background after every training job (new version vs its parent) and on demand for any two chat
versions, on data the version never trained on. The verdict rests on every source of evidence a user would accept
(VERDICT_RULE), Holm-corrected as one family:

* **What the labels prefer, and whether the version moved that way** (core.compare.signature). The label signature
  of the version's training snapshot says which answer features the labels prefer (sign test per feature). Both
  versions answer ``prompts`` held-out prompts (the split's prompts, then seed prompts never trained on; temperature
  1, top-p 1, the same seed per prompt, one batched call) and each feature is compared per prompt. At 40 labels
  this is the evidence that decides: ~8 held-out pairs cannot, while labels that always prefer the shorter answer
  make length significant at any size. Answers run to 256 tokens: capped at 64, a version whose answers came out
  1.7x shorter read 64 -> 59 tokens, like a coin-flip control.
* **Held-out labeled pairs** of the evaluation split (prompts whose fixed hash bucket is below 20, see
  core.data.split; pairs whose prompt is in either version's training snapshot are left out): did the version raise
  log p(chosen) - log p(rejected) relative to the other version? ``toward`` / ``away`` count the pairs that moved
  each way. Each version's *log-prob ranking accuracy* (mean log-probability per answer token, so length does not
  decide) is shown beside it; it is not DPO's reward accuracy on the training curves.
* **The blind check by people**, when votes were cast (``blind_check`` in the metrics).
* From the same samples: KL to the other version per token (mean over the version's samples of log pi_v(y|x) -
  log pi_against(y|x), divided by the tokens; unbiased at temperature 1; a sample cut at max_new_tokens is scored
  without the end-of-turn it never wrote), answer length (tokens) and the share cut at the limit, refusal rate (the
  refusal phrases of ``core.compare.safety.is_refusal``), diversity (distinct-2), a win rate judged by the newest
  reward model (rmN) when one exists, and the prompts where the two answers differ most, side by side.
* **Warnings** when something moved suspiciously (2x longer answers the labels did not ask for, more refusals,
  less diversity, large KL).

A version trained on coin-flip labels moves too (KL ~0.2 nats per token measured) but its labels prefer nothing,
so it gets "changed, but not toward your labels", never "learned".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict, cast

from core.compare import evaluation as ev
from core.compare.arena import blind_check, people_comparisons
from core.compare.benchmarks import latest_comparison
from core.compare.evaluation import Progress, report_progress
from core.compare.safety import is_refusal, safety_change
from core.compare.sidebyside import word_overlap
from core.compare.signature import label_signature, paired_tests, two_sided
from core.compare.style import Comparison, version_vs_style
from core.compare.verdict import VERDICT_RULE, drift_warnings, evidence, figure, verdict
from core.data.split import HELD_OUT_PERCENT, prompt_key
from core.errors import StudioError, ValidationError
from core.serving.generate import SamplingParams, StreamSnapshot, generate_batch
from core.serving.host import ModelHost
from core.serving.policies import Version, default_against
from core.serving.scoring import adapter_names, row_adapter, sequence_logprobs
from core.training.reward import RewardScorer
from storage.db import Database, one_value

EXAMPLES = 5


@dataclass
class ReportSettings:
    """What a report measures on (the same for every version, so reports are comparable)."""

    prompts: int = field(
        default=48,
        metadata={
            "help": "Held-out prompts each version answers (the evaluation split's prompts first, then seed and "
            "report prompts never trained on). The answers are compared per prompt along what the labels prefer. "
            "48 rather than 24: at 40 labels, a version that addressed the reader more, as labeled, did so on 14 "
            "of 24 prompts (p = 0.13, not enough) and on 26 of 48 (p = 0.003); a coin-flip control stayed "
            "unlearned at both.",
            "min": 1,
            "max": 200,
        },
    )
    max_new_tokens: int = field(
        default=256,
        metadata={
            "help": "Longest generated answer. Long enough for length and structure to move: capped at 64 tokens, a "
            "version that answered 1.7x shorter read 64 -> 59 tokens.",
            "min": 4,
            "max": 1024,
        },
    )
    max_pairs: int = field(
        default=200, metadata={"help": "At most this many held-out labeled pairs are scored.", "min": 1, "max": 100_000}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the one sampling generator of the report's batch: the same prompts and versions give "
            "the same answers.",
            "min": 0,
            "max": 2**31 - 1,
        },
    )

    @classmethod
    def chosen(cls, **values: int | None) -> ReportSettings:
        """The defaults with what someone chose on demand (``None``: the default), validated: the REST route, the
        CLI and the Compare page read the same fields."""
        return cls(**{name: value for name, value in values.items() if value is not None}).validate()

    def validate(self) -> ReportSettings:
        for name, f in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not f.metadata["min"] <= value <= f.metadata["max"]:
                raise ValidationError(
                    f"report setting {name}={value!r} is out of range",
                    hint=f"choose {name} between {f.metadata['min']} and {f.metadata['max']}",
                )
        return self


class _ReadAdds(TypedDict, total=False):
    """What reading a stored report adds to its body (Python 3.10 has no NotRequired)."""

    id: int
    created_at: str
    safety: dict[str, Any]  # the safety comparison, run on its own, later
    benchmarks: dict[str, Any]  # so are standard benchmarks
    thorough: bool  # measured at least as thoroughly as the defaults (see thorough())


class Report(_ReadAdds):
    """What a version's report says and what it rests on: the body stored as JSON in version_reports, plus what
    reading it adds."""

    version: str
    against: str
    verdict: str  # learned, no_change, regressed, changed, mixed or unmeasured
    summary: str
    metrics: dict[str, Any]  # every measured figure; core.compare.verdict reads them
    evidence: list[dict[str, Any]]  # each line of evidence and which way it says the version moved
    rule: str  # the verdict's rule, as the README states it
    config: dict[str, Any]  # the training settings the warnings explain (learning rate, epochs)
    warnings: list[str]
    settings: dict[str, Any]  # the ReportSettings it was computed with
    examples: list[dict[str, Any]]  # the answers that differ most (other people's text: admins only)


# --- small pure measures ----------------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Unique word n-grams / all word n-grams over the answers (1.0 = no n-gram repeats); None without n-grams."""
    grams = [
        tuple(words[i : i + n]) for text in texts for words in [text.lower().split()] for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- computing a report -----------------------------------------------------------------------------------


def _trained_prompts(db: Database, *policies: Version) -> set[str]:
    keys: set[str] = set()
    for policy in policies:
        keys |= ev.trained_prompt_keys(db, policy)
    return keys


def held_out_pairs(db: Database, policy: Version) -> list[dict[str, Any]]:
    """The held-out labeled pairs a version is judged on: those of the evaluation split chosen like its training
    data (same labelers, sources, flags, agreement), so a version trained on one team's labels is judged by that
    team's preference, including labels added after the job. Versions without a job: every held-out pair."""
    filters = ev.job_filters(db, policy, drop=("since", "until", "hold_out_percent"))
    if filters is not None:
        try:
            return ev.held_out_pairs(db, HELD_OUT_PERCENT, filters)
        except StudioError:  # a labeler or version named in the filters is gone: judge on every pair
            pass
    return ev.held_out_pairs(db, HELD_OUT_PERCENT)


def prompts_never_trained(pairs: list[dict[str, Any]], trained: set[str], count: int) -> list[list[dict]]:
    """The first ``count`` prompts a report asks: the held-out pairs' prompts, then seed and report prompts, none
    in ``trained`` (prompt keys)."""
    prompts: dict[str, list[dict]] = {}
    for pair in pairs:
        prompts.setdefault(prompt_key(pair["prompt"]), pair["prompt"])
    for text in ev.seed_prompts() + ev.report_prompts():
        prompt = [{"role": "user", "content": text}]
        key = prompt_key(prompt)
        if key not in trained:
            prompts.setdefault(key, prompt)
    return list(prompts.values())[:count]


def held_out_prompts(db: Database, version: str, against: str, count: int) -> list[list[dict]]:
    """The prompts neither version trained on that a report (and the blind check by people) asks both versions:
    the held-out split's prompts of the version's labels first, then seed prompts never trained on."""
    policy, other = ev.check_pair(db, version, against)
    trained = _trained_prompts(db, policy, other)
    pairs = [p for p in held_out_pairs(db, policy) if prompt_key(p["prompt"]) not in trained]
    return prompts_never_trained(pairs, trained, count)


def compute_report(
    studio: ModelHost,
    version: str,
    against: str | None = None,
    settings: ReportSettings | None = None,
    user: Any = None,
    progress: Progress | None = None,
) -> Report:
    """Measure ``version`` against ``against`` (its parent by default), store the report, return it."""
    settings = (settings or ReportSettings()).validate()
    db = studio.db
    against = against or default_against(db, version)
    policy, other = ev.check_pair(db, version, against)
    trained = _trained_prompts(db, policy, other)
    pairs = [p for p in held_out_pairs(db, policy) if prompt_key(p["prompt"]) not in trained][: settings.max_pairs]
    rows = adapter_names(studio, version, against)
    v_row, a_row = row_adapter(rows, 0), row_adapter(rows, 1)

    # 1. Held-out pairs: both versions score chosen and rejected.
    report_progress(progress, 0.05, f"scoring {len(pairs)} held-out pairs with {version} and {against}")
    m: dict[str, Any] = {
        "version": version,
        "against": against,
        "held_out_pairs": len(pairs),
        "label_signature": label_signature(ev.trained_rows(db, policy)).to_dict(),
    }
    if pairs:
        prompts = [p["prompt"] for p in pairs] * 2
        answers = [p["chosen"][0]["content"] for p in pairs] + [p["rejected"][0]["content"] for p in pairs]
        cut = [bool(p.get("chosen_cut")) for p in pairs] + [bool(p.get("rejected_cut")) for p in pairs]
        lv = sequence_logprobs(studio, [v_row] * len(answers), prompts, answers, cut)
        la = sequence_logprobs(studio, [a_row] * len(answers), prompts, answers, cut)
        n = len(pairs)

        def per_token(lp: list[tuple[float, int]], i: int) -> float:
            return lp[i][0] / max(1, lp[i][1])

        m["accuracy_version"] = ev.preference_accuracy(
            [per_token(lv, i) for i in range(n)], [per_token(lv, n + i) for i in range(n)]
        )
        m["accuracy_against"] = ev.preference_accuracy(
            [per_token(la, i) for i in range(n)], [per_token(la, n + i) for i in range(n)]
        )
        margins = [(lv[i][0] - la[i][0]) - (lv[n + i][0] - la[n + i][0]) for i in range(n)]
        eps = 1e-4  # log-prob noise of identical weights in a batched forward
        m["toward"] = sum(1 for d in margins if d > eps)
        m["away"] = sum(1 for d in margins if d < -eps)
        m["implicit_accuracy"] = (m["toward"] + 0.5 * (n - m["toward"] - m["away"])) / n
        m["mean_margin"] = sum(margins) / n
        m["p_value"] = two_sided(m["toward"], m["away"])
    else:
        m.update(
            accuracy_version=None,
            accuracy_against=None,
            toward=0,
            away=0,
            implicit_accuracy=None,
            mean_margin=None,
            p_value=None,
        )

    # 2. Generations on held-out prompts: every prompt x both versions in one batched call.
    prompts = prompts_never_trained(pairs, trained, settings.prompts)
    sampling = SamplingParams(1.0, 1.0, settings.max_new_tokens).validate()
    report_progress(progress, 0.3, f"{len(prompts)} answers from each version")
    model, tokenizer = studio.model()
    studio.share_cpu()

    def step(snapshot: StreamSnapshot) -> None:  # progress by the rows finished and the longest row's length
        finished = sum(snapshot.done) / max(1, len(snapshot.done))
        longest = max(snapshot.new_tokens, default=0) / max(1, settings.max_new_tokens)
        report_progress(
            progress,
            0.3 + 0.55 * max(finished, longest),
            f"{len(prompts)} answers from each version: {sum(snapshot.done)} of {len(snapshot.done)} done",
        )

    answers = generate_batch(
        model,
        tokenizer,
        prompts * 2,
        sampling,
        [v_row] * len(prompts) + [a_row] * len(prompts) if rows else None,
        settings.seed,
        on_step=step if progress is not None else None,
    )
    n_prompts = len(prompts)
    samples: list[dict[str, Any]] = [
        {
            "prompt": prompt,
            "version": answers[i][0],
            "against": answers[n_prompts + i][0],
            "tokens_version": answers[i][1],
            "tokens_against": answers[n_prompts + i][1],
            "cut_version": answers[i].cut,
            "cut_against": answers[n_prompts + i].cut,
        }
        for i, prompt in enumerate(prompts)
    ]
    m["prompts"] = len(samples)
    if samples:
        report_progress(progress, 0.85, f"KL of {version} to {against}")
        texts = [s["version"] for s in samples]
        sample_prompts = [s["prompt"] for s in samples]
        cut = [s["cut_version"] for s in samples]  # the end-of-turn a cut sample never wrote is not in its KL
        own = sequence_logprobs(studio, [v_row] * len(texts), sample_prompts, texts, cut)
        theirs = sequence_logprobs(studio, [a_row] * len(texts), sample_prompts, texts, cut)
        tokens = sum(t for _, t in own)
        m["kl_per_token"] = sum(o - t for (o, _), (t, _) in zip(own, theirs)) / max(1, tokens)
        m["length_version"] = _mean([s["tokens_version"] for s in samples])
        m["length_against"] = _mean([s["tokens_against"] for s in samples])
        m["cut_version"] = _mean([float(s["cut_version"]) for s in samples])  # stopped at max_new_tokens
        m["cut_against"] = _mean([float(s["cut_against"]) for s in samples])
        m["max_new_tokens"] = settings.max_new_tokens
        m["refusal_version"] = _mean([float(is_refusal(s["version"])) for s in samples])
        m["refusal_against"] = _mean([float(is_refusal(s["against"])) for s in samples])
        m["distinct2_version"] = distinct_n([s["version"] for s in samples])
        m["distinct2_against"] = distinct_n([s["against"] for s in samples])
        m["movement"] = [
            t.to_dict() for t in paired_tests([s["version"] for s in samples], [s["against"] for s in samples])
        ]
    m["reward_model"], m["win_rate"] = None, None
    reward_models = ev.reward_models(db)
    if reward_models and samples:
        report_progress(progress, 0.92, f"judging both versions' answers with {reward_models[0]}")
        scorer = RewardScorer.load(db, reward_models[0])
        sample_prompts = [s["prompt"] for s in samples]
        mine = scorer.score(sample_prompts, [s["version"] for s in samples])
        theirs_scores = scorer.score(sample_prompts, [s["against"] for s in samples])
        m["reward_model"] = reward_models[0]
        m["win_rate"] = ev.preference_accuracy(mine, theirs_scores)
        m["style_control"] = {
            "reward_model": version_vs_style(
                [
                    Comparison(version, against, s["version"], s["against"], 1.0 if a > b else 0.0 if a < b else 0.5)
                    for s, a, b in zip(samples, mine, theirs_scores)
                ],
                version,
            )
        }

    for s in samples:
        s["difference"] = round(1.0 - word_overlap(s["version"], s["against"]), 3)
    examples = sorted(samples, key=lambda s: -s["difference"])[:EXAMPLES]
    m.update(_blind_evidence(db, version, against, m.get("style_control")))
    kind, summary = verdict(m, policy["config"])
    report: Report = {
        "version": version,
        "against": against,
        "verdict": kind,
        "summary": summary,
        "metrics": m,
        "evidence": [e.to_dict() for e in evidence(m)],
        "rule": VERDICT_RULE,
        "config": {k: v for k, v in (policy["config"] or {}).items() if k in ("learning_rate", "num_train_epochs")},
        "warnings": drift_warnings(m),
        "settings": asdict(settings),
        "examples": [
            {
                "prompt": ev.last_user_text(s["prompt"]),
                "answer_version": s["version"],
                "answer_against": s["against"],
                "difference": s["difference"],
            }
            for s in examples
        ],
    }
    report_id = db.write(
        lambda cur: one_value(
            cur.execute(
                "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                [policy["id"], other["id"], kind, summary, json.dumps(report), getattr(user, "id", None)],
            )
        )
    )
    report_progress(progress, 1.0, summary)
    return {**report, "id": report_id}


# --- reading reports --------------------------------------------------------------------------------------


THOROUGH = ("prompts", "max_new_tokens", "max_pairs")  # the settings that make a report's evidence larger
QUICK_REPORT = (
    "A quick report: measured on fewer prompts, shorter answers or fewer held-out pairs than the defaults. The "
    "release gate, the badges and the model card read the newest report measured at least as thoroughly."
)


def thorough(report: Report) -> bool:
    """Measured at least as thoroughly as the defaults every report after a job uses (as many prompts, answers as
    long, as many held-out pairs). A quick report asked for on demand (say 12 prompts) is shown where it was asked
    for, but the verdict the studio acts on (the release gate, the badge, the model card) rests on a thorough one.
    Reports stored before their settings were kept count as thorough: they were the automatic ones."""
    settings, defaults = report.get("settings") or {}, asdict(ReportSettings())
    return all(settings.get(name, defaults[name]) >= defaults[name] for name in THOROUGH)


def _picked(rows: list[dict[str, Any]], thorough_first: bool) -> tuple[int, Report] | None:
    """The report to read among stored ``rows`` (newest first, each with its JSON ``report``) and its index: the
    newest, or the newest thorough one. Parses only as far as it has to look."""
    first: tuple[int, Report] | None = None
    for i, row in enumerate(rows):
        body = cast(Report, json.loads(row["report"]))
        first = first or (i, body)
        if not thorough_first or thorough(body):
            return i, body
    return first


def latest_report(
    db: Database, version: str, against: str | None = None, thorough_first: bool = False
) -> Report | None:
    """The newest stored report of ``version`` (against ``against``, default: its parent), or None.

    ``thorough_first``: the newest :func:`thorough` report when there is one (what the gate, the badge, the model
    card and the lineage read), so a quick look on demand never replaces the evidence a release rests on."""
    against = against or default_against(db, version)
    rows = db.query(
        "SELECT r.id, r.report, r.created_at FROM version_reports r JOIN policies p ON p.id = r.policy_id"
        " JOIN policies a ON a.id = r.against_id WHERE p.name = ? AND a.name = ? ORDER BY r.id DESC"
        + ("" if thorough_first else " LIMIT 1"),
        [version, against],
    )
    picked = _picked(rows, thorough_first)
    if picked is None:
        return None
    row, body = rows[picked[0]], picked[1]
    report = with_blind_check(db, body)
    safety = safety_change(db, version, against)  # a safety evaluation is run on its own, later: read it at read time
    benchmarks = latest_comparison(db, version, against)  # so are standard benchmarks
    read: Report = {
        **report,
        "id": row["id"],
        "created_at": row["created_at"].isoformat(),
        "thorough": thorough(body),
    }
    if safety:
        read["safety"] = safety
    if benchmarks:
        read["benchmarks"] = benchmarks
    return read


def _blind_evidence(db: Database, version: str, against: str, style: dict[str, Any] | None) -> dict[str, Any]:
    """The blind check's tally and its style control (people's votes between the two, both answers)."""
    blind = blind_check(db, version, against)
    style = {k: v for k, v in (style or {}).items() if k != "blind_check"}
    if blind:
        style["blind_check"] = version_vs_style(people_comparisons(db, [version, against]), version)
    return {"blind_check": blind, "style_control": style or None}


def with_blind_check(db: Database, report: Report) -> Report:
    """The report with the people's blind votes cast since it was computed, and its verdict and warnings
    re-derived from them: the votes come in after the job, the rest of the evidence does not change."""
    m = report["metrics"]
    if blind_check(db, report["version"], report["against"]) == m.get("blind_check"):
        return report
    m = {**m, **_blind_evidence(db, report["version"], report["against"], m.get("style_control"))}
    kind, summary = verdict(m, report.get("config") or {})
    return {
        **report,
        "metrics": m,
        "verdict": kind,
        "summary": summary,
        "warnings": drift_warnings(m),
        "evidence": [e.to_dict() for e in evidence(m)],
    }


def badges(db: Database) -> dict[str, str]:
    """A short badge per version, from its newest thorough report against its parent (:func:`latest_report`):
    "learned · shorter answers", "learned 0.50→0.83" (held-out pairs), "changed", ..."""
    rows = db.query(
        "SELECT v.name, r.report FROM chat_versions v JOIN version_reports r"
        " ON r.policy_id = v.id AND r.against_id = v.against_id ORDER BY r.id DESC"
    )
    stored: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        stored.setdefault(row["name"], []).append(row)
    out = {}
    for name, reports in stored.items():
        picked = _picked(reports, thorough_first=True)
        assert picked is not None
        report = with_blind_check(db, picked[1])
        out[name] = {
            "learned": "learned",
            "no_change": "no change",
            "regressed": "regressed",
            "changed": "changed",
            "mixed": "mixed",
            "unmeasured": "not measured",
        }[report["verdict"]] + _badge_detail(report)
    return out


def _badge_detail(report: Report) -> str:
    """What the verdict rests on, in a few words: " · shorter answers", " · people prefer it", or the held-out
    pairs' log-prob ranking accuracy " 0.50→0.83"."""
    m = report["metrics"]
    for e in report.get("evidence") or []:
        if e["says"] and e["source"].startswith("movement:"):
            return " · " + e["text"].split(" gave ", 1)[1].split(" than ", 1)[0]
        if e["says"] and e["source"] == "blind_check":
            return " · people prefer it" if e["says"] == "toward" else " · people prefer the parent"
    if m.get("accuracy_version") is None:
        return ""
    return f" {figure(m.get('accuracy_against'))}→{figure(m.get('accuracy_version'))}"


def public_view(report: Report) -> dict[str, Any]:
    """A report without other people's text (prompts and answers): what labelers may see."""
    return {k: v for k, v in report.items() if k != "examples"}
