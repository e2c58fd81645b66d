"""What alignment costs: standard benchmarks per version through lm-evaluation-harness (``lm-eval``).

Preference training can quietly cost general ability (users of fine-tuning tools report GSM8K and MMLU drops after
LoRA DPO). The studio runs the harness itself, on its Hugging Face backend, and guards against its two known traps:

* an adapter silently ignored: the model handed to the harness is the base with the version's adapter merged in,
  and before any score counts, its logits on a probe prompt must differ from the base's as much as the adapter's
  weights say they should (a zero adapter is reported as identical to the base; an ignored one is refused);
* scores that swing with settings: every result records the lm-eval version, each task's version, the few-shot
  count, whether the chat template was applied, the limit and the seed, and a parent is compared with its child
  only under identical settings (its run is cached by a hash of them).

Tasks: any lm-eval task name (ifeval, mmlu subsets, gsm8k, arc_easy, hellaswag, ...) where datasets can be
downloaded, and the shipped offline suite ``studio-offline`` (assets/benchmarks/studio-offline: lm-eval task
configs over data written for the studio), the default and what the tests run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import ASSETS
from core.errors import StudioError, ValidationError
from core.serving.host import ModelHost
from core.serving.models import LOAD_LOCK
from core.serving.policies import BASE_POLICY, comparable_policy, default_against
from storage.db import Database, one_value

SUITE_DIR = ASSETS / "benchmarks" / "studio-offline"
OFFLINE_SUITE = "studio-offline"
PROBE = "The capital of France is"
REGRESSION_MARGIN_POINTS = 2.0

Progress = Callable[[float, str], None]


class AdapterNotApplied(StudioError):
    """The model the harness would score does not carry the version's adapter: its scores would be the base's."""

    code = "adapter_not_applied"
    http_status = 422


@dataclass(frozen=True)
class BenchSettings:
    """How a benchmark run is done; a version and its parent are compared only when these are identical."""

    tasks: tuple[str, ...] = field(
        default=(OFFLINE_SUITE,),
        metadata={
            "help": "lm-eval task or group names: studio-offline (shipped, offline) or any lm-eval task (ifeval, "
            "arc_easy, gsm8k, mmlu subsets...) where the machine can download its dataset."
        },
    )
    limit: int | None = field(
        default=None, metadata={"help": "At most this many examples per task (a quick look; scores are noisier)."}
    )
    num_fewshot: int | None = field(
        default=None,
        metadata={"help": "Few-shot examples per prompt (default: each task's own setting, 0 for studio-offline)."},
    )
    chat_template: bool = field(
        default=True,
        metadata={"help": "Apply the model's chat template to prompts (the studio's policies are chat models)."},
    )
    seed: int = field(default=1234, metadata={"help": "Seed of the harness's sampling and few-shot choice."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass (does not change scores)."})

    def recorded(self) -> dict[str, Any]:
        """What a result records about how it was made (batch size changes speed, not scores: left out)."""
        from lm_eval import __version__ as lm_eval_version

        out = asdict(self)
        out.pop("batch_size")
        return {**out, "tasks": list(self.tasks), "lm_eval_version": lm_eval_version}

    def key(self) -> str:
        return settings_key(self.recorded())


def settings_key(recorded: dict[str, Any]) -> str:
    """The hash that says two runs were made the same way (and so may be compared)."""
    return hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()


# --- the model the harness scores ----------------------------------------------------------------------------


def adapter_delta_norm(peft_model: Any) -> float:
    """How much the adapter changes the weights: the Frobenius norm of every LoRA module's B·A·scaling, summed.
    Zero for a freshly initialised (or zeroed) adapter: then the version is the base."""
    import torch

    total = 0.0
    with torch.no_grad():
        for module in peft_model.modules():
            if not hasattr(module, "lora_A") or not hasattr(module, "lora_B"):
                continue
            for name, a in module.lora_A.items():
                delta = module.lora_B[name].weight @ a.weight * module.scaling[name]
                total += float(delta.float().norm())
    return total


def probe_logits(model: Any, tokenizer: Any) -> Any:
    import torch

    ids = tokenizer(PROBE, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        return model(ids).logits[0, -1].float().cpu()


def load_scored_model(model_path: str | Path, adapter_path: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, guard facts): the base with the adapter merged in, and the base's probe logits taken from
    the same weights with the adapter switched off, so the guard compares like with like."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    with LOAD_LOCK:  # the benchmark worker runs beside the chat model's loads: one model load at a time
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).eval()
    if adapter_path is None:
        return model, tokenizer, {"adapter_applied": None, "identical_to_base": True}
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, adapter_path).eval()
    with peft_model.disable_adapter():
        base_logits = probe_logits(peft_model, tokenizer)
    facts = {"adapter_delta_norm": adapter_delta_norm(peft_model), "base_probe": base_logits}
    return peft_model.merge_and_unload().eval(), tokenizer, facts


def check_adapter_applied(scored_model: Any, tokenizer: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """The guard: the model the harness holds must answer the probe differently from the base when the adapter's
    weights are not zero. Returns what the result records; raises :class:`AdapterNotApplied` when it is ignored."""
    if "base_probe" not in facts:
        return {"adapter_applied": None, "identical_to_base": True, "note": "the base has no adapter"}
    diff = float((probe_logits(scored_model, tokenizer) - facts["base_probe"]).abs().max())
    delta = facts["adapter_delta_norm"]
    if delta == 0.0:
        return {
            "adapter_applied": True,
            "identical_to_base": True,
            "adapter_delta_norm": 0.0,
            "probe_max_logit_diff": diff,
            "note": "the adapter's weights are zero: this version is the base, its scores are the base's",
        }
    if diff < 1e-6:
        raise AdapterNotApplied(
            f"The benchmark model answers the probe exactly like the base although the adapter changes the weights "
            f"(norm {delta:.3g}): the adapter is not applied, so no score is reported",
            hint="check the version's adapter files (adapter_config.json target modules) and the backend",
        )
    return {
        "adapter_applied": True,
        "identical_to_base": False,
        "adapter_delta_norm": round(delta, 6),
        "probe_max_logit_diff": round(diff, 6),
    }


# --- runs -----------------------------------------------------------------------------------------------------


def task_manager(tasks: tuple[str, ...]) -> Any:
    """The harness's task index: the shipped suite, plus lm-eval's own tasks when any other name is asked for
    (indexing those takes seconds, so the offline suite alone skips it)."""
    from lm_eval.tasks import TaskManager

    own = {OFFLINE_SUITE} | {p.stem for p in SUITE_DIR.glob("studio_*.yaml")}
    return TaskManager(include_path=str(SUITE_DIR), include_defaults=not set(tasks) <= own)


def parse_results(out: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task and metric: value and standard error as the harness reports them (groups left out)."""
    rows = []
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                {
                    "task": task,
                    "task_version": out.get("versions", {}).get(task),
                    "metric": metric,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "n": out.get("n-samples", {}).get(task, {}).get("effective"),
                    "num_fewshot": out.get("n-shot", {}).get(task),
                }
            )
    return rows


