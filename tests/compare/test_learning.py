"""The loop must learn: defaults chosen from the data, held-out evaluation and early stopping while training, and
the "what changed" report -- on the tiny model with real TRL jobs, the real DuckDB, the real server and the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.harness.processes import free_port
from core.compare import evaluation as ev
from core.compare.report import (
    QUICK_REPORT,
    ReportSettings,
    badges,
    compute_report,
    distinct_n,
    latest_report,
    prompts_never_trained,
)
from core.compare.safety import is_refusal
from core.compare.signature import FEATURE_NAMES, sign_test
from core.compare.verdict import drift_warnings
from core.config import load_settings
from core.data.split import HELD_OUT_PERCENT, prompt_bucket, prompt_key
from core.errors import ValidationError
from core.labeling.identity import ensure_user
from core.labeling.votes import Vote, submit_labeled_pair
from core.serving.models import build_tiny_model
from core.serving.policies import register_policy
from core.studio import Studio
from core.training import ALGORITHMS
from core.training.callbacks import selection_score
from core.training.defaults import plan_defaults
from core.training.request import JobRequest
from tests.support import ROOT
from tests.support.servers import Server
from tests.support.studios import users_file

MARKER = "Sure thing! Banana banana banana."


# --- the defaults rule --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm, n, finetune, epochs, steps, lr, accumulation",
    [
        ("dpo", 80, "lora", 4, 40, 5e-4, 4),  # the case: 80 pairs -> ~40 steps at a LoRA rate
        ("dpo", 12, "lora", 7, 42, 5e-4, 1),  # tiny set: small batches, many epochs
        ("dpo", 3, "lora", 8, 16, 5e-4, 1),  # capped at MAX_EPOCHS
        ("dpo", 300, "lora", 2, 76, 4e-4, 4),  # the rate falls with sqrt(steps)
        ("dpo", 100_000, "lora", 1, 12_500, 5e-5, 4),  # large data keeps the old figures: 1 epoch, 5e-5
        ("dpo", 80, "full", 4, 40, 5e-6, 4),  # full fine-tuning: ~100x lower than LoRA
        ("sft", 64, "lora", 5, 40, 3e-4, 4),
        ("reward", 1000, "lora", 1, 125, 2e-4, 4),
        ("kto", 160, "lora", 2, 40, 5e-4, 4),
        ("orpo", 80, "lora", 4, 40, 5e-4, 4),
        ("online_rl", 12, "lora", 2, 24, 5e-5, 1),  # fewer, costlier steps
    ],
)
def test_defaults_follow_the_data_size(algorithm, n, finetune, epochs, steps, lr, accumulation):
    overrides = {} if finetune == "lora" else {"finetune": finetune}
    plan = plan_defaults(ALGORITHMS[algorithm].config_class, n, overrides)
    values = plan.values
    assert (values["num_train_epochs"], plan.steps, values["learning_rate"], values["gradient_accumulation_steps"]) == (
        epochs,
        steps,
        lr,
        accumulation,
    )
    assert values["warmup_ratio"] == 0.1 and values["save_steps"] == -(-steps // 8)
    cfg = ALGORITHMS[algorithm].config_class.from_dict(values)
    cfg.validate()
    assert cfg.planned_steps(n) == steps
    assert all(s.reason for s in plan.settings)


def test_every_chosen_value_has_a_reason_and_user_values_win():
    plan = plan_defaults(ALGORITHMS["dpo"].config_class, 64, {"learning_rate": 1e-5, "num_train_epochs": 2})
    assert plan.summary == "64 pairs: 2 epochs -> 16 steps, lr 1e-05 for LoRA r=16"
    by_name = {s.name: s for s in plan.settings}
    assert by_name["learning_rate"].source == by_name["num_train_epochs"].source == "user"
    assert by_name["gradient_accumulation_steps"].reason.startswith("64 pairs: effective batch 8")
    # the rest is derived from the user's values: 16 steps -> evaluate every 2
    assert plan.values["save_steps"] == 2 and by_name["save_steps"].source == "auto"
    with pytest.raises(Exception, match="unknown hyperparameter"):
        plan_defaults(ALGORITHMS["dpo"].config_class, 64, {"learnin_rate": 1e-5})


def test_selection_score_prefers_accuracy_then_lower_loss():
    assert (
        selection_score({"eval_rewards/accuracies": 0.75, "eval_loss": 0.5})
        > selection_score({"eval_rewards/accuracies": 0.75, "eval_loss": 0.6})
        > selection_score({"eval_rewards/accuracies": 0.70, "eval_loss": 0.01})
    )
    assert selection_score({"eval_loss": 0.5}) == -0.5 and selection_score({}) is None


def test_the_verdict_says_what_the_held_out_pairs_can_and_cannot_tell():
    from core.compare.verdict import pairs_needed, verdict

    base = {"held_out_pairs": 19, "accuracy_against": 0.63, "accuracy_version": 0.68}
    assert verdict({**base, "toward": 15, "away": 4, "kl_per_token": 0.2})[0] == "learned"
    assert verdict({**base, "toward": 3, "away": 15, "kl_per_token": 0.2})[0] == "regressed"
    kind, text = verdict({**base, "toward": 12, "away": 7, "kl_per_token": 0.3})  # the bench's "concise" v1
    assert kind == "changed" and text.startswith("changed, but not toward your labels: KL 0.30")
    assert "p = 0.36" in text and f"about {pairs_needed(12, 19)} held-out pairs" in text and pairs_needed(12, 19) > 19
    # a weak lean (4 of 7) would "need" 184 held-out pairs: no such figure, just that the lean is weak
    kind, text = verdict({"held_out_pairs": 7, "toward": 4, "away": 3, "kl_per_token": 0.07})
    assert kind == "changed" and text.endswith("the held-out pairs barely lean toward the labels (4 of 7)")
    assert "label about" not in text
    kind, text = verdict({**base, "toward": 0, "away": 0, "kl_per_token": 0.0}, {"learning_rate": 5e-4})
    assert text.startswith("no measurable change") and "raise learning_rate from 5e-04 to 2e-03" in text
    assert verdict({"held_out_pairs": 0})[0] == "unmeasured"
    assert pairs_needed(5, 10) is None and pairs_needed(10, 10) == 10


def preference(feature: str, more: int, less: int, direction: int) -> dict:
    return {"feature": feature, "more": more, "less": less, "ties": 0, "direction": direction}


def test_a_version_that_moved_the_way_its_labels_prefer_is_learned_even_with_few_held_out_pairs():
    """The issue's case: 44 labels that prefer shorter answers, 7 held-out pairs (p = 0.23 alone), v1's answers
    shorter than base's on 22 of 24 prompts: learned, with no "label more" in the line."""
    from core.compare.verdict import evidence, verdict

    m = {
        "version": "v1",
        "against": "base",
        "held_out_pairs": 7,
        "toward": 5,
        "away": 2,
        "kl_per_token": 0.2,
        "label_signature": {"pairs": 44, "tests": [preference("length", 3, 41, -1), preference("emoji", 1, 0, 0)]},
        "movement": [preference("length", 2, 22, -1), preference("emoji", 0, 0, 0)],
    }
    kind, text = verdict(m)
    assert kind == "learned" and "label" not in text.split("(your labels")[0]
    assert text.startswith(
        "learned: v1 gave shorter answers than base on 22 of 24 prompts (your labels prefer "
        "shorter answers: 41 of 44 pairs, 3 the other way)"
    )
    assert [e.source for e in evidence(m) if e.says] == ["movement:length"]
    # the same move against the labels: regressed; along a feature the labels do not care about: changed
    flipped = {**m, "movement": [preference("length", 22, 2, 1)], "toward": 2, "away": 5}
    assert verdict(flipped)[0] == "regressed"
    unrelated = {**m, "label_signature": {"pairs": 44, "tests": [preference("length", 20, 24, 0)]}}
    kind, text = verdict(unrelated)
    assert kind == "changed" and "v1 gave shorter answers than base on 22 of 24 prompts" in text
    # the labels prefer shorter answers but the version barely moved that way (the bench's 12-07 concise run):
    # "changed", saying what the labels prefer and how little the version followed -- never "no preference"
    unmoved = {**m, "movement": [preference("length", 10, 14, 0)]}
    kind, text = verdict(unmoved)
    assert kind == "changed" and "not measurably along what your labels prefer: v1 gave shorter" in text
    assert "14 of 24 prompts" in text and "no measurable preference" not in text
    # both ways at once
    both = {**m, "toward": 0, "away": 19, "held_out_pairs": 19}
    assert verdict(both)[0] == "mixed"


