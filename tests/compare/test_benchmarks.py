"""Standard benchmarks per version through the real lm-evaluation-harness: the shipped offline suite on the tiny
model, the adapter guard (a zero adapter is the base; an ignored adapter is refused), the parent's cached run,
regression flagging, and the CLI's JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.compare.benchmarks import (
    AdapterNotApplied,
    BenchSettings,
    benchmark_version,
    check_adapter_applied,
    compare,
    load_scored_model,
    probe_logits,
)
from core.serving.models import build_tiny_model
from core.serving.policies import ensure_base_policy, register_policy
from storage.db import Database
from tests.support import ROOT
from tests.support.studios import make_random_adapter

QUICK = BenchSettings(limit=3)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """A data dir with the tiny base, v1 (a random LoRA adapter) and v0 (a LoRA adapter whose weights are zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    data_dir = tmp_path_factory.mktemp("bench") / "data"
    model_path = build_tiny_model(data_dir)
    adapter = make_random_adapter(data_dir)
    zero = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_path), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )  # B starts at zero
    zero.save_pretrained(data_dir / "runs" / "v0" / "adapter")
    db = Database.in_data_dir(data_dir)
    base = ensure_base_policy(db, "tiny")
    register_policy(db, "v1", base, "tiny", "dpo", str(adapter))
    register_policy(db, "v0", base, "tiny", "dpo", str(data_dir / "runs" / "v0" / "adapter"))
    yield data_dir, model_path, db
    db.close()


def test_the_offline_suite_runs_through_the_real_harness_and_the_parent_is_cached(bench_dir):
    data_dir, model_path, db = bench_dir
    result = benchmark_version(db, model_path, "v1", QUICK)
    assert result["against"] == "base" and result["adapter_applied"] is True and not result["parent_cached"]
    assert {r["task"] for r in result["tasks"]} == {"studio_knowledge", "studio_arithmetic", "studio_instructions"}
    for row in result["tasks"]:
        assert 0.0 <= row["value"] <= 1.0 and row["against_value"] is not None and row["stderr"] is not None
    settings = result["settings"]
    assert settings["limit"] == 3 and settings["chat_template"] is True and settings["lm_eval_version"] == "0.4.13"
    assert result["adapter"]["probe_max_logit_diff"] > 0
    again = benchmark_version(db, model_path, "v0", QUICK)  # base already measured with these settings
    assert again["parent_cached"] is True
    assert again["adapter"]["identical_to_base"] is True and again["adapter"]["adapter_delta_norm"] == 0.0
    assert all(r["change_points"] == 0 for r in again["tasks"])  # a zero adapter scores exactly as the base


def test_the_model_card_carries_the_scores_as_a_model_index_the_hub_parses_back(bench_dir):
    from huggingface_hub import ModelCard

    from core.compare.gate import evaluate_gate
    from core.labeling.identity import ensure_user
    from core.share import cards, exports

    data_dir, model_path, db = bench_dir
    benchmark_version(db, model_path, "v1", QUICK)  # cached by the first test when it ran
    export = exports.export_adapter(
        db,
        data_dir,
        "v1",
        ensure_user(db, "ada", "admin", "test"),
        cards.CardOptions(base_model_id="studio-tests/tiny-llama"),
    )
    card = ModelCard.load(export.path / "README.md")
    results = card.data.eval_results
    assert {r.dataset_name for r in results} == {"studio_knowledge", "studio_arithmetic", "studio_instructions"}
    assert all(
        0.0 <= r.metric_value <= 1.0 and r.source_name.startswith("lm-evaluation-harness 0.4.13") for r in results
    )
    assert "## Standard benchmarks" in card.text and "| studio_knowledge | acc |" in card.text
    check = next(c for c in evaluate_gate(db, "v1").checks if c.name == "benchmarks")
    assert check.status in ("pass", "fail") and "against base" in check.evidence
    # the "what changed" report carries them too (read at read time: benchmarks run after the report)
    from core.compare.report import latest_report

    ids = {r["name"]: r["id"] for r in db.query("SELECT id, name FROM policies")}
    stored = {"version": "v1", "against": "base", "verdict": "no_change", "summary": "no change", "metrics": {}}
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report)"
            " VALUES (?, ?, 'no_change', 'no change', ?)",
            [ids["v1"], ids["base"], json.dumps(stored)],
        )
    )
    report = latest_report(db, "v1")
    assert report["benchmarks"]["against"] == "base" and len(report["benchmarks"]["tasks"]) == 3