def evaluate(
    model_path: str | Path, adapter_path: str | None, settings: BenchSettings, progress: Progress | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(adapter guard, results) of one model: the harness's HF backend on the base with the adapter merged."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    report = progress or (lambda fraction, text: None)
    # the harness warns that a model object skips its loading options: true, and nothing a user can act on
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    report(0.05, "loading the model")
    model, tokenizer, facts = load_scored_model(model_path, adapter_path)
    batches = [0]

    class StudioHFLM(HFLM):
        """The harness's HF model, reporting each forward pass: a progress line, and a point where a cancel (or a
        studio shutting down) stops the run, raised from the progress callback."""

        def _model_call(self, *args: Any, **kwargs: Any) -> Any:
            batches[0] += 1
            report(0.2, f"scoring: {batches[0]} batches of {settings.batch_size} done")
            return super()._model_call(*args, **kwargs)

        def _model_generate(self, *args: Any, **kwargs: Any) -> Any:
            batches[0] += 1
            report(0.6, f"generating answers: {batches[0]} batches done")
            return super()._model_generate(*args, **kwargs)

    lm = StudioHFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    guard = check_adapter_applied(lm.model, tokenizer, facts)
    report(0.15, f"running {', '.join(settings.tasks)} through lm-evaluation-harness")
    try:
        out = simple_evaluate(
            model=lm,
            tasks=list(settings.tasks),
            task_manager=task_manager(settings.tasks),
            limit=settings.limit,
            num_fewshot=settings.num_fewshot,
            apply_chat_template=settings.chat_template,
            log_samples=False,
            bootstrap_iters=1000,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
            verbosity="ERROR",
        )  # its per-task notes are for its own CLI, not the studio's log
    except (KeyError, ValueError) as exc:
        raise ValidationError(
            f"lm-evaluation-harness could not run {', '.join(settings.tasks)}: {exc}",
            hint="use studio-offline, or lm-eval task names (`lm-eval ls tasks`) whose datasets "
            "this machine can download",
        ) from None
    except (ConnectionError, OSError) as exc:
        raise ValidationError(
            f"A task's dataset could not be loaded: {exc}",
            hint="this machine may be offline: studio-offline runs without a network",
        ) from None
    return guard, parse_results(out or {"results": {}})


def run_benchmark(
    db: Database,
    model_path: str | Path,
    version: str,
    settings: BenchSettings,
    user: Any = None,
    progress: Progress | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """The version's latest run with these settings, or a new one (stored). A failed run is stored as failed."""
    policy = comparable_policy(db, version)
    key = settings.key()
    if not refresh:
        cached = latest_benchmark(db, version, key)
        if cached is not None:
            return {**cached, "cached": True}
    run_id = db.write(
        lambda cur: one_value(
            cur.execute(
                "INSERT INTO benchmark_runs (policy_id, version, settings_key, settings, status, created_by)"
                " VALUES (?, ?, ?, ?, 'running', ?) RETURNING id",
                [policy["id"], policy["name"], key, json.dumps(settings.recorded()), getattr(user, "id", None)],
            )
        )
    )
    started = time.monotonic()
    try:
        guard, results = evaluate(model_path, policy["adapter_path"], settings, progress)
    except BaseException as exc:
        message = exc.message if isinstance(exc, StudioError) else f"{type(exc).__name__}: {exc}"
        db.write(
            lambda cur: cur.execute(
                "UPDATE benchmark_runs SET status = 'failed', error = ?, seconds = ? WHERE id = ?",
                [message, time.monotonic() - started, run_id],
            )
        )
        raise
    db.write(
        lambda cur: cur.execute(
            "UPDATE benchmark_runs SET status = 'done', adapter = ?, results = ?, seconds = ? WHERE id = ?",
            [json.dumps(guard), json.dumps(results), time.monotonic() - started, run_id],
        )
    )
    latest = latest_benchmark(db, version, key)
    assert latest is not None  # the run just stored it
    return {**latest, "cached": False}


def latest_benchmark(db: Database, version: str, key: str | None = None) -> dict[str, Any] | None:
    """The newest finished run of ``version`` (with settings ``key`` when given)."""
    rows = db.query(
        "SELECT b.id, b.version, b.settings, b.adapter, b.results, b.seconds, b.created_at FROM benchmark_runs b"
        " JOIN policies p ON p.id = b.policy_id WHERE p.name = ? AND p.deleted_at IS NULL AND b.status = 'done'"
        + (" AND b.settings_key = ?" if key else "")
        + " ORDER BY b.id DESC LIMIT 1",
        [version, key] if key else [version],
    )
    if not rows:
        return None
    row = rows[0]
    return {
        "id": row["id"],
        "version": row["version"],
        "settings": json.loads(row["settings"]),
        "adapter": json.loads(row["adapter"]),
        "results": json.loads(row["results"]),
        "seconds": row["seconds"],
        "created_at": row["created_at"].isoformat(),
    }


def compare(
    version_run: dict[str, Any], against_run: dict[str, Any], margin_points: float = REGRESSION_MARGIN_POINTS
) -> list[dict[str, Any]]:
    """Per task and metric: the version's and the parent's value and stderr, the change in points, and whether it
    is a regression (a drop of more than max(margin, 2 x the combined standard error), in points)."""
    theirs = {(r["task"], r["metric"]): r for r in against_run["results"]}
    rows = []
    for mine in version_run["results"]:
        other = theirs.get((mine["task"], mine["metric"]))
        if other is None:
            continue
        change = 100 * (mine["value"] - other["value"])
        errors = [e for e in (mine["stderr"], other["stderr"]) if e is not None]
        noise = 100 * 2 * (sum(e * e for e in errors) ** 0.5) if errors else 0.0
        rows.append(
            {
                "task": mine["task"],
                "metric": mine["metric"],
                "value": mine["value"],
                "n": mine.get("n"),
                "stderr": mine["stderr"],
                "against_value": other["value"],
                "against_stderr": other["stderr"],
                "change_points": round(change, 2),
                "threshold_points": round(max(margin_points, noise), 2),
                "regressed": change < -max(margin_points, noise),
            }
        )
    return rows


def benchmark_version(
    db: Database,
    model_path: str | Path,
    version: str,
    settings: BenchSettings | None = None,
    against: str | None = None,
    user: Any = None,
    progress: Progress | None = None,
    margin_points: float | None = None,
) -> dict[str, Any]:
    """Benchmark a version and its parent (cached) with identical settings; flag regressions (the margin: the
    admin's setting unless given)."""
    settings = settings or BenchSettings()
    margin_points = regression_margin(db) if margin_points is None else margin_points
    report = progress or (lambda fraction, text: None)
    comparable_policy(db, version)
    against = against or (default_against(db, version) if version != BASE_POLICY else None)
    parent = None
    if against:
        parent = run_benchmark(db, model_path, against, settings, user, lambda f, t: report(0.5 * f, f"{against}: {t}"))
    mine = run_benchmark(db, model_path, version, settings, user, lambda f, t: report(0.5 + 0.5 * f, f"{version}: {t}"))
    rows = compare(mine, parent, margin_points) if parent else []
    report(1.0, "done")
    return {
        "version": version,
        "against": against,
        "settings": mine["settings"],
        "adapter_applied": mine["adapter"].get("adapter_applied"),
        "adapter": mine["adapter"],
        "parent_cached": bool(parent and parent["cached"]),
        "seconds": mine["seconds"],
        "tasks": rows or [{**r, "against_value": None, "against_stderr": None} for r in mine["results"]],
        "regressions": [r for r in rows if r["regressed"]],
        "margin_points": margin_points,
    }


MARGIN_KEY = "benchmark_margin_points"  # studio_kv: the admin-set regression margin


def regression_margin(db: Database) -> float:
    """The regression margin in points: an admin's setting (Compare page → Benchmarks), else 2."""
    value = db.scalar("SELECT value FROM studio_kv WHERE key = ?", [MARGIN_KEY])
    return float(value) if value is not None else REGRESSION_MARGIN_POINTS


def set_regression_margin(db: Database, admin: Any, points: float) -> float:
    """Admins set the margin (0-50 points); every comparison, the release gate and the model card use it."""
    from core.errors import PermissionDenied

    if not getattr(admin, "is_admin", False):
        raise PermissionDenied("Only admins can change the regression margin", hint="ask an admin")
    if not 0 <= points <= 50:
        raise ValidationError(f"A margin of {points} points is out of range", hint="use 0 to 50 points")

    def save(cur: Any) -> None:
        cur.execute(
            "INSERT INTO studio_kv (key, value, updated_by) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value, updated_by = excluded.updated_by, updated_at = now()",
            [MARGIN_KEY, str(float(points)), admin.id],
        )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, details) VALUES (?, 'edit', ?, ?)",
            [admin.id, MARGIN_KEY, json.dumps({"points": float(points)})],
        )

    db.write(save)
    return float(points)


