"""The training child: ``accelerate launch -m core.training.run runs/<id>/config.json`` (or ``python -m ...``).

The supervisor (core.training.jobs) prepares ``runs/<id>/`` with ``config.json`` and ``data/train.parquet`` (optionally
``data/eval.parquet``) and reads back only files this process writes inside the run dir:

    metrics.jsonl    one JSON row per logging step (TRL metric names + step, epoch, time, tokens_per_s, ...);
                     append-only, also across resumes (a resume from an older checkpoint re-logs those steps:
                     readers keep the last row per step)
    progress.json    {"step", "max_steps", "epoch", "elapsed_s", "eta_s", "status"}, rewritten atomically each step
    checkpoints/     checkpoint-<step>/ (HF Trainer checkpoints; resume continues from the latest)
    adapter/         the trained LoRA adapter (PEFT layout + tokenizer + studio_training.json), or model/ after
                     full fine-tuning; a reward model's adapter also holds its score head (load_reward_model)
    result.json      written LAST, atomically: {"status": "succeeded" | "paused" | "cancelled" | "failed", ...}
                     succeeded: adapter_path or model_path (absolute), metrics (last logged row + train_runtime,
                     train_loss, steps, wall_time_s), setup (reference, hardware, trainable params, notes)
                     paused: step, checkpoint; cancelled: step; failed: error (+ code, message, hint)
    cache/, tmp/     datasets' cache files (tokenized data, precomputed reference log-probs) and temp files;
                     removed on success, kept otherwise (a resume reuses them)

It reads ``control.json`` ({"action": "pause" | "cancel"}) after every optimizer step (a cancel also between
gradient-accumulation passes) and renames it to ``control.handled.json`` once acted on; see callbacks.py.
Exit code 0 for succeeded / paused / cancelled, 1 for failed (traceback on stderr = log.txt). SIGTERM ends the
job as failed (with result.json); its checkpoints allow a resume. The top-level config ``seed`` overrides
``hyperparams.seed``; unknown top-level keys are ignored, unknown hyperparameters are an error.

``estimate(cfg, n_examples, model_dir)`` gives a dry-run guess of steps, seconds and peak memory.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from core.errors import StudioError, ValidationError
from core.serving.hardware import quiet_unactionable_warnings

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


class Terminated(Exception):
    """SIGTERM arrived (the supervisor or the machine is stopping this job); the checkpoints allow a resume."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated("terminated by SIGTERM (resume from the last checkpoint)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.training.run runs/<id>/config.json", file=sys.stderr)
        return 2
    config_path = Path(argv[0]).resolve()
    run_dir = config_path.parent
    quiet_unactionable_warnings()
    signal.signal(signal.SIGTERM, _on_sigterm)
    live: dict[str, Any] = {}  # the progress callback, once training has been set up
    try:
        _confine_to_run_dir(run_dir)
        _set_aside_previous_result(run_dir)
        result = _train(config_path, run_dir, live)
    except BaseException as exc:  # noqa: BLE001 - everything ends in result.json
        traceback.print_exc()
        sys.stderr.flush()
        full = _disk_full(exc)
        if full is not None:
            exc = _disk_full_error(run_dir, full)
            print(f"[studio] {exc}", file=sys.stderr, flush=True)
        if isinstance(exc, StudioError):
            result = {"status": "failed", "error": str(exc), "code": exc.code, "message": exc.message,
                      "hint": exc.hint}
        else:
            lines = traceback.format_exception_only(type(exc), exc)
            result = {"status": "failed", "error": (lines[-1].strip() if lines else repr(exc)) or type(exc).__name__}
        try:
            if "progress" in live:
                live["progress"].finish("failed")
            _write_result(run_dir, result)
        except Exception:  # the run dir may be gone; the traceback is in the log
            traceback.print_exc()
        return EXIT_FAILED
    if "progress" in live:
        live["progress"].finish(result["status"])
    if result["status"] == "succeeded" and _is_main_process():
        for scratch in ("cache", "tmp"):  # tokenized copies and cached log-probs: only needed to resume
            shutil.rmtree(run_dir / scratch, ignore_errors=True)
    _write_result(run_dir, result)
    print(f"[studio] job finished: {result['status']}", flush=True)
    return EXIT_OK