def test_a_coin_flip_labeler_is_never_called_learned():
    """Random labels, a version that moved anyway (KL 0.2): 200 simulated controls, none "learned" more often than
    the 5% the tests allow (Holm keeps the family-wise error at the level)."""
    from core.compare.signature import label_signature, paired_tests
    from core.compare.verdict import verdict

    rng = random.Random(7)

    def answer() -> str:
        text = " ".join(rng.choice(["word", "you", "maybe", "42", "Sure!", "list"]) for _ in range(rng.randint(3, 60)))
        return text + ("\n\n- a\n- b" if rng.random() < 0.3 else "")

    learned = 0
    for _ in range(200):
        rows = [{"chosen": answer(), "rejected": answer()} for _ in range(40)]
        held = 8
        toward = sum(rng.random() < 0.5 for _ in range(held))
        m = {
            "version": "v1",
            "against": "base",
            "held_out_pairs": held,
            "toward": toward,
            "away": held - toward,
            "kl_per_token": 0.2,
            "label_signature": label_signature(rows).to_dict(),
            "movement": [
                t.to_dict() for t in paired_tests([answer() for _ in range(24)], [answer() for _ in range(24)])
            ],
        }
        learned += verdict(m)[0] == "learned"
    assert learned <= 10


def test_report_measures():
    assert is_refusal("I'm sorry, but I can't help with that.") and not is_refusal("Sure, here is a recipe.")
    assert distinct_n(["a b a b a b"]) == 0.4 and distinct_n(["one"]) is None
    assert sign_test(10, 10) == 2**-10 and sign_test(0, 0) == 1.0
    warnings = drift_warnings(
        {
            "length_version": 100,
            "length_against": 40,
            "refusal_version": 0.5,
            "refusal_against": 0.1,
            "distinct2_version": 0.3,
            "distinct2_against": 0.9,
            "kl_per_token": 0.9,
            "against": "v1",
        }
    )
    assert [w.split(" ")[0] for w in warnings] == ["answers", "refuses", "answers", "moved"]
    assert "2.5x longer" in warnings[0] and "length hacking" in warnings[0]
    assert drift_warnings({"length_version": 50, "length_against": 45, "kl_per_token": 0.05}) == []
    # 1.7x shorter is what these labels asked for: no warning (the verdict says it moved their way)
    shorter = {
        "length_version": 33,
        "length_against": 57,
        "label_signature": {"tests": [{"feature": "length", "more": 2, "less": 42, "ties": 0, "direction": -1}]},
    }
    assert drift_warnings(shorter) == []
    assert "1.7x shorter" in drift_warnings({**shorter, "label_signature": {}})[0]
    # most answers stopped at the length limit: their lengths are capped, and the report says so
    capped = {"version": "v1", "against": "base", "cut_version": 0.75, "cut_against": 0.5, "max_new_tokens": 256}
    assert drift_warnings(capped) == [
        "75% of v1's and 50% of base's answers stopped at the 256-token limit: lengths (and the length the labels "
        "may have taught) are measured on cut answers; a report with a higher max_new_tokens shows how long they "
        "really run"
    ]
    assert drift_warnings({**capped, "cut_version": 0.25, "cut_against": 0.4}) == []


