"""The training child: ``accelerate launch -m core.training.child runs/<id>/config.json`` (or ``python -m ...``).

The supervisor (core.training.jobs) prepares ``runs/<id>/`` with ``config.json`` and ``data/train.parquet`` (optionally
``data/eval.parquet``) and reads back only files this process writes inside the run dir: ``metrics.jsonl``,
``progress.json``, ``checkpoints/``, ``adapter/`` (or ``model/``), and last ``result.json``; core.training.rundir
defines them all. This process never imports the supervisor (it would drag in DuckDB and the dataset builders).

result.json: {"status": "succeeded" | "paused" | "cancelled" | "failed", ...}; succeeded: adapter_path or
model_path (absolute), metrics (last logged row + train_runtime, train_loss, steps, wall_time_s), setup (reference,
hardware, trainable params, notes); paused: step, checkpoint; cancelled: step; failed: error (+ code, message, hint).
``cache/`` and ``tmp/`` (datasets' cache files, tokenized data, precomputed reference log-probs, temp files) are
removed on success and kept otherwise (a resume reuses them).

It reads ``control.json`` ({"action": "pause" | "cancel"}) after every optimizer step (a cancel also between
gradient-accumulation passes) and renames it to ``control.handled.json`` once acted on; see callbacks.py.
Exit code 0 for succeeded / paused / cancelled, 1 for failed (traceback on stderr = log.txt). SIGTERM ends the
job as failed (with result.json); its checkpoints allow a resume. The top-level config ``seed`` overrides
``hyperparams.seed``; unknown top-level keys are ignored, unknown hyperparameters are an error.

The dry-run estimate of a job (steps, seconds, peak memory) is in core.training.estimate.
"""

from __future__ import annotations

import errno
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
from core.training import rundir

EXIT_OK = 0
EXIT_FAILED = 1


def _confine_to_run_dir(run_dir: Path) -> None:
    """Send every cache / temp file this process may write into the run dir (set before datasets is imported)."""
    cache, tmp = run_dir / rundir.CACHE_DIR, run_dir / rundir.TMP_DIR
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
    if _is_main_process():
        rundir.write_result(run_dir, result)


