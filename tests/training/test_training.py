"""Training jobs end to end: real TRL trainers on the tiny model, run through the real child entrypoint.

Every job is started the way the supervisor starts it -- a subprocess running ``python -m core.training.child
runs/<id>/config.json`` (one test goes through ``accelerate launch``) -- and checked only through the files the
contract names: metrics.jsonl, progress.json, checkpoints/, adapter/ or model/, result.json.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.errors import ValidationError
from core.training import ALGORITHMS, config_fields, get_algorithm
from core.training.common import QLORA_ON_CPU
from core.training.dpo import DPOConfig
from core.training.estimate import estimate
from core.training.online_rl import OnlineRLConfig
from core.training.rundir import JobConfig, write_parquet

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 64,
    "logging_steps": 1,
    "save_steps": 100,
    "learning_rate": 1e-3,
}
JOB_TIMEOUT = 300


# --- data ------------------------------------------------------------------------------------------------------


def preference_rows(n: int, same: bool = False) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": "What is 2 plus 2?" if same else f"What is {i} plus {i}?"}],
            "chosen": [{"role": "assistant", "content": "It is 4." if same else f"It is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": "Maybe 9." if same else f"No idea, maybe {i + 7}."}],
            "margin": float(i % 3),
        }
        for i in range(n)
    ]


def unpaired_rows(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Greet me, number {i}."}],
            "completion": [{"role": "assistant", "content": "Hello, friend!" if i % 2 else "Go away."}],
            "label": bool(i % 2),
        }
        for i in range(n)
    ]


def sft_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Count to {i % 4 + 1}."},
                {"role": "assistant", "content": " ".join(str(k) for k in range(1, i % 4 + 2))},
            ]
        }
        for i in range(n)
    ]


def prompt_rows(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Tell me about the number {i}."}]} for i in range(n)]


# --- jobs ------------------------------------------------------------------------------------------------------


def write_job(
    run_dir: Path,
    algorithm: str,
    base: Path,
    rows: list[dict],
    hyperparams: dict,
    *,
    parent: Path | None = None,
    reward: Path | None = None,
    resume: bool = False,
    eval_rows: list[dict] | None = None,
    seed: int = 7,
) -> Path:
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    write_parquet(rows, run_dir / "data" / "train.parquet")  # as the supervisor writes it
    if eval_rows is not None:
        write_parquet(eval_rows, run_dir / "data" / "eval.parquet")
    config = {
        "job_id": 1,
        "algorithm": algorithm,
        "base_model": str(base),
        "parent_adapter": str(parent) if parent else None,
        "reward_model": str(reward) if reward else None,
        "hyperparams": hyperparams,
        "resume": resume,
        "seed": seed,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir / "config.json"


def set_resume(run_dir: Path) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    config["resume"] = True
    (run_dir / "config.json").write_text(json.dumps(config))


def command(config: Path, launcher: str = "python") -> list[str]:
    if launcher == "accelerate":
        # What the supervisor runs; these flags keep accelerate from needing a config file or prompting, and
        # leave precision to the job (TrainingArguments' bf16/fp16 from the hardware override --mixed_precision).
        return [
            str(Path(sys.executable).parent / "accelerate"),
            "launch",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--cpu",
            "-m",
            "core.training.child",
            str(config),
        ]
    return [sys.executable, "-m", "core.training.child", str(config)]


def start(config: Path, launcher: str = "python") -> subprocess.Popen:
    log = open(config.parent / "log.txt", "ab")
    return subprocess.Popen(
        command(config, launcher), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def run_job(config: Path, launcher: str = "python") -> tuple[int, dict]:
    process = start(config, launcher)
    try:
        code = process.wait(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, read_result(config.parent)


def read_result(run_dir: Path) -> dict:
    path = run_dir / "result.json"
    assert path.is_file(), f"no result.json; log:\n{log_tail(run_dir)}"
    return json.loads(path.read_text())


def log_tail(run_dir: Path) -> str:
    path = run_dir / "log.txt"
    return path.read_text(errors="replace")[-4000:] if path.is_file() else "(no log)"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_succeeded(code: int, result: dict, run_dir: Path) -> None:
    assert code == 0 and result["status"] == "succeeded", f"{result}\n{log_tail(run_dir)}"


def assert_has_metrics(rows: list[dict], *names: str) -> None:
    assert rows, "metrics.jsonl is empty"
    for row in rows:
        assert {"step", "epoch", "time"} <= row.keys()
    for name in names:
        values = [row[name] for row in rows if name in row]
        assert values, f"no {name} in metrics rows: {sorted(rows[-1])}"
        assert all(v is None or math.isfinite(v) for v in values)


def lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    norms = [w.float().norm().item() for name, w in weights.items() if "lora_B" in name]
    assert norms, f"no LoRA B weights in {adapter_dir}"
    return sum(norms)


def logits_on(model, tokenizer, text: str = "Hello there, how are you?") -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def policy_changes_outputs(base_dir: Path, adapter_dir: Path) -> float:
    """Max |logit difference| between the base and base + adapter, loaded the way the studio serves them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    before = logits_on(base, tokenizer)
    tuned = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    return (logits_on(tuned, tokenizer) - before).abs().max().item()


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.serving.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("training-base"))