def test_the_console_suggests_a_first_run_then_the_next_round(tmp_path):
    from core.training.suggest import FIRST_JOB_PAIRS, suggest_next_job
    from storage.db import Database

    db = Database.in_data_dir(tmp_path)
    ensure_user(db, "ada", "admin", "t")
    first = suggest_next_job(db)
    assert not first.ready and first.needed == FIRST_JOB_PAIRS and first.parent == "base"
    label_pairs(db, 25)
    assert suggest_next_job(db).needed == FIRST_JOB_PAIRS - 25 and "15 more" in suggest_next_job(db).text
    label_pairs(db, 20, start=25)
    ready = suggest_next_job(db)
    assert ready.ready and ready.needed == 0 and ready.request.algorithm == "dpo" and ready.request.hyperparams == {}
    assert ready.request.filters.hold_out_percent == HELD_OUT_PERCENT
    db.close()


# --- a studio with a clear preference -----------------------------------------------------------------------


def label_pairs(db, n: int, start: int = 0, held_out_prefers_marker: bool = True) -> None:
    """n pairs, one per prompt: the answer with MARKER wins (on held-out prompts: as ``held_out_prefers_marker``).
    A and B sides are shuffled, so the side never predicts the label."""
    ada = ensure_user(db, "ada", "admin", "t")
    rng = random.Random(start)
    for i in range(start, start + n):
        prompt = f"Tell me fact number {i}."
        good, bad = f"{MARKER} Answer {i}.", f"Answer {i}, plain."
        held = prompt_bucket([{"role": "user", "content": prompt}]) < HELD_OUT_PERCENT
        if held and not held_out_prefers_marker:
            good, bad = bad, good
        a_wins = rng.random() < 0.5
        submit_labeled_pair(
            db, ada, prompt, good if a_wins else bad, bad if a_wins else good, Vote(0, 0, "a" if a_wins else "b")
        )