class Terminated(Exception):
    """SIGTERM arrived (the supervisor or the machine is stopping this job); the checkpoints allow a resume."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated("terminated by SIGTERM (resume from the last checkpoint)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.training.child runs/<id>/config.json", file=sys.stderr)
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
            result = {"status": "failed", "error": str(exc), "code": exc.code, "message": exc.message, "hint": exc.hint}
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
        # tokenized copies and cached log-probs: only needed to resume
        for scratch in (rundir.CACHE_DIR, rundir.TMP_DIR):
            shutil.rmtree(run_dir / scratch, ignore_errors=True)
    _write_result(run_dir, result)
    print(f"[studio] job finished: {result['status']}", flush=True)
    return EXIT_OK


def _disk_full(exc: BaseException | None) -> OSError | None:
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
    for partial in rundir.incomplete_checkpoints(run_dir):
        shutil.rmtree(partial, ignore_errors=True)
    where = getattr(error, "filename", None) or run_dir
    last = rundir.latest_checkpoint(run_dir)
    return StudioError(
        f"The disk is full: no space left while writing {where}",
        hint="free some space in the data dir, then resume the job"
        + (f" (it restarts from {last.name})" if last else " (it had no complete checkpoint: start it again)"),
        code="disk_full",
    )


def _set_aside_previous_result(run_dir: Path) -> None:
    """A resumed job must not look finished (or paused) to a supervisor that re-attaches while it runs."""
    if _is_main_process():
        rundir.set_aside_result(run_dir)


def _last_logged_row(run_dir: Path) -> dict[str, Any]:
    rows = [row for row in rundir.read_metrics(run_dir) if not rundir.is_eval_row(row)]
    return rows[-1] if rows else {}


def _train(config_path: Path, run_dir: Path, live: dict[str, Any]) -> dict[str, Any]:
    from core.serving.hardware import detect_hardware
    from core.training import get_algorithm
    from core.training.common import log

    job = rundir.JobConfig.read(config_path)
    spec = get_algorithm(job.algorithm)
    hyperparams = dict(job.hyperparams)
    if job.seed is not None:
        hyperparams["seed"] = job.seed
    cfg = spec.config_from_dict(hyperparams)
    hardware = detect_hardware()
    cfg.validate(hardware)
    if spec.needs_reward_model and not job.reward_model:
        raise ValidationError(f"{spec.label} needs a reward model", hint="train one (algorithm 'reward') and pick it")

    action = rundir.read_control(run_dir)
    if action == "cancel":
        log("cancelled before training started")
        rundir.consume_control(run_dir)
        return {"status": "cancelled", "step": 0}
    if action == "pause" and job.resume:
        rundir.consume_control(run_dir)  # the pause that stopped the previous attempt

    return _run_trainer(job, spec, cfg, hardware, run_dir, live)


def _run_trainer(job, spec, cfg, hardware, run_dir: Path, live: dict[str, Any]) -> dict[str, Any]:
    from transformers import EarlyStoppingCallback, set_seed

    from core.training.callbacks import (
        ControlCallback,
        CpuShareCallback,
        MetricsCallback,
        ProgressCallback,
        SelectionScoreCallback,
    )
    from core.training.common import (
        MIN_EVAL_FOR_EARLY_STOPPING,
        early_stopping,
        load_dataset_file,
        log,
        precision_reason,
        trainer_kwargs,
    )
    from core.training.logprob import use_dense_logprobs_on_cpu
    from core.training.weights import count_trainable, load_for_training, save_trained

    started = time.time()
    module = spec.load()
    use_dense_logprobs_on_cpu()  # TRL's chunked log-prob kernel is 2x slower on CPU (core.training.logprob)
    set_seed(cfg.seed)
    cache = run_dir / rundir.CACHE_DIR
    train_dataset = module.prepare_dataset(load_dataset_file(rundir.train_data_path(run_dir), cache), cfg)
    eval_path = rundir.eval_data_path(run_dir)
    eval_dataset = (
        module.prepare_dataset(load_dataset_file(eval_path, cache), cfg, "eval") if eval_path.is_file() else None
    )

    setup = load_for_training(cfg, job, hardware, len(train_dataset))
    if spec.needs_reward_model:
        from core.training.reward import load_reward_model

        setup.reward_model, setup.reward_tokenizer = load_reward_model(job.reward_model, merge=True)
    reason = precision_reason(hardware, setup.n_params)
    log(
        f"job {job.job_id}: {spec.label}, {len(train_dataset)} training examples"
        + (f", {len(eval_dataset)} eval examples" if eval_dataset is not None else "")
    )
    log(f"hardware: {reason}")
    log(f"reference: {setup.reference}")
    for note in setup.notes:
        log(note)

    kwargs = trainer_kwargs(
        cfg,
        run_dir,
        hardware,
        setup.n_params,
        eval_dataset is not None,
        early_stopping(cfg, len(eval_dataset) if eval_dataset is not None else 0),
    )
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
            log(
                f"{len(eval_dataset)} held-out examples are too few to choose a checkpoint by (at least "
                f"{MIN_EVAL_FOR_EARLY_STOPPING}): evaluating for the curves, keeping the last step"
            )
    trainer = module.build_trainer(cfg, setup, train_dataset, eval_dataset, kwargs, callbacks)
    log(f"trainable parameters: {count_trainable(trainer.model):,} of {setup.n_params:,}")

    checkpoint = None
    if job.resume:
        last = rundir.latest_checkpoint(run_dir)  # complete checkpoints only
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
        saved = rundir.checkpoint_path(run_dir, step)
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
    return {
        "kept_step": best_step or state.global_step,
        "best_selection_score": state.best_metric,
        "stopped_early": state.global_step < state.max_steps,
        "planned_steps": state.max_steps,
    }


if __name__ == "__main__":
    sys.exit(main())