def _disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error behind ``exc`` (torch and safetensors wrap the OSError), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return OSError(errno.ENOSPC, str(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full_error(run_dir: Path, error: OSError) -> StudioError:
    """Say what happened and what to do, and drop the checkpoint that was cut short so a resume never
    starts from it (the complete ones are kept)."""
    from core.training.jobs import incomplete_checkpoints, latest_checkpoint

    for partial in incomplete_checkpoints(run_dir):
        shutil.rmtree(partial, ignore_errors=True)
    where = getattr(error, "filename", None) or run_dir
    last = latest_checkpoint(run_dir)
    return StudioError(
        f"The disk is full: no space left while writing {where}",
        hint="free some space in the data dir, then resume the job"
             + (f" (it restarts from {last.name})" if last else " (it had no complete checkpoint: start it again)"),
        code="disk_full")


def _set_aside_previous_result(run_dir: Path) -> None:
    """A resumed job must not look finished (or paused) to a supervisor that re-attaches while it runs."""
    previous = run_dir / "result.json"
    if previous.is_file() and _is_main_process():
        os.replace(previous, run_dir / "result.previous.json")


def _last_logged_row(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [row for row in rows if not any(key.startswith("eval_") for key in row)]
    return rows[-1] if rows else {}


def _train(config_path: Path, run_dir: Path, live: dict[str, Any]) -> dict[str, Any]:
    from core.serving.hardware import detect_hardware
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
        return {"status": "cancelled", "step": 0}
    if action == "pause" and job.resume:
        consume_control(run_dir)  # the pause that stopped the previous attempt

    return _run_trainer(job, spec, cfg, hardware, run_dir, live)


def _run_trainer(job, spec, cfg, hardware, run_dir: Path, live: dict[str, Any]) -> dict[str, Any]:
    from transformers import set_seed

    from core.training.jobs import latest_checkpoint
    from transformers import EarlyStoppingCallback

    from core.training.callbacks import (ControlCallback, CpuShareCallback, MetricsCallback, ProgressCallback,
                                         SelectionScoreCallback)
    from core.training.common import (MIN_EVAL_FOR_EARLY_STOPPING, count_trainable, early_stopping,
                                      load_dataset_file, load_policy, log, precision_reason, save_trained,
                                      trainer_kwargs)

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

    kwargs = trainer_kwargs(cfg, run_dir, hardware, setup.n_params, eval_dataset is not None,
                            early_stopping(cfg, len(eval_dataset) if eval_dataset is not None else 0))
    derive = module.derived_metrics(cfg) if hasattr(module, "derived_metrics") else None
    metrics = MetricsCallback(run_dir, derive)
    progress = live["progress"] = ProgressCallback(run_dir)
    control = ControlCallback(run_dir)
    callbacks = [metrics, progress, control, CpuShareCallback(run_dir)]
    if eval_dataset is not None:
        callbacks.append(SelectionScoreCallback())
        if early_stopping(cfg, len(eval_dataset)):
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        elif cfg.early_stopping_patience > 0:
            log(f"{len(eval_dataset)} held-out examples are too few to choose a checkpoint by (at least "
                f"{MIN_EVAL_FOR_EARLY_STOPPING}): evaluating for the curves, keeping the last step")
    trainer = module.build_trainer(cfg, setup, train_dataset, eval_dataset, kwargs, callbacks)
    log(f"trainable parameters: {count_trainable(trainer.model):,} of {setup.n_params:,}")

    checkpoint = None
    if job.resume:
        last = latest_checkpoint(run_dir)   # complete checkpoints only
        checkpoint = str(last) if last else None
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
    info.update(_early_stopping_info(trainer))

    if control.action == "cancel":
        return {"status": "cancelled", "step": step, "setup": info}
    if control.action == "pause":
        saved = run_dir / "checkpoints" / f"checkpoint-{step}"
        return {"status": "paused", "step": step, "checkpoint": str(saved.resolve()), "setup": info}

    paths = save_trained(trainer, setup, cfg, run_dir)
    last_row = metrics.last_train_row or _last_logged_row(run_dir)  # empty when a resume had no steps left
    summary = {k: v for k, v in last_row.items() if k not in ("time",)}
    summary.update({k: metrics.summary[k] for k in ("train_runtime", "train_loss") if k in metrics.summary})
    summary["steps"] = step
    summary["wall_time_s"] = round(time.time() - started, 1)
    return {"status": "succeeded", **paths, "metrics": summary, "setup": info}


def _early_stopping_info(trainer) -> dict[str, Any]:
    """Which step's weights are kept and why (the best held-out evaluation, or simply the last step)."""
    state = trainer.state
    if not trainer.args.load_best_model_at_end:
        return {}
    best = state.best_model_checkpoint
    best_step = int(best.rsplit("-", 1)[-1]) if best else None
    return {"kept_step": best_step or state.global_step, "best_selection_score": state.best_metric,
            "stopped_early": state.global_step < state.max_steps,
            "planned_steps": state.max_steps}


# --- dry-run estimate -------------------------------------------------------------------------------------------

# Achieved training throughput in model FLOPs per second per CPU core, and fixed costs, calibrated with LoRA DPO
# (batch 2 pairs) on this project's 2-core machine (AMX bf16): SmolLM2-135M ~1.0 s/step at ~45 tokens per sequence
# (~160 GFLOP/s), the tiny test model ~0.2 s/step (overhead-bound). DESIGN.md's fp32 AVX2 figure (8.2 s per step
# of 4 pairs on SmolLM2-135M) is about half that rate per core.
CPU_FLOPS_PER_CORE = {"bf16": 80e9, "fp32": 40e9}
GPU_FLOPS = 25e12
MICRO_STEP_OVERHEAD_S = {"cpu": 0.15, "cuda": 0.03}
DECODE_STEP_S = {"cpu": 0.1, "cuda": 0.02}  # per generated token position (online RL), on top of its FLOPs
SEQUENCES = {"sft": 1, "reward": 2, "dpo": 2, "kto": 2, "orpo": 2, "online_rl": 1}  # sequences per example


def estimate(cfg, n_examples: int, model_dir: str | Path, avg_tokens: int | None = None) -> dict[str, Any]:
    """A rough dry-run estimate: {"steps", "seconds", "peak_memory_bytes", "assumptions"}. An estimate, not a promise.

    - steps: what the Trainer will run (max_steps, else epochs x examples / effective batch).
    - seconds: model FLOPs / measured throughput + a fixed cost per micro-batch. A forward pass costs
      2 x params FLOPs per token (the LM head included); training costs 3 forwards per token for full fine-tuning,
      ~2 with LoRA (no weight gradients for frozen layers); DPO / KTO add a reference forward per step, or one pass
      over the data when reference log-probs are precomputed; online RL adds decoding max_completion_length
      positions per micro-batch. ``avg_tokens`` is the mean tokens per sequence (prompt + answer, chat template
      included); by default 60% of max_length, which overestimates for short chats. Expect +-50%.
    - peak_memory_bytes: weights (2 copies for full fine-tuning with a live reference), gradients and AdamW moments
      of what is trained, activations ~ batch x length x hidden x layers x 34 bytes, logits ~ batch x length x
      vocab x 4 bytes x 3.
    """
    from transformers import AutoConfig

    from core.serving.hardware import detect_hardware

    config = AutoConfig.from_pretrained(str(model_dir)).get_text_config()
    hidden = int(getattr(config, "hidden_size", 768))
    layers = int(getattr(config, "num_hidden_layers", 12))
    vocab = int(getattr(config, "vocab_size", 32000))
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    attention = 2 * hidden * hidden + 2 * hidden * (hidden * kv_heads // heads)
    n_params = layers * (attention + 3 * hidden * inter) + vocab * hidden

    hardware = detect_hardware()
    device = "cuda" if hardware.cuda_available else "cpu"
    if device == "cuda":
        throughput = GPU_FLOPS
    else:
        throughput = CPU_FLOPS_PER_CORE["bf16" if hardware.cpu_native_bf16 else "fp32"] * hardware.cpu_cores

    steps = cfg.planned_steps(n_examples)
    tokens = int(avg_tokens or max(8, int(0.6 * cfg.max_length)))
    seqs = SEQUENCES.get(cfg.algorithm, 1)
    micro_steps = steps * cfg.gradient_accumulation_steps
    precompute = bool(getattr(cfg, "uses_precompute", None) and cfg.uses_precompute(n_examples))
    passes = 3.0 if cfg.finetune == "full" else 2.0
    if cfg.needs_reference and not precompute:
        passes += 1.0
    flops = 2 * n_params * cfg.effective_batch_size * seqs * tokens * passes * steps
    if precompute:
        flops += 2 * n_params * n_examples * seqs * tokens
    seconds = flops / throughput + MICRO_STEP_OVERHEAD_S[device] * micro_steps
    if cfg.algorithm == "online_rl":
        per_position = DECODE_STEP_S[device] + 2 * n_params * cfg.per_device_train_batch_size / throughput
        seconds += cfg.max_completion_length * per_position * micro_steps

    bytes_per_weight = {"qlora4": 0.55, "qlora8": 1.05}.get(cfg.finetune, 4 if (cfg.finetune == "full" or device == "cpu") else 2)
    weights = n_params * bytes_per_weight
    if cfg.finetune == "full":
        trained = n_params * 12  # fp32 gradients + two AdamW moments
        if cfg.needs_reference and not precompute:
            weights *= 2
    else:
        lora_params = layers * cfg.lora_r * (2 * (4 * hidden) + 3 * (hidden + inter))
        trained = lora_params * 16
    batch_tokens = cfg.per_device_train_batch_size * seqs * min(cfg.max_length, max(tokens, 1) * 2)
    activations = batch_tokens * hidden * layers * 34 + batch_tokens * vocab * 4 * 3
    return {
        "steps": steps,
        "seconds": round(seconds, 1),
        "peak_memory_bytes": int(weights + trained + activations),
        "assumptions": f"rough estimate (+-50%): ~{n_params / 1e6:.0f}M params, {tokens} tokens per sequence, "
                       f"{throughput / 1e9:.0f} GFLOP/s on {device}",
    }


if __name__ == "__main__":
    sys.exit(main())