def open_studio(data_dir: Path) -> Studio:
    return Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """v1: DPO with the studio's defaults on 100 marker pairs; v2: an untrained copy of the base (zero LoRA)."""
    data_dir = tmp_path_factory.mktemp("learning") / "data"
    studio = open_studio(data_dir)
    studio.reports.stop()  # reports are computed in the tests, in the foreground
    label_pairs(studio.db, 100)
    admin = ensure_user(studio.db, "ada", "admin", "t")
    request = JobRequest("dpo", "base", {"max_length": 64})  # only the sequence length, for speed
    dry = studio.supervisor.dry_run(request)
    job = studio.supervisor.run_blocking(studio.supervisor.submit(request, admin))
    assert job["status"] == "succeeded", job["error"]
    copy = data_dir / "untrained-copy"
    zero_adapter(studio.model_path, copy)
    register_policy(studio.db, "v2", studio.base_policy_id, "tiny", "dpo", str(copy), config={})
    yield studio, dry, job
    studio.close()


@pytest.fixture(scope="module")
def v1_report(learned):
    """v1's report against base, computed once (a report answers 48 prompts twice): the tests read it, the pages
    and the CLI find it stored."""
    studio, _, _ = learned
    return compute_report(studio, "v1")


def test_a_report_has_its_48_prompts_after_the_user_labeled_every_seed_prompt():
    """The seed prompts are also the first labeling queue: once all were trained on, the report's own pool gives it
    the prompts it needs, none of them trained on, and the held-out split's prompts come first."""
    trained = {prompt_key([{"role": "user", "content": text}]) for text in ev.seed_prompts()}
    held_out = {"prompt": [{"role": "user", "content": "A held-out question?"}]}
    prompts = prompts_never_trained([held_out], trained, ReportSettings().prompts)
    assert len(prompts) == 48 and prompts[0] == held_out["prompt"]
    assert not {prompt_key(p) for p in prompts} & trained
    assert len({prompt_key(p) for p in prompts}) == 48