@pytest.fixture(scope="module")
def parent_adapter(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A parent policy version far from the base: a LoRA adapter with large random weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("parent") / "adapter"
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def reward_run(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict]:
    run_dir = tmp_path_factory.mktemp("reward-run")
    config = write_job(run_dir, "reward", base_model, preference_rows(12), {**TINY, "max_steps": 3})
    code, result = run_job(config)
    return run_dir, code, result


# --- the registry and configs (in process, fast) ---------------------------------------------------------------


def test_registry_lists_every_algorithm_with_a_documented_form():
    assert set(ALGORITHMS) == {"sft", "reward", "dpo", "kto", "orpo", "online_rl"}
    for name, spec in ALGORITHMS.items():
        assert spec.name == name and spec.label and spec.description
        assert spec.dataset_kind in ("preference", "unpaired", "sft", "reward", "prompts")
        assert spec.min_examples == spec.config_class.min_examples >= 1
        assert hasattr(spec.load(), "build_trainer")
        for row in config_fields(spec.config_class):
            assert len(row["help"]) > 15, f"{name}.{row['name']} needs help text"
            if row["type"] in ("int", "float"):
                assert "min" in row and "max" in row, f"{name}.{row['name']} needs bounds"
            if row["type"] == "str" and row["name"] != "lora_target_modules":
                assert "choices" in row, f"{name}.{row['name']} needs choices"
    assert get_algorithm("online_rl").needs_reward_model
    dpo_losses = {r["name"]: r for r in config_fields(DPOConfig)}["loss_type"]["choices"]
    assert {"sigmoid", "ipo", "hinge", "robust"} <= set(dpo_losses)


def test_unknown_algorithm_and_hyperparameter_are_rejected_with_hints():
    with pytest.raises(ValidationError) as info:
        get_algorithm("ppo")
    assert "dpo" in info.value.hint
    with pytest.raises(ValidationError) as info:
        DPOConfig.from_dict({"learning_rat": 1e-4})
    assert "learning_rat" in info.value.message and "learning_rate" in info.value.hint
    with pytest.raises(ValidationError):
        DPOConfig.from_dict({"max_steps": "ten"})
    assert DPOConfig.from_dict({"max_steps": 3.0}).max_steps == 3


def test_validation_explains_bad_values():
    with pytest.raises(ValidationError) as info:
        DPOConfig(learning_rate=-1e-3).validate()
    assert "learning_rate must be >=" in info.value.message
    with pytest.raises(ValidationError) as info:
        DPOConfig(loss_type="nonsense").validate()
    assert "sigmoid" in info.value.hint
    with pytest.raises(ValidationError) as info:
        OnlineRLConfig(per_device_train_batch_size=3, num_generations=4).validate()
    assert "multiple of num_generations" in info.value.message
    from core.serving.hardware import HardwareProfile

    with pytest.raises(ValidationError) as info:
        DPOConfig(finetune="qlora4").validate(HardwareProfile(cuda_available=False))
    assert info.value.message.endswith(QLORA_ON_CPU)
    DPOConfig(finetune="qlora4").validate(
        HardwareProfile(cuda_available=True, cuda_devices=("GPU",), cuda_memory_bytes=(16 << 30,))
    )


def test_reference_log_probs_are_precomputed_when_it_pays_off():
    # A 2-step run over 100 pairs sees 8 of them: caching all 100 would cost more than it saves.
    assert not DPOConfig(max_steps=2).uses_precompute(100)
    # Two epochs: every pair's reference pass is reused once.
    assert DPOConfig(num_train_epochs=2).uses_precompute(100)
    assert DPOConfig(finetune="full", max_steps=2).uses_precompute(100)  # no second full model in memory
    assert not DPOConfig(num_train_epochs=2, precompute_ref_log_probs="off").uses_precompute(100)


def test_job_config_rejects_malformed_files(tmp_path: Path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"job_id": 1, "algorithm": "dpo"}))
    with pytest.raises(ValidationError, match="base_model"):
        JobConfig.read(bad)
    bad.write_text("{not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        JobConfig.read(bad)


def test_estimate_is_a_rough_but_sane_dry_run(base_model: Path):
    small = estimate(DPOConfig(max_steps=10), 100, base_model)
    assert small["steps"] == 10 and 0 < small["seconds"] < 600 and small["peak_memory_bytes"] > 10e6
    longer = estimate(
        DPOConfig(num_train_epochs=2, per_device_train_batch_size=2, gradient_accumulation_steps=4), 80, base_model
    )
    assert longer["steps"] == 20 and longer["seconds"] > small["seconds"]
    full = estimate(DPOConfig(max_steps=10, finetune="full"), 100, base_model)
    assert full["peak_memory_bytes"] > small["peak_memory_bytes"]
    assert "estimate" in small["assumptions"]


# --- every algorithm, end to end -------------------------------------------------------------------------------


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_sft_job_trains_an_adapter_that_changes_the_policy(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "sft", base_model, sft_rows(8), TINY, eval_rows=sft_rows(4))
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    rows = metrics(tmp_path)
    assert_has_metrics(rows, "loss", "learning_rate", "grad_norm", "tokens_per_s")
    assert any("eval_loss" in row for row in rows), "eval.parquet was not evaluated"
    assert [row["step"] for row in rows if "loss" in row] == [1, 2]
    adapter = Path(result["adapter_path"])
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    assert lora_b_norm(adapter) > 0
    assert policy_changes_outputs(base_model, adapter) > 0
    assert result["metrics"]["steps"] == 2 and "loss" in result["metrics"] and "train_runtime" in result["metrics"]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["step"] == progress["max_steps"] == 2 and progress["status"] == "succeeded"
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_reward_job_learns_from_margins_and_loads_back(reward_run, base_model: Path):
    from core.training.reward import load_reward_model, score

    run_dir, code, result = reward_run
    assert_succeeded(code, result, run_dir)
    assert_has_metrics(metrics(run_dir), "loss", "accuracy", "margin", "mean_reward")
    adapter = Path(result["adapter_path"])
    assert lora_b_norm(adapter) > 0
    model, tokenizer = load_reward_model(adapter)
    chat = [{"role": "user", "content": "What is 2 plus 2?"}]
    scores = score(
        model,
        tokenizer,
        [
            chat + [{"role": "assistant", "content": "It is 4."}],
            chat + [{"role": "assistant", "content": "No idea, maybe 9."}],
        ],
    )
    again = score(*load_reward_model(adapter), [chat + [{"role": "assistant", "content": "It is 4."}]])
    assert all(math.isfinite(s) for s in scores) and scores[0] != scores[1]
    assert again[0] == pytest.approx(scores[0], abs=1e-5)  # the trained score head is saved, not re-initialised


@pytest.mark.slow
def test_reward_model_on_a_policy_parent_reloads_on_top_of_that_parent(base_model, parent_adapter, tmp_path: Path):
    from core.training.reward import load_reward_model, score

    config = write_job(tmp_path, "reward", base_model, preference_rows(12), TINY, parent=parent_adapter)
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    info = json.loads((Path(result["adapter_path"]) / "studio_training.json").read_text())
    assert info["merged_parent"] == str(parent_adapter.resolve()) and info["kind"] == "reward_model"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert math.isfinite(score(*load_reward_model(result["adapter_path"]), [chat])[0])


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_dpo_job_logs_preference_metrics_and_its_adapter_loads(base_model: Path, tmp_path: Path):
    rows = preference_rows(12)
    rows[0]["chosen_cut"] = rows[1]["rejected_cut"] = True  # answers that hit the length limit (core.training.cut)
    config = write_job(tmp_path, "dpo", base_model, rows, {**TINY, "loss_type": "ipo"})
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    assert "train: 2 answer(s) cut at the length limit count as the start of an answer" in log_tail(tmp_path)
    rows = metrics(tmp_path)
    assert_has_metrics(
        rows,
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "labeled_logratio",
        "tokens_per_s",
    )
    first = rows[0]
    beta = DPOConfig().beta
    assert first["labeled_logratio"] == pytest.approx(
        (first["rewards/chosen"] + first["rewards/rejected"]) / (2 * beta)
    )
    assert policy_changes_outputs(base_model, Path(result["adapter_path"])) > 0
    assert "base model" in result["setup"]["reference"]


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_dpo_sft_weight_adds_the_chosen_answers_likelihood_to_the_loss(base_model: Path, tmp_path: Path):
    """RPO: the first step's loss (policy = reference, so the DPO part is ln 2) grows by the weighted per-token
    negative log-likelihood of the chosen answers, which the logged log-probs give."""
    one = {**TINY, "max_steps": 1}
    plain, rpo = tmp_path / "plain", tmp_path / "rpo"
    for run_dir, extra in ((plain, {}), (rpo, {"sft_weight": 0.5})):
        code, result = run_job(write_job(run_dir, "dpo", base_model, preference_rows(12), {**one, **extra}))
        assert_succeeded(code, result, run_dir)
    first_plain, first_rpo = metrics(plain)[0], metrics(rpo)[0]
    assert first_plain["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert first_rpo["logps/chosen"] == pytest.approx(first_plain["logps/chosen"])  # same batch, same policy
    assert first_rpo["loss"] - first_plain["loss"] > 0.5 * 1.0  # a random tiny model: > 1 nat per token


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_kto_job_trains_on_thumbs_up_and_down(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "kto", base_model, unpaired_rows(12), {**TINY, "per_device_train_batch_size": 4})
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    assert_has_metrics(metrics(tmp_path), "loss", "kl", "logps/chosen", "logps/rejected")
    assert policy_changes_outputs(base_model, Path(result["adapter_path"])) > 0


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_orpo_job_trains_without_a_reference(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "orpo", base_model, preference_rows(12), TINY)
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    assert_has_metrics(metrics(tmp_path), "loss", "nll_loss", "log_odds_ratio", "rewards/margins")
    assert policy_changes_outputs(base_model, Path(result["adapter_path"])) > 0


@pytest.mark.slow
def test_online_rl_job_scores_samples_with_the_reward_model(reward_run, base_model: Path, tmp_path: Path):
    reward_dir, reward_code, reward_result = reward_run
    assert_succeeded(reward_code, reward_result, reward_dir)
    hyper = {
        **TINY,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_length": 96,
        "max_completion_length": 12,
        "beta": 0.1,
    }
    config = write_job(
        tmp_path, "online_rl", base_model, prompt_rows(8), hyper, reward=Path(reward_result["adapter_path"])
    )
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    rows = metrics(tmp_path)
    assert_has_metrics(rows, "loss", "kl", "reward", "reward_std")
    assert [row["step"] for row in rows] == [1, 2]
    assert policy_changes_outputs(base_model, Path(result["adapter_path"])) > 0


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_accelerate_launch_runs_the_same_entrypoint_on_cpu(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "sft", base_model, sft_rows(6), TINY)
    code, result = run_job(config, launcher="accelerate")
    assert_succeeded(code, result, tmp_path)
    assert_has_metrics(metrics(tmp_path), "loss")
    assert lora_b_norm(Path(result["adapter_path"])) > 0


# --- the reference is the parent policy ------------------------------------------------------------------------


def _sequence_logprob(model, tokenizer, messages: list[dict]) -> float:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids["input_ids"][0, 1:, None])
    return logp.sum().item()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_dpo_with_a_parent_adapter_uses_the_parent_as_reference(base_model, parent_adapter, tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = preference_rows(12, same=True)  # every batch holds the same pair
    config = write_job(tmp_path, "dpo", base_model, rows, {**TINY, "beta": 0.1}, parent=parent_adapter)
    base_before, parent_before = tree_snapshot(base_model), tree_snapshot(parent_adapter)
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    # The job writes only inside its run dir: the base model and the parent version are untouched.
    assert tree_snapshot(base_model) == base_before and tree_snapshot(parent_adapter) == parent_before
    first = metrics(tmp_path)[0]
    # At step 1 the new adapter equals the parent: against the parent as reference, the implicit rewards are 0.
    assert first["step"] == 1
    assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/margins"]) < 1e-4
    # Had the base been the reference, rewards/chosen would be beta * (log p_parent - log p_base), far from 0.
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    base = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32).eval()
    chosen = rows[0]["prompt"] + rows[0]["chosen"]
    base_logp = _sequence_logprob(base, tokenizer, chosen)
    parent = PeftModel.from_pretrained(base, str(parent_adapter)).eval()
    assert abs(_sequence_logprob(parent, tokenizer, chosen) - base_logp) * 0.1 > 0.05
    assert "parent" in result["setup"]["reference"]
    # The result is a complete adapter on the base (the parent's shape), without TRL's frozen 'ref' copy.
    adapter = Path(result["adapter_path"])
    assert not (adapter / "ref").exists()
    assert policy_changes_outputs(base_model, adapter) > 0


@pytest.mark.slow
def test_full_finetune_from_a_parent_saves_a_model_and_keeps_the_parent_as_reference(
    base_model, parent_adapter, tmp_path: Path
):
    from transformers import AutoModelForCausalLM

    hyper = {**TINY, "finetune": "full", "learning_rate": 1e-4}
    config = write_job(tmp_path, "dpo", base_model, preference_rows(12, same=True), hyper, parent=parent_adapter)
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    first = metrics(tmp_path)[0]
    assert abs(first["rewards/chosen"]) < 1e-4  # reference log-probs precomputed from the merged parent
    assert result["setup"]["precompute_ref_log_probs"] is True
    model = AutoModelForCausalLM.from_pretrained(result["model_path"]).eval()
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "tmp").exists()  # scratch removed on success
    base = AutoModelForCausalLM.from_pretrained(str(base_model)).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    assert (logits_on(model, tokenizer) - logits_on(base, tokenizer)).abs().max() > 1e-3


