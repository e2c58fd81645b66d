"""The training child: ``accelerate launch -m core.training.run runs/<id>/config.json`` (or ``python -m ...``).

The supervisor (core.jobs) prepares ``runs/<id>/`` with ``config.json`` and ``data/train.parquet`` (optionally
``data/eval.parquet``) and reads back only files this process writes inside the run dir:

    metrics.jsonl    one JSON row per logging step (TRL metric names + step, epoch, time, tokens_per_s, ...)
    progress.json    {"step", "max_steps", "epoch", "elapsed_s", "eta_s", "status"}, rewritten atomically each step
    checkpoints/     checkpoint-<step>/ (HF Trainer checkpoints; resume continues from the latest)
    adapter/         the trained LoRA adapter (PEFT layout + tokenizer), or model/ after full fine-tuning
    result.json      written LAST: {"status": "succeeded" | "paused" | "cancelled" | "failed", ...}
    cache/, tmp/     datasets' cache files (tokenized data, precomputed reference log-probs) and temp files

It reads ``control.json`` ({"action": "pause" | "cancel"}) after every optimizer step; see callbacks.py.
Exit code 0 for succeeded / paused / cancelled, 1 for failed (traceback on stderr = log.txt).

``estimate(cfg, n_examples, model_dir)`` gives a dry-run guess of steps, seconds and peak memory.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from core.errors import StudioError, ValidationError

EXIT_OK = 0
EXIT_FAILED = 1


def _confine_to_run_dir(run_dir: Path) -> None:
    """Send every cache / temp file this process may write into the run dir (set before datasets is imported)."""
    cache, tmp = run_dir / "cache", run_dir / "tmp"
    cache.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    os.environ["TMPDIR"] = str(tmp)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tempfile

    tempfile.tempdir = str(tmp)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _write_result(run_dir: Path, result: dict[str, Any]) -> None:
    from core.training.common import write_json_atomic

    if _is_main_process():
        write_json_atomic(run_dir / "result.json", result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.training.run runs/<id>/config.json", file=sys.stderr)
        return 2
    config_path = Path(argv[0]).resolve()
    run_dir = config_path.parent
    progress = None
    try:
        _confine_to_run_dir(run_dir)
        result, progress = _train(config_path, run_dir)
    except BaseException as exc:  # noqa: BLE001 - everything ends in result.json
        traceback.print_exc()
        sys.stderr.flush()
        if isinstance(exc, StudioError):
            result = {"status": "failed", "error": str(exc), "code": exc.code, "message": exc.message,
                      "hint": exc.hint}
        else:
            lines = traceback.format_exception_only(type(exc), exc)
            result = {"status": "failed", "error": (lines[-1].strip() if lines else repr(exc)) or type(exc).__name__}
        try:
            if progress is not None:
                progress.finish("failed")
            _write_result(run_dir, result)
        except Exception:  # the run dir may be gone; the traceback is in the log
            traceback.print_exc()
        return EXIT_FAILED
    if progress is not None:
        progress.finish(result["status"])
    _write_result(run_dir, result)
    print(f"[studio] job finished: {result['status']}", flush=True)
    return EXIT_OK


def _train(config_path: Path, run_dir: Path):
    from core.hardware import detect_hardware
    from core.training import get_algorithm
    from core.training.callbacks import consume_control, read_control
    from core.training.common import JobConfig, log

    job = JobConfig.read(config_path)
    spec = get_algorithm(job.algorithm)
    hyperparams = dict(job.hyperparams)
    if job.seed is not None:
        hyperparams["seed"] = job.seed
    cfg = spec.config_from_dict(hyperparams)
    hardware = detect_hardware()
    cfg.validate(hardware)
    if spec.needs_reward_model and not job.reward_model:
        raise ValidationError(f"{spec.label} needs a reward model", hint="train one (algorithm 'reward') and pick it")

    action = read_control(run_dir)
    if action == "cancel":
        log("cancelled before training started")
        consume_control(run_dir)
        return {"status": "cancelled", "step": 0}, None
    if action == "pause" and job.resume:
        consume_control(run_dir)  # the pause that stopped the previous attempt

    return _run_trainer(job, spec, cfg, hardware, run_dir)


def _run_trainer(job, spec, cfg, hardware, run_dir: Path):
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from core.training.callbacks import ControlCallback, MetricsCallback, ProgressCallback
    from core.training.common import (count_trainable, load_dataset_file, load_policy, log, precision_reason,
                                      save_trained, trainer_kwargs)

    started = time.time()
    module = spec.load()
    set_seed(cfg.seed)
    cache = run_dir / "cache"
    train_dataset = module.prepare_dataset(load_dataset_file(run_dir / "data" / "train.parquet", cache), cfg)
    eval_path = run_dir / "data" / "eval.parquet"
    eval_dataset = module.prepare_dataset(load_dataset_file(eval_path, cache), cfg, "eval") if eval_path.is_file() else None

    setup = load_policy(cfg, job, hardware, len(train_dataset))
    if spec.needs_reward_model:
        from core.training.reward import load_reward_model

        setup.reward_model, setup.reward_tokenizer = load_reward_model(job.reward_model, merge=True)
    reason = precision_reason(hardware, setup.n_params)
    log(f"job {job.job_id}: {spec.label}, {len(train_dataset)} training examples"
        + (f", {len(eval_dataset)} eval examples" if eval_dataset is not None else ""))
    log(f"hardware: {reason}")
    log(f"reference: {setup.reference}")
    for note in setup.notes:
        log(note)

    kwargs = trainer_kwargs(cfg, run_dir, hardware, setup.n_params, eval_dataset is not None)
    derive = module.derived_metrics(cfg) if hasattr(module, "derived_metrics") else None
    metrics = MetricsCallback(run_dir, derive)
    progress = ProgressCallback(run_dir)
    control = ControlCallback(run_dir)
    trainer = module.build_trainer(cfg, setup, train_dataset, eval_dataset, kwargs, [metrics, progress, control])
    log(f"trainable parameters: {count_trainable(trainer.model):,} of {setup.n_params:,}")

    checkpoint = None
    if job.resume:
        checkpoints = run_dir / "checkpoints"
        checkpoint = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
        log(f"resuming from {checkpoint}" if checkpoint else "resume requested but no checkpoint yet: starting fresh")

    trainer.train(resume_from_checkpoint=checkpoint)
    step = trainer.state.global_step
    info = {
        "reference": setup.reference,
        "hardware": reason,
        "trainable_params": count_trainable(trainer.model),
        "total_params": setup.n_params,
        "notes": setup.notes,
    }
    if hasattr(cfg, "uses_precompute"):
        info["precompute_ref_log_probs"] = cfg.uses_precompute(len(train_dataset))

    if control.action == "cancel":
        return {"status": "cancelled", "step": step, "setup": info}, progress
    if control.action == "pause":
        saved = run_dir / "checkpoints" / f"checkpoint-{step}"
        return {"status": "paused", "step": step, "checkpoint": str(saved.resolve()), "setup": info}, progress

    paths = save_trained(trainer, setup, cfg, run_dir)
    summary = {k: v for k, v in metrics.last_train_row.items() if k not in ("time",)}
    summary.update({k: metrics.summary[k] for k in ("train_runtime", "train_loss") if k in metrics.summary})
    summary["steps"] = step
    summary["wall_time_s"] = round(time.time() - started, 1)
    return {"status": "succeeded", **paths, "metrics": summary, "setup": info}, progress


# --- dry-run estimate -------------------------------------------------------------------------------------------

# Measured on this project's reference machine (2 CPU cores, AVX2, fp32, torch 2.13): the achieved training
# throughput in "model FLOPs" per second. See estimate() for the FLOP model. Recalibrate when hardware differs.
CPU_FLOPS_PER_CORE = 6e9
GPU_FLOPS = 30e12
STEP_OVERHEAD_S = 0.05
# Sequences per example and forward-pass equivalents per token (fwd = 1, bwd ~ 2 for full, ~1 for LoRA).
SEQUENCES = {"sft": 1, "reward": 2, "dpo": 2, "kto": 2, "orpo": 2, "online_rl": 1}


def estimate(cfg, n_examples: int, model_dir: str | Path) -> dict[str, Any]:
    """A rough dry-run estimate: {"steps", "seconds", "peak_memory_bytes", "assumptions"}. An estimate, not a promise.

    - steps: what the Trainer will run (max_steps, else epochs x examples / effective batch).
    - seconds: model FLOPs / throughput. Per token a forward costs 2 x params FLOPs; training a token costs 3x a
      forward for full fine-tuning, ~2x with LoRA (no weight gradients for frozen layers); DPO/KTO add one forward
      for the reference unless its log-probs are precomputed; online RL adds generation (num_generations answers of
      max_completion_length tokens, each a forward of the growing sequence, plus the reward model's forward).
      Tokens per sequence are taken as 60% of max_length (padding and short texts). The throughput constants
      (CPU_FLOPS_PER_CORE, GPU_FLOPS, STEP_OVERHEAD_S) were measured on the tiny model and SmolLM2-135M on 2 CPU
      cores; expect +-50%.
    - peak_memory_bytes: weights (+ gradients and AdamW moments for what is trained, + a reference copy for full
      fine-tuning), plus activations ~ batch x tokens x hidden x layers x 34 bytes, plus the logits
      (batch x tokens x vocab x 4 bytes x 3).
    """
    from transformers import AutoConfig

    from core.hardware import detect_hardware

    config = AutoConfig.from_pretrained(str(model_dir)).get_text_config()
    hidden = int(getattr(config, "hidden_size", 768))
    layers = int(getattr(config, "num_hidden_layers", 12))
    vocab = int(getattr(config, "vocab_size", 32000))
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    per_layer = 4 * hidden * hidden + 3 * hidden * inter
    n_params = layers * per_layer + vocab * hidden * (1 if getattr(config, "tie_word_embeddings", True) else 2)

    algorithm = cfg.algorithm
    steps = cfg.planned_steps(n_examples)
    tokens = max(8, int(0.6 * cfg.max_length))
    seqs = SEQUENCES.get(algorithm, 1)
    examples_per_step = cfg.effective_batch_size
    train_tokens_per_step = examples_per_step * seqs * tokens
    passes = 3.0 if cfg.finetune == "full" else 2.0
    if getattr(cfg, "needs_reference", False):
        uses_pre = getattr(cfg, "uses_precompute", None)
        if uses_pre is None or not uses_pre(n_examples):
            passes += 1.0
    flops = 2 * n_params * train_tokens_per_step * passes * steps
    if uses_pre_once := (getattr(cfg, "uses_precompute", None) and cfg.uses_precompute(n_examples)):
        flops += 2 * n_params * n_examples * seqs * tokens  # one reference pass over the data
    if algorithm == "online_rl":
        gen = cfg.max_completion_length
        flops += 2 * n_params * examples_per_step * gen * steps * 2  # decoding is latency-bound: ~2x its FLOPs
    hardware = detect_hardware()
    throughput = GPU_FLOPS if hardware.cuda_available else CPU_FLOPS_PER_CORE * hardware.cpu_cores
    seconds = flops / throughput + STEP_OVERHEAD_S * steps * cfg.gradient_accumulation_steps

    bytes_per_weight = 4 if (cfg.finetune == "full" or not hardware.cuda_available) else 2
    if cfg.finetune == "qlora4":
        bytes_per_weight = 0.55
    elif cfg.finetune == "qlora8":
        bytes_per_weight = 1.05
    weights = n_params * bytes_per_weight
    if cfg.finetune == "full":
        trained = n_params * 12  # fp32 grads + two AdamW moments
        if getattr(cfg, "needs_reference", False) and not uses_pre_once:
            weights *= 2
    else:
        lora_params = layers * 7 * cfg.lora_r * (hidden + inter) / 1.5
        trained = lora_params * 16
    batch_tokens = cfg.per_device_train_batch_size * seqs * cfg.max_length
    activations = batch_tokens * hidden * layers * 34 + batch_tokens * vocab * 4 * 3
    return {
        "steps": steps,
        "seconds": round(seconds, 1),
        "peak_memory_bytes": int(weights + trained + activations),
        "assumptions": f"~{n_params / 1e6:.0f}M params, {tokens} tokens per sequence, "
                       f"{throughput / 1e9:.0f} GFLOP/s effective; rough estimate (+-50%)",
    }


if __name__ == "__main__":
    sys.exit(main())
