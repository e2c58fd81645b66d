"""Standard benchmarks per version through the real lm-evaluation-harness: the shipped offline suite on the tiny
model, the adapter guard (a zero adapter is the base; an ignored adapter is refused), the parent's cached run,
regression flagging, and the CLI's JSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.compare.benchmarks import (AdapterNotApplied, BenchSettings, benchmark_version,
                                     check_adapter_applied, compare, load_scored_model, probe_logits)
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
    zero = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))   # B starts at zero
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
    again = benchmark_version(db, model_path, "v0", QUICK)     # base already measured with these settings
    assert again["parent_cached"] is True
    assert again["adapter"]["identical_to_base"] is True and again["adapter"]["adapter_delta_norm"] == 0.0
    assert all(r["change_points"] == 0 for r in again["tasks"])   # a zero adapter scores exactly as the base


def test_an_ignored_adapter_is_caught_before_any_score_counts(bench_dir):
    data_dir, model_path, db = bench_dir
    merged, tokenizer, facts = load_scored_model(model_path, str(data_dir / "runs" / "v1" / "adapter"))
    assert facts["adapter_delta_norm"] > 0
    plain, _, _ = load_scored_model(model_path, None)      # what a backend that drops the adapter would score
    with pytest.raises(AdapterNotApplied) as refused:
        check_adapter_applied(plain, tokenizer, facts)
    assert refused.value.code == "adapter_not_applied" and "not applied" in refused.value.message
    assert check_adapter_applied(merged, tokenizer, facts)["adapter_applied"] is True
    assert float((probe_logits(merged, tokenizer) - facts["base_probe"]).abs().max()) > 0


def test_a_drop_is_a_regression_only_beyond_the_margin_and_twice_the_noise():
    def run(value: float, stderr: float) -> dict:
        return {"results": [{"task": "t", "metric": "acc", "value": value, "stderr": stderr}]}

    assert compare(run(0.50, 0.005), run(0.60, 0.005))[0]["regressed"]          # -10 points, noise ~1.4
    assert not compare(run(0.59, 0.001), run(0.60, 0.001))[0]["regressed"]      # -1 point: inside the 2-point margin
    assert not compare(run(0.50, 0.05), run(0.60, 0.05))[0]["regressed"]        # -10 points, noise ~14
    assert not compare(run(0.70, 0.005), run(0.60, 0.005))[0]["regressed"]      # a gain


def test_the_cli_prints_the_settings_the_guard_and_both_sides_as_json(tmp_path):
    data_dir = tmp_path / "data"
    model_path = build_tiny_model(data_dir)
    adapter = make_random_adapter(data_dir)
    db = Database.in_data_dir(data_dir)
    register_policy(db, "v1", ensure_base_policy(db, "tiny"), "tiny", "dpo", str(adapter))
    db.close()
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "bench", "v1", "--limit", "2", "--json",
                           "--data-dir", str(data_dir), "--model", "tiny", "--tasks", "studio_knowledge"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["adapter_applied"] is True and out["settings"]["tasks"] == ["studio_knowledge"]
    assert out["tasks"][0]["metric"] == "acc" and "against_value" in out["tasks"][0]
    assert model_path.exists()