def latest_comparison(
    db: Database, version: str, against: str | None = None, margin_points: float | None = None
) -> dict[str, Any] | None:
    """The version's newest benchmark run beside its parent's run with the same settings (None: not measured);
    what the release gate, the model card and the API read. The margin: the admin's setting unless given."""
    margin_points = regression_margin(db) if margin_points is None else margin_points
    mine = latest_benchmark(db, version)
    if mine is None:
        return None
    against = against or (default_against(db, version) if version != BASE_POLICY else None)
    parent = latest_benchmark(db, against, settings_key(mine["settings"])) if against else None
    rows = compare(mine, parent, margin_points) if parent else []
    return {
        "version": version,
        "against": against if parent else None,
        "settings": mine["settings"],
        "adapter_applied": mine["adapter"].get("adapter_applied"),
        "adapter": mine["adapter"],
        "created_at": mine["created_at"],
        "seconds": mine["seconds"],
        "tasks": rows or [{**r, "against_value": None, "against_stderr": None} for r in mine["results"]],
        "regressions": [r for r in rows if r["regressed"]],
        "margin_points": margin_points,
    }


def mark_interrupted(db: Database) -> int:
    """Runs left 'running' by a studio that stopped mid-run: they will never finish (a new run starts afresh)."""
    return db.write(
        lambda cur: one_value(
            cur.execute(
                "UPDATE benchmark_runs SET status = 'interrupted',"
                " error = 'the studio stopped during the run'"
                " WHERE status = 'running'"
            )
        )
    )


def benchmark_in_background(
    studio: ModelHost,
    version: str,
    against: str | None = None,
    user: Any = None,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The studio's background worker's task (core.compare.worker), like the safety evaluation."""
    values: dict[str, Any] = {k: tuple(v) if k == "tasks" else v for k, v in options.items()}
    settings = BenchSettings(**values)
    studio.share_cpu()
    return benchmark_version(studio.db, studio.model_path, version, settings, against or None, user, progress)