def test_an_ignored_adapter_is_caught_before_any_score_counts(bench_dir):
    data_dir, model_path, db = bench_dir
    merged, tokenizer, facts = load_scored_model(model_path, str(data_dir / "runs" / "v1" / "adapter"))
    assert facts["adapter_delta_norm"] > 0
    plain, _, _ = load_scored_model(model_path, None)  # what a backend that drops the adapter would score
    with pytest.raises(AdapterNotApplied) as refused:
        check_adapter_applied(plain, tokenizer, facts)
    assert refused.value.code == "adapter_not_applied" and "not applied" in refused.value.message
    assert check_adapter_applied(merged, tokenizer, facts)["adapter_applied"] is True
    assert float((probe_logits(merged, tokenizer) - facts["base_probe"]).abs().max()) > 0


def test_a_drop_is_a_regression_only_beyond_the_margin_and_twice_the_noise():
    def run(value: float, stderr: float) -> dict:
        return {"results": [{"task": "t", "metric": "acc", "value": value, "stderr": stderr}]}

    assert compare(run(0.50, 0.005), run(0.60, 0.005))[0]["regressed"]  # -10 points, noise ~1.4
    assert not compare(run(0.59, 0.001), run(0.60, 0.001))[0]["regressed"]  # -1 point: inside the 2-point margin
    assert not compare(run(0.50, 0.05), run(0.60, 0.05))[0]["regressed"]  # -10 points, noise ~14
    assert not compare(run(0.70, 0.005), run(0.60, 0.005))[0]["regressed"]  # a gain


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_the_cli_prints_the_settings_the_guard_and_both_sides_as_json(tmp_path):
    data_dir = tmp_path / "data"
    model_path = build_tiny_model(data_dir)
    adapter = make_random_adapter(data_dir)
    db = Database.in_data_dir(data_dir)
    register_policy(db, "v1", ensure_base_policy(db, "tiny"), "tiny", "dpo", str(adapter))
    db.close()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "bench",
            "v1",
            "--limit",
            "2",
            "--json",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
            "--tasks",
            "studio_knowledge",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["adapter_applied"] is True and out["settings"]["tasks"] == ["studio_knowledge"]
    assert out["tasks"][0]["metric"] == "acc" and "against_value" in out["tasks"][0]
    assert model_path.exists()