# --- pause, resume, cancel -------------------------------------------------------------------------------------


def wait_for_step(run_dir: Path, process: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((run_dir / "progress.json").read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert process.poll() is None, f"job ended early:\n{log_tail(run_dir)}"
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached:\n{log_tail(run_dir)}")


def write_control(run_dir: Path, action: str) -> None:
    tmp = run_dir / "control.json.tmp"
    tmp.write_text(json.dumps({"action": action}))
    os.replace(tmp, run_dir / "control.json")


@pytest.mark.slow
def test_pause_checkpoints_and_resume_continues_to_max_steps(base_model: Path, tmp_path: Path):
    hyper = {**TINY, "max_steps": 12, "save_steps": 100, "learning_rate": 1e-4}
    config = write_job(tmp_path, "dpo", base_model, preference_rows(12), hyper)
    process = start(config)
    wait_for_step(tmp_path, process, 1)
    write_control(tmp_path, "pause")
    assert process.wait(timeout=JOB_TIMEOUT) == 0, log_tail(tmp_path)
    paused = read_result(tmp_path)
    assert paused["status"] == "paused", paused
    paused_step = paused["step"]
    assert 1 <= paused_step < 12
    assert Path(paused["checkpoint"]) == (tmp_path / "checkpoints" / f"checkpoint-{paused_step}").resolve()
    assert (Path(paused["checkpoint"]) / "trainer_state.json").is_file()
    assert not (tmp_path / "adapter").exists()
    assert json.loads((tmp_path / "progress.json").read_text())["status"] == "paused"
    assert paused["setup"]["precompute_ref_log_probs"] is True  # 12 steps x 2 pairs cover the 12 pairs
    cached = [p.name for p in (tmp_path / "cache").rglob("*.arrow")]
    assert cached, "tokenized data and reference log-probs are cached inside the run dir, kept for the resume"

    set_resume(tmp_path)
    code, result = run_job(config)
    assert_succeeded(code, result, tmp_path)
    steps = [row["step"] for row in metrics(tmp_path)]
    assert steps[-1] == 12 and max(steps[: steps.index(paused_step) + 1]) == paused_step
    assert steps == sorted(steps) and len(steps) == len(set(steps)), f"each step logged once: {steps}"
    assert result["metrics"]["steps"] == 12
    log = (tmp_path / "log.txt").read_text(errors="replace")
    assert f"resuming from {tmp_path / 'checkpoints' / f'checkpoint-{paused_step}'}" in log


@pytest.mark.slow
def test_cancel_stops_at_once_without_saving(base_model: Path, tmp_path: Path):
    hyper = {**TINY, "max_steps": 30, "save_steps": 100, "gradient_accumulation_steps": 2}
    config = write_job(tmp_path, "sft", base_model, sft_rows(8), hyper)
    process = start(config)
    wait_for_step(tmp_path, process, 1)
    write_control(tmp_path, "cancel")
    assert process.wait(timeout=JOB_TIMEOUT) == 0, log_tail(tmp_path)
    result = read_result(tmp_path)
    assert result["status"] == "cancelled" and result["step"] < 30
    assert not (tmp_path / "adapter").exists()
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_cancel_before_start_exits_without_training(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "sft", base_model, sft_rows(8), TINY)
    write_control(tmp_path, "cancel")
    code, result = run_job(config)
    assert code == 0 and result["status"] == "cancelled" and result["step"] == 0
    assert not (tmp_path / "metrics.jsonl").exists()


# --- bad configs fail cleanly ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hyperparams, message",
    [
        ({"finetune": "qlora4"}, QLORA_ON_CPU),
        ({"learning_rate": -0.001}, "learning_rate must be >= 1e-08 (got -0.001)"),
        ({"loss_type": "sigmoidal"}, "loss_type must be one of"),
    ],
)
def test_bad_config_fails_with_a_clear_message(base_model: Path, tmp_path: Path, hyperparams, message):
    config = write_job(tmp_path, "dpo", base_model, preference_rows(12), {**TINY, **hyperparams})
    code, result = run_job(config)
    assert code != 0
    assert result["status"] == "failed" and message in result["error"], result
    assert result["code"] == "invalid_input" and result["hint"]
    assert "Traceback" in log_tail(tmp_path)  # the traceback goes to log.txt
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_too_little_data_fails_before_training(base_model: Path, tmp_path: Path):
    config = write_job(tmp_path, "dpo", base_model, preference_rows(3), TINY)
    code, result = run_job(config)
    assert code != 0 and result["status"] == "failed"
    assert "at least 10" in result["error"]