def test_report_settings_chosen_on_demand_keep_the_defaults_for_the_rest_and_refuse_out_of_range():
    chosen = ReportSettings.chosen(prompts=96, max_new_tokens=None, max_pairs=None, seed=7)
    assert chosen == ReportSettings(prompts=96, seed=7) and chosen.max_new_tokens == ReportSettings().max_new_tokens
    for wrong in ({"prompts": 0}, {"prompts": 201}, {"max_new_tokens": 2048}, {"seed": -1}):
        with pytest.raises(ValidationError, match="is out of range") as raised:
            ReportSettings.chosen(**wrong)
        assert raised.value.code == "invalid_input" and "choose" in raised.value.hint


def zero_adapter(base: Path, out: Path) -> Path:
    """A real LoRA adapter that changes nothing (PEFT's default init: B = 0)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(out)
    return out


@pytest.mark.slow
def test_the_dry_run_explains_the_defaults_and_holds_out_an_evaluation_split(learned):
    _, dry, job = learned
    assert dry.ok and dry.eval_examples > 10 and dry.skipped["held_out"] == dry.eval_examples
    assert dry.summary.startswith(f"{dry.examples} pairs: ") and "lr 5e-04 for LoRA r=16" in dry.summary
    chosen = {row["name"]: row for row in dry.settings}
    assert chosen["num_train_epochs"]["source"] == "auto" and "epoch" in chosen["num_train_epochs"]["reason"]
    assert chosen["learning_rate"]["value"] == 5e-4
    run_dir = Path(job["run_dir"])
    assert (run_dir / "data" / "eval.parquet").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hyperparams"]["num_train_epochs"] == chosen["num_train_epochs"]["value"]
    assert job["config"]["plan"] == dry.settings


@pytest.mark.slow
def test_held_out_curves_start_at_the_parent_and_the_best_step_is_kept(learned):
    studio, dry, job = learned
    evals = [
        r
        for r in map(json.loads, (Path(job["run_dir"]) / "metrics.jsonl").read_text().splitlines())
        if "eval_loss" in r
    ]
    assert evals[0]["step"] == 0 and evals[0]["eval_rewards/accuracies"] == 0.0  # policy == reference at step 0
    assert max(r["eval_rewards/accuracies"] for r in evals) >= 0.9
    names = {r["name"] for r in studio.supervisor.metrics([job["id"]])}
    assert {"eval_loss", "eval_rewards/accuracies"} <= names  # the Runs page plots them
    # 22 held-out pairs are too few to rank checkpoints by: the job runs its planned steps and keeps the last
    setup = json.loads((Path(job["run_dir"]) / "result.json").read_text())["setup"]
    assert "kept_step" not in setup and evals[-1]["step"] == dry.estimate["steps"]
    assert "too few to pick a checkpoint" in " ".join(dry.notes)


@pytest.mark.slow
def test_a_version_trained_on_a_clear_preference_is_reported_as_learned(learned, v1_report):
    studio, _, _ = learned
    report = v1_report
    m = report["metrics"]
    assert report["verdict"] == "learned" and report["summary"].startswith("learned: ")
    assert any(e["source"] == "held_out_pairs" and e["says"] == "toward" for e in report["evidence"])
    assert "Holm" in report["rule"]
    signature = m["label_signature"]  # the marker answers are longer and exclaim: the labels say so
    assert signature["pairs"] > 50 and "your labels prefer longer answers" in " ".join(signature["preferences"])
    assert {t["feature"] for t in m["movement"]} == set(FEATURE_NAMES)
    assert m["against"] == "base" and m["held_out_pairs"] > 10
    assert m["accuracy_version"] > m["accuracy_against"] and m["toward"] > m["away"]
    assert m["kl_per_token"] > 0 and m["prompts"] == 48 and len(report["examples"]) == 5
    assert {"length_version", "refusal_version", "distinct2_version"} <= set(m)
    stored = latest_report(studio.db, "v1")
    assert stored["summary"] == report["summary"] and stored["id"] == report["id"]
    assert badges(studio.db)["v1"].startswith("learned ")


@pytest.mark.slow
def test_an_untrained_copy_gets_no_measurable_change(learned):
    studio, _, _ = learned
    few = ReportSettings(prompts=12)  # identical weights answer identically: a dozen prompts show it, and save minutes
    report = compute_report(studio, "v2", settings=few)
    m = report["metrics"]
    assert report["verdict"] == "no_change" and report["summary"].startswith("no measurable change")
    assert m["toward"] == m["away"] == 0 and m["accuracy_version"] == m["accuracy_against"]
    assert abs(m["kl_per_token"]) < 1e-3
    # the tiny random model rarely ends an answer: the only warning says the lengths are capped
    assert m["cut_version"] == m["cut_against"] and all("-token limit" in w for w in report["warnings"])
    # any two versions, on demand
    assert compute_report(studio, "v1", against="v2", settings=few)["verdict"] == "learned"


@pytest.mark.slow
def test_runs_train_and_compare_pages_show_the_plan_and_the_report(learned, v1_report, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    studio, dry, _ = learned
    monkeypatch.setattr(core.studio, "_current", studio)
    runs = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
    assert not runs.exception and not runs.error
    text = " ".join(m.value for m in runs.markdown)
    assert "**learned: " in text and "What the training labels prefer:" in text
    assert any(m.label == "Log-prob ranking accuracy (held-out)" for m in runs.metric)
    assert len(runs.expander) >= 5  # the log, and the prompts where v1 and base differ most (admin, local mode)

    train = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=60).run()
    assert not train.exception and not train.error
    assert any("Defaults chosen for the data: " + dry.summary in c.value for c in train.caption)
    assert train.number_input(key=f"hp-dpo-{dry.examples}-learning_rate").value == 5e-4

    compare = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=120).run()
    assert not compare.exception and not compare.error
    compare.selectbox(key="changed-version").select("v1").run()
    compare.selectbox(key="changed-against").select("base").run()
    assert "**learned: " in " ".join(m.value for m in compare.markdown)
    compare.selectbox(key="changed-against").select("v2").run()
    compare.number_input(key="changed-settings-prompts").set_value(12)  # the report settings the admin chose
    compare.button(key="changed-run").click().run(timeout=300)
    assert not compare.exception and not compare.error
    assert latest_report(studio.db, "v1", "v2")["metrics"]["prompts"] == 12
    assert any(c.value == QUICK_REPORT for c in compare.caption), "a 12-prompt report did not say it is a quick one"


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    """Training prefers MARKER, the held-out split (45 pairs: enough to rank checkpoints) prefers the opposite:
    held-out accuracy only falls after the first update, so the job stops early and keeps the best evaluated
    checkpoint's weights."""
    from safetensors.torch import load_file

    studio = open_studio(tmp_path / "data")
    studio.reports.stop()
    label_pairs(studio.db, 230, held_out_prefers_marker=False)
    admin = ensure_user(studio.db, "ada", "admin", "t")
    request = JobRequest(
        "dpo",
        "base",
        {
            "max_length": 64,
            "learning_rate": 5e-3,
            "max_steps": 12,
            "save_steps": 1,
            "early_stopping_patience": 2,
            "warmup_ratio": 0.0,
        },
    )
    job = studio.supervisor.run_blocking(studio.supervisor.submit(request, admin))
    assert job["status"] == "succeeded", job["error"]
    run_dir = Path(job["run_dir"])
    setup = json.loads((run_dir / "result.json").read_text())["setup"]
    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "eval_loss" in r]
    best = max((r for r in evals if r["step"] > 0), key=selection_score)
    assert setup["stopped_early"] and evals[-1]["step"] < 12
    assert setup["kept_step"] == best["step"] < evals[-1]["step"]
    kept = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    checkpoint = load_file(str(run_dir / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors"))
    assert kept.keys() == checkpoint.keys() and all((kept[k] == checkpoint[k]).all() for k in kept)
    # a server that starts after a job ended without its report computes it then
    from core.compare.worker import ReportWorker

    worker = ReportWorker(studio, compute=compute_report)
    assert worker.catch_up() == ["v1"] and worker.state("v1")["status"] in ("queued", "computing")
    worker.stop()
    studio.close()


@pytest.mark.slow
def test_report_over_rest_and_cli_with_roles(learned, v1_report, tmp_path):
    studio, _, _ = learned
    data_dir = studio.settings.data_dir
    studio.close()  # one writer: the CLI and the server open the data dir next

    cli = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "report",
            "v1",
            "--json",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["verdict"] == "learned" and report["metrics"]["against"] == "base"
    text = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "report", "v1", "--data-dir", str(data_dir), "--model", "tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert text.stdout.startswith("learned: ") and "KL per token" in text.stdout and "evidence: toward" in text.stdout
    wrong = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "report", "v1", "--prompts", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode != 0 and "prompts=0 is out of range" in wrong.stderr and "between 1 and 200" in wrong.stderr

    users = tmp_path / "users.txt"
    users_file(users, "ada:pw-ada:admin", "bob:pw-bob:labeler")
    env = {"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        srv = Server(data_dir, free_port()).start("--model", "tiny")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    try:
        url, admin, labeler = f"{srv.url}/api/policies", ("ada", "pw-ada"), ("bob", "pw-bob")
        full = httpx.get(f"{url}/v1/report", auth=admin, timeout=30)
        assert full.status_code == 200 and full.json()["report"]["summary"] == report["summary"]
        assert len(full.json()["report"]["examples"]) == 5
        public = httpx.get(f"{url}/v1/report", auth=labeler, timeout=30).json()["report"]
        assert "examples" not in public and public["verdict"] == "learned"  # no one else's text
        assert httpx.get(f"{url}/v1/report", timeout=30).status_code == 401
        missing = httpx.get(f"{url}/v2/report", params={"against": "v1"}, auth=admin, timeout=30)
        assert missing.status_code == 404 and "POST" in missing.json()["error"]["hint"]
        assert httpx.get(f"{url}/nope/report", auth=admin, timeout=30).json()["error"]["code"] == "not_found"
        assert httpx.get(f"{url}/base/report", auth=admin, timeout=30).status_code == 422
        assert httpx.post(f"{url}/v2/report", params={"against": "v1"}, auth=labeler, timeout=30).status_code == 403
        too_many = httpx.post(f"{url}/v2/report", params={"against": "v1", "prompts": 201}, auth=admin, timeout=30)
        assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "invalid_input"
        assert httpx.get(f"{url}/v2/report", params={"against": "v1"}, auth=admin, timeout=30).status_code == 404
        ask = {"against": "v1", "prompts": 12}  # fewer than the default: v2 is base, so a dozen prompts tell
        started = httpx.post(f"{url}/v2/report", params=ask, auth=admin, timeout=30)
        assert started.status_code == 202 and started.json()["status"] in ("queued", "computing")
        deadline = time.monotonic() + 180
        while (
            reply := httpx.get(f"{url}/v2/report", params={"against": "v1"}, auth=admin, timeout=30)
        ).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert reply.status_code == 200 and reply.json()["report"]["against"] == "v1"
        assert reply.json()["report"]["metrics"]["prompts"] == 12
        assert reply.json()["report"]["verdict"] == "regressed"  # v2 (= base) vs v1: the preference undone

        from gradio_client import Client

        # the blind check of the newest version (v2) against its parent: a held-out prompt, names after the vote
        client = Client(srv.url + "/label/", auth=labeler, verbose=False)
        prompt, answer_a, answer_b, notice, reveal = client.predict(max_new_tokens=8, api_name="/blind_check_next")
        assert prompt and "v2" not in reveal and "Vote to reveal" in notice
        status, reveal = client.predict(api_name="/arena_vote_a")
        assert status.startswith("✓ Saved") and "v2" in reveal and "base" in reveal
        assert "Blind check of v2 against base: 1 of 10 votes" in reveal
        client.close()
        chain = httpx.get(f"{url}/v2/lineage", auth=labeler, timeout=30).json()
        assert chain["blind_check"]["votes"] == 1
    finally:
        srv.stop()