def test_admins_start_a_background_run_over_rest_and_labelers_read_its_scores(tmp_path):
    import time

    from tests.support.studios import team_studio, users_file

    data_dir = tmp_path / "data"
    studio, client = team_studio(data_dir, users_file(tmp_path / "users.txt", "ada:pw-ada:admin", "bob:pw-bob:labeler"))
    try:
        register_policy(studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(make_random_adapter(data_dir)))
        body = {"tasks": ["studio_knowledge"], "limit": 2}
        assert client.post("/api/policies/v1/benchmarks", json=body, auth=("bob", "pw-bob")).status_code == 403
        queued = client.post("/api/policies/v1/benchmarks", json=body, auth=("ada", "pw-ada"))
        assert queued.status_code == 202 and queued.json()["status"] in ("queued", "computing")
        deadline = time.monotonic() + 300
        while (answer := client.get("/api/policies/v1/benchmarks", auth=("bob", "pw-bob")).json())["state"][
            "status"
        ] in ("queued", "computing") and time.monotonic() < deadline:
            time.sleep(1)
        scores = answer["benchmarks"]
        assert scores["adapter_applied"] is True and scores["against"] == "base", answer
        assert scores["tasks"][0]["task"] == "studio_knowledge" and scores["tasks"][0]["against_value"] is not None
    finally:
        studio.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_the_compare_pages_benchmarks_tab_runs_in_the_background_and_shows_both_sides(tmp_path, monkeypatch):
    import time

    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.config import load_settings
    from core.studio import Studio

    data_dir = tmp_path / "data"
    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))
    try:
        register_policy(studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(make_random_adapter(data_dir)))
        monkeypatch.setattr(core.studio, "_current", studio)
        app = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=120).run()
        assert not app.exception
        form_inputs = [t for t in app.text_input if t.value == "studio-offline"]
        form_inputs[0].input("studio_knowledge")
        next(n for n in app.number_input if n.label.startswith("Examples per task")).set_value(2)
        next(b for b in app.button if b.label == "Run benchmarks").click().run()
        assert not app.exception
        deadline = time.monotonic() + 300
        while studio.benchmarks.state("v1")["status"] in ("queued", "computing") and time.monotonic() < deadline:
            time.sleep(1)
        app.run()
        assert not app.exception and not app.error
        table = next(d.value for d in app.dataframe if "change (points)" in d.value.columns)
        assert list(table["task"]) == ["studio_knowledge"] and {"v1", "base"} <= set(table.columns)
    finally:
        studio.close()


def test_a_running_benchmark_can_be_cancelled_and_is_recorded_as_failed(tmp_path):
    import time

    from core.config import load_settings
    from core.studio import Studio

    data_dir = tmp_path / "data"
    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))
    try:
        register_policy(studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(make_random_adapter(data_dir)))
        studio.benchmarks.request("v1", None, None, tasks=["studio-offline"], limit=None)
        deadline = time.monotonic() + 120
        while "batches" not in (studio.benchmarks.state("v1").get("message") or ""):
            assert time.monotonic() < deadline, studio.benchmarks.state("v1")
            time.sleep(0.05)
        assert studio.benchmarks.cancel("v1")
        while studio.benchmarks.state("v1")["status"] in ("queued", "computing"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        state = studio.benchmarks.state("v1")
        assert state["status"] == "failed" and state["error"]["code"] == "cancelled"
        assert studio.db.query("SELECT status FROM benchmark_runs")[0]["status"] == "failed"
    finally:
        studio.close()


def test_the_regression_margin_is_an_admin_setting_every_reader_uses(bench_dir):
    from core.compare.benchmarks import latest_comparison, mark_interrupted, regression_margin, set_regression_margin
    from core.errors import PermissionDenied, ValidationError
    from core.labeling.identity import ensure_user

    data_dir, model_path, db = bench_dir
    benchmark_version(db, model_path, "v1", QUICK)
    admin, labeler = ensure_user(db, "ada", "admin", "test"), ensure_user(db, "bob", "labeler", "test")
    with pytest.raises(PermissionDenied):
        set_regression_margin(db, labeler, 10)
    with pytest.raises(ValidationError):
        set_regression_margin(db, admin, 80)
    try:
        set_regression_margin(db, admin, 50)
        comparison = latest_comparison(db, "v1")
        assert regression_margin(db) == 50 and comparison["margin_points"] == 50 and not comparison["regressions"]
        assert all(row["threshold_points"] >= 50 for row in comparison["tasks"])
    finally:
        set_regression_margin(db, admin, 2)
    # a run a stopped studio left 'running' never finishes: the next start marks it interrupted
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO benchmark_runs (policy_id, version, settings_key, settings, status)"
            " SELECT id, name, 'k', '{}', 'running' FROM policies WHERE name = 'v1'"
        )
    )
    assert mark_interrupted(db) == 1
    assert db.query("SELECT count(*) AS n FROM benchmark_runs WHERE status = 'running'")[0]["n"] == 0
