"""Training-step benchmark: DPO + LoRA on the default model (SmolLM2-135M-Instruct), CPU, 4 pairs per step.

Last line: ``RESULT mfu_pct=... vs_trl_defaults=... overhead=... ref_cache_speedup=...``

Setup
- The default model is provisioned offline with ``core.serving.models.provision_default_model`` into a cache dir under
  /tmp (``STUDIO_BENCH_CACHE``, default /tmp/rlhf_studio_bench_train_step), so repeated runs do not reconvert it.
- Data: ``PAIRS`` of bench/train_step_pairs.py, 16 fixed conversational preference pairs (TRL
  ``prompt/chosen/rejected`` messages, ~100-200 tokens per prompt+answer with the chat template). Every run
  trains on exactly these rows.
- Batch: 4 pairs per optimizer step (per_device_train_batch_size=4, no gradient accumulation). Each run does 8
  optimizer steps (2 epochs over the 16 pairs); steps 1-2 are warm-up, step times are medians.

Runs (each in its own fresh process, one after the other; the parent only samples CPU load while they run)
1. ours (auto): the product path. A run dir is written in the supervisor's contract, with the run-dir module
   ``core.training.rundir`` (``config.json`` = ``JobConfig`` with ``JobRequest(...).config().to_dict()`` as
   hyperparams, ``data/train.parquet``), then ``python -m core.training.child runs/<id>/config.json`` is started with
   the supervisor's environment, including its thread limit: OMP_NUM_THREADS = MKL_NUM_THREADS =
   ``core.training.distributed.trainer_threads()`` (every core; the job lends one to the chat only while people
   chat, and nobody chats during the benchmark).
   Started with plain ``python -m`` (not ``accelerate launch``, which the studio uses) so launcher start-up
   cannot leak into the step time; on a 1-process CPU job accelerate only sets env (it keeps an OMP_NUM_THREADS
   that is already set; mixed_precision=no is overridden by TrainingArguments' own bf16). Hyperparameters: the
   product's defaults except batch 4 / accumulation 1 / 2 epochs and ``logging_steps=1``. The precision,
   checkpointing and reference-cache choices are the product's own (hardware detection, precompute "auto").
2. ours (precompute off): the same with ``precompute_ref_log_probs="off"`` (for ref_cache_speedup).
3. TRL, same settings: a plain TRL script (bench/train_step_trl.py ``--baseline same``) with DPOTrainer and the
   settings our job used: precision / checkpointing from ``core.serving.hardware.training_defaults`` (what the child
   applies), the precompute decision from the child's result.json, the LoRA / beta / lr / max_length / seed values
   of our config, and the same thread count.
4. TRL defaults: the plain TRL script with ``--baseline defaults``: ``DPOConfig(output_dir,
   per_device_train_batch_size=4, max_steps=5, report_to="none", use_cpu=True)``, everything else TRL's defaults
   (bf16=True, gradient_checkpointing=True, no precompute, lr 1e-6), LoRA through ``peft_config`` with our LoRA shape.
   (``use_cpu=True`` is required: without a GPU, TrainingArguments rejects TRL's bf16 default.) Run from a plain
   shell: torch's default threads (all cores).
5. Context only (not in RESULT), when trainer_threads() differs from torch's default (STUDIO_TRAIN_THREADS set):
   our job with torch's default threads.

How step times are measured (nothing is added to core)
- Ours: the child records no per-step duration, but with ``logging_steps=1`` its MetricsCallback writes one
  ``metrics.jsonl`` row per optimizer step with a wall-clock ``time`` stamped after that step's callbacks
  (progress.json write, control poll) and logging. Step k's time = time(row k) - time(row k-1): the whole
  training-loop cost of a step, product callbacks included.
- Plain TRL baselines: a TrainerCallback stamps ``on_step_end``; step k's time = stamp k - stamp k-1 (same span).
- mfu / overhead / vs_trl_defaults: median over steps 3-8 (TRL defaults: 5 steps, median of 3-5, its steps are
  several times slower). ref_cache_speedup: median over epoch-2 steps (5-8).

Figures
- mfu_pct: model FLOPs of one step of OUR job / its median step time / fp32 matmul peak. FLOPs = 6*N*T for the policy
  forward+backward plus 2*N*T for the reference forward when the step runs it (not when reference log-probs are
  precomputed: then no reference forward happens in the step). N = parameters of the base model (what the
  child reports), T = real (unpadded) prompt+completion tokens of the 4 chosen + 4 rejected sequences, the mean
  over the dataset (read from TRL's tokenization in the baseline process). 6*N*T is the usual convention; with
  LoRA the frozen weights need no weight gradients, so the work actually done is nearer 4*N*T.
  Peak: best of 10 2048x2048 fp32 ``torch.matmul`` with torch's default threads, in this process, measured
  whenever the machine is quiet between runs (the best measurement counts); the peak at the trainer's thread
  count is printed for context. If the
  job trains under bf16 autocast (native bf16 CPUs), MFU against the fp32 peak can exceed what fp32 allows; the
  bf16 peak and the MFU against it are printed on a progress line.
- vs_trl_defaults: our median step time / TRL defaults' median step time.
- overhead: our median step time / the same-settings TRL script's median step time.
- ref_cache_speedup: epoch-2 median step time of ours with precompute off / with precompute on.

A shared machine (other engineers' tests and benchmarks): two 2-thread torch processes on 2 cores slow each other
down 5-10x (OpenMP threads wait for descheduled peers), so foreign load is handled explicitly
(bench/shared_machine.py):
- before each run the parent waits (bounded: STUDIO_BENCH_QUIET_WAIT_S per run, STUDIO_BENCH_QUIET_BUDGET_S in
  all) until other processes use < QUIET_CORES for two 2-s windows;
- while a child runs, the parent samples every 0.5 s the CPU used by everything else ("foreign load");
- a step during which the foreign load averaged > QUIET_CORES is left out of the medians, provided
  MIN_CLEAN_STEPS clean steps remain; a run without enough clean steps is repeated (STUDIO_BENCH_ATTEMPTS runs at
  most), else its figure is printed with a "!!" flag. Every step time is printed with its foreign load.
- the process CPU time per step is printed as a diagnostic (with both threads busy it is 2 x the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from shared_machine import (  # noqa: E402
    QUIET_BUDGET_S,
    QUIET_CORES,
    attempts,
    clean_median,
    cpu_per_step,
    matmul_peak,
    run_child,
    step_times,
    wait_for_quiet,
)
from train_step_pairs import PAIRS, preference_rows  # noqa: E402

from core.training import rundir  # noqa: E402  (cheap: no torch or transformers at import)

CACHE_DIR = Path(os.environ.get("STUDIO_BENCH_CACHE", "/tmp/rlhf_studio_bench_train_step"))
BATCH_PAIRS = 4
EPOCHS = 2
WARMUP_STEPS = 2
TRL_DEFAULTS_STEPS = 5  # TRL's defaults are much slower per step: 2 warm-up + 3 timed steps
TRL_SCRIPT = Path(__file__).resolve().parent / "train_step_trl.py"

# --- children ---------------------------------------------------------------------------------------------------


def child_env(threads: int | None, extra: dict | None = None) -> dict:
    """The supervisor's child environment (core.training.jobs.Supervisor._launch), with ``threads`` CPU threads
    (None: leave torch's default, as a plain script run from a shell would)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads is not None:
            env[name] = str(threads)
    return env


def progress_note(run_dir: Path) -> str:
    """ ", step 3/8" from the job's progress.json ("" before its first step)."""
    progress = rundir.read_progress(run_dir)
    return f", step {progress.get('step')}/{progress.get('max_steps')}" if progress else ""


# --- our job (the product path) ---------------------------------------------------------------------------------


def run_ours(
    label: str,
    runs_dir: Path,
    model_dir: Path,
    overrides: dict,
    budget: dict,
    spans: list[tuple[int, int]],
    threads: int,
) -> dict:
    from core.training.request import JobRequest

    rows = preference_rows()
    cfg = JobRequest(algorithm="dpo", hyperparams=overrides).config(len(rows))  # as the supervisor chooses it

    def start(attempt: int) -> dict:
        job_id = len(list(runs_dir.iterdir())) + 1
        run_dir = runs_dir / str(job_id)
        run_dir.mkdir(parents=True)
        rundir.write_data(run_dir, rows)
        config_file = rundir.write_config(
            run_dir,
            rundir.JobConfig(
                job_id=job_id, algorithm="dpo", base_model=str(model_dir), hyperparams=cfg.to_dict(), seed=cfg.seed
            ),
        )
        cmd = [sys.executable, "-m", "core.training.child", str(config_file)]
        facts = run_child(
            label, cmd, rundir.log_path(run_dir), child_env(threads), budget, progress=lambda: progress_note(run_dir)
        )
        result = rundir.read_result(run_dir) or {}
        if result.get("status") != "succeeded":
            raise SystemExit(f"{label}: job {result.get('status')}: {result.get('error')}")
        stamps: dict[int, float] = {}
        for row in rundir.read_metrics(run_dir):
            if "time" in row and not rundir.is_eval_row(row):
                stamps.setdefault(int(row["step"]), float(row["time"]))
        log_lines = rundir.log_path(run_dir).read_text(errors="replace").splitlines()
        return {
            **facts,
            "cfg": cfg,
            "result": result,
            "stamps": stamps,
            "times": step_times(stamps),
            "run_dir": run_dir,
            "studio_lines": [line for line in log_lines if line.startswith("[studio]")],
        }

    return attempts(label, start, spans)


# --- the plain TRL script (bench/train_step_trl.py, run as a child) ----------------------------------------------


def run_baseline(
    label: str,
    mode: str,
    work_root: Path,
    model_dir: Path,
    parquet: Path,
    settings: dict,
    budget: dict,
    spans: list[tuple[int, int]],
    threads: int | None,
) -> dict:
    def start(attempt: int) -> dict:
        work = work_root / f"{mode}-{attempt}"
        work.mkdir(parents=True)
        out = work / "baseline.json"
        cmd = [
            sys.executable,
            str(TRL_SCRIPT),
            "--baseline",
            mode,
            "--model",
            str(model_dir),
            "--data",
            str(parquet),
            "--work",
            str(work),
            "--out",
            str(out),
            "--settings",
            json.dumps(settings),
        ]
        env = child_env(threads, {"HF_DATASETS_CACHE": str(work / "cache")})
        facts = run_child(label, cmd, work / "log.txt", env, budget)
        data = json.loads(out.read_text())
        stamps = {int(k): v for k, v in data["step_end"].items()}
        return {**facts, **data, "stamps": stamps, "times": step_times(stamps)}

    return attempts(label, start, spans)


# --- main -------------------------------------------------------------------------------------------------------


def main() -> None:
    import torch

    from core.serving.hardware import detect_hardware, training_defaults
    from core.serving.models import provision_default_model
    from core.training.distributed import trainer_threads

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model_dir = provision_default_model(CACHE_DIR / "data", progress=False)
    print(f"default model ready in {time.time() - t0:.1f} s: {model_dir}", flush=True)
    hardware = detect_hardware()
    threads = torch.get_num_threads()
    job_threads = trainer_threads()  # what the supervisor gives a training child (OMP_NUM_THREADS)
    print(
        f"machine: {hardware.cpu_model}, {hardware.cpu_cores} cores, torch threads {threads}, "
        f"native bf16: {hardware.cpu_native_bf16}; the studio runs trainers with {job_threads} thread(s) "
        f"(core.training.distributed.trainer_threads)",
        flush=True,
    )

    budget = {"left": QUIET_BUDGET_S}
    peaks = {"fp32": 0.0, "bf16": 0.0, "fp32_job_threads": 0.0}

    def measure_peaks() -> None:
        """The matmul peaks, measured again whenever the machine has just been found quiet; the best counts."""
        if wait_for_quiet("matmul peak", budget) <= QUIET_CORES:
            peaks["fp32"] = max(peaks["fp32"], matmul_peak(torch.float32))
            peaks["bf16"] = max(peaks["bf16"], matmul_peak(torch.bfloat16))
            if job_threads != threads:  # context: the peak with the trainer's thread count
                torch.set_num_threads(job_threads)
                peaks["fp32_job_threads"] = max(peaks["fp32_job_threads"], matmul_peak(torch.float32))
                torch.set_num_threads(threads)

    measure_peaks()
    if peaks["fp32"]:
        print(
            f"matmul peak (2048^3, best of 10): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
            f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
            flush=True,
        )
    else:
        print("matmul peak: machine busy, measured later (between runs, when quiet)", flush=True)

    steps_total = EPOCHS * len(PAIRS) // BATCH_PAIRS
    timed = (WARMUP_STEPS + 1, steps_total)
    epoch2 = (steps_total // EPOCHS + 1, steps_total)
    base_overrides = {
        "per_device_train_batch_size": BATCH_PAIRS,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": EPOCHS,
        "logging_steps": 1,
    }

    def report(label: str, run: dict, span: tuple[int, int]) -> float:
        med = clean_median(label, run, *span)
        cpu = cpu_per_step(run, *span)
        print(
            f"  [{label}] process CPU time: median {cpu:.2f} CPU-s per step (both threads busy all step would be "
            f"{threads} x the wall time)",
            flush=True,
        )
        return med

    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        tmp = Path(tmp)
        runs = tmp / "runs"
        runs.mkdir()

        # 1. our job, product defaults (precompute "auto")
        print(
            f"run 1/4: our job (python -m core.training.child), DPO LoRA, {BATCH_PAIRS} pairs/step, "
            f"{steps_total} steps, precompute auto",
            flush=True,
        )
        ours = run_ours("ours auto", runs, model_dir, base_overrides, budget, [timed, epoch2], job_threads)
        for line in ours["studio_lines"]:
            if any(key in line for key in ("hardware:", "reference:", "trainable")):
                print(f"  child: {line}", flush=True)
        setup = ours["result"]["setup"]
        n_params = int(setup["total_params"])
        precompute_on = bool(setup.get("precompute_ref_log_probs"))
        defaults = training_defaults(hardware, n_params)
        ours_step = report("ours auto", ours, timed)
        print(
            f"  [ours auto] launch -> end of step 1: {min(ours['stamps'].values()) - ours['started']:.1f} s "
            f"(imports, tokenize, load, reference pass); end of step {steps_total} -> exit: "
            f"{ours['ended'] - ours['stamps'][steps_total]:.1f} s (save adapter, result.json)",
            flush=True,
        )
        measure_peaks()

        # 2. our job, reference log-probs recomputed every step
        print("run 2/4: our job with precompute_ref_log_probs=off", flush=True)
        ours_off = run_ours(
            "ours precompute off",
            runs,
            model_dir,
            {**base_overrides, "precompute_ref_log_probs": "off"},
            budget,
            [timed, epoch2],
            job_threads,
        )
        ours_off_step = report("ours precompute off", ours_off, timed)
        if precompute_on:
            cached = ours
        else:  # auto chose off: measure the cached path explicitly
            print("run 2b: our job with precompute_ref_log_probs=on", flush=True)
            cached = run_ours(
                "ours precompute on",
                runs,
                model_dir,
                {**base_overrides, "precompute_ref_log_probs": "on"},
                budget,
                [epoch2],
                job_threads,
            )
        no_cache_e2 = clean_median("ours precompute off, epoch 2", ours_off, *epoch2)
        cache_e2 = clean_median("ours precompute on, epoch 2", cached, *epoch2)
        measure_peaks()

        # 3. plain TRL with our job's settings
        cfg = ours["cfg"]
        parquet = rundir.train_data_path(ours["run_dir"])
        same_settings = {
            "batch": BATCH_PAIRS,
            "epochs": EPOCHS,
            "max_steps": steps_total,
            "bf16": bool(defaults["bf16"]),
            "gradient_checkpointing": bool(defaults["gradient_checkpointing"]),
            "precompute": precompute_on,
            "precompute_batch": BATCH_PAIRS * 4,
            "learning_rate": cfg.learning_rate,
            "lr_scheduler_type": cfg.lr_scheduler_type,
            "beta": cfg.beta,
            "loss_type": cfg.loss_type,
            "max_length": cfg.max_length,
            "seed": cfg.seed,
            "lora_r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "lora_target_modules": cfg.lora_target_modules
            if cfg.lora_target_modules == "all-linear"
            else [t.strip() for t in cfg.lora_target_modules.split(",")],
        }
        print(
            f"run 3/4: plain TRL DPOTrainer with our job's settings (bf16={same_settings['bf16']}, "
            f"gradient_checkpointing={same_settings['gradient_checkpointing']}, precompute={precompute_on}, "
            f"{job_threads} thread(s))",
            flush=True,
        )
        same = run_baseline(
            "TRL same settings",
            "same",
            tmp / "baselines",
            model_dir,
            parquet,
            same_settings,
            budget,
            [timed],
            job_threads,
        )
        same_step = report("TRL same settings", same, timed)
        measure_peaks()

        # 4. plain TRL defaults
        def_span = (WARMUP_STEPS + 1, TRL_DEFAULTS_STEPS)
        print(
            f"run 4/4: plain TRL DPOConfig defaults (bf16=True, gradient_checkpointing=True, no precompute), "
            f"{TRL_DEFAULTS_STEPS} steps, torch's default threads ({threads})",
            flush=True,
        )
        trl_def = run_baseline(
            "TRL defaults",
            "defaults",
            tmp / "baselines",
            model_dir,
            parquet,
            {**same_settings, "max_steps": TRL_DEFAULTS_STEPS},
            budget,
            [def_span],
            None,
        )
        print(
            f"  [TRL defaults] resolved: bf16={trl_def['bf16']}, gradient_checkpointing="
            f"{trl_def['gradient_checkpointing']}, precompute={trl_def['precompute']}, "
            f"lr={trl_def['learning_rate']}, weights {trl_def['weights_dtype']}",
            flush=True,
        )
        trl_def_step = report("TRL defaults", trl_def, def_span)

        # 5. context only: our job with every core (what trainer_threads() holds back for chat)
        all_cores_step = None
        if job_threads != threads:
            print(
                f"run 5 (context, not in RESULT): our job with {threads} threads instead of {job_threads}", flush=True
            )
            measure_peaks()
            all_cores = run_ours("ours auto, all threads", runs, model_dir, base_overrides, budget, [timed], threads)
            all_cores_step = report("ours auto, all threads", all_cores, timed)

    # --- figures
    if peaks["fp32"] == 0.0:  # never quiet: measure anyway, and say so
        print("  !! the machine was never quiet: matmul peaks measured under load (too low)", flush=True)
        peaks["fp32"], peaks["bf16"] = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    fp32_peak, bf16_peak = peaks["fp32"], peaks["bf16"]
    print(
        f"matmul peak, best of the quiet measurements: fp32 {fp32_peak / 1e9:.0f} GFLOP/s, "
        f"bf16 {bf16_peak / 1e9:.0f} GFLOP/s",
        flush=True,
    )
    tokens_per_step = BATCH_PAIRS * statistics.mean(same["pair_tokens"])
    seq = same["seq_tokens"]
    print(
        f"tokens: {min(seq)}-{max(seq)} per sequence (mean {statistics.mean(seq):.0f}), "
        f"{tokens_per_step:.0f} per step (4 chosen + 4 rejected, unpadded); N = {n_params / 1e6:.1f}M params",
        flush=True,
    )
    if same["n_params"] != n_params:
        print(f"  note: the baseline counts {same['n_params']:,} params, our job {n_params:,}", flush=True)
    ref_term = 0 if precompute_on else 2
    flops = (6 + ref_term) * n_params * tokens_per_step
    achieved = flops / ours_step
    mfu = 100 * achieved / fp32_peak
    precision = "bf16 autocast (LoRA: frozen base weights in bf16, adapters fp32)" if defaults["bf16"] else "fp32"
    print(
        f"our job used: {precision}, gradient checkpointing {'on' if defaults['gradient_checkpointing'] else 'off'}, "
        f"reference log-probs "
        f"{'precomputed (no reference forward in the step)' if precompute_on else 'computed each step'}",
        flush=True,
    )
    print(
        f"our step: {6 + ref_term}*N*T = {flops / 1e12:.3f} TFLOP in {ours_step:.2f} s = {achieved / 1e9:.0f} "
        f"GFLOP/s = {mfu:.1f}% of the fp32 peak, {100 * achieved / bf16_peak:.1f}% of the bf16 peak",
        flush=True,
    )
    off_achieved = 8 * n_params * tokens_per_step / ours_off_step
    print(
        f"  (precompute off: 8*N*T in {ours_off_step:.2f} s = {off_achieved / 1e9:.0f} GFLOP/s = "
        f"{100 * off_achieved / fp32_peak:.1f}% of the fp32 peak)",
        flush=True,
    )
    if peaks["fp32_job_threads"]:
        print(
            f"  (the trainer runs {job_threads} thread(s): fp32 peak at {job_threads} thread(s) "
            f"{peaks['fp32_job_threads'] / 1e9:.0f} GFLOP/s, our step is "
            f"{100 * achieved / peaks['fp32_job_threads']:.1f}% of it)",
            flush=True,
        )
    if all_cores_step:
        print(
            f"  (with all {threads} threads our step takes {all_cores_step:.2f} s = "
            f"{100 * flops / all_cores_step / fp32_peak:.1f}% of the fp32 peak; "
            f"core.training.distributed.trainer_threads() costs x{ours_step / all_cores_step:.2f} per step "
            f"when nobody chats)",
            flush=True,
        )
    vs_defaults = ours_step / trl_def_step
    overhead = ours_step / same_step
    speedup = no_cache_e2 / cache_e2
    print(
        f"vs TRL defaults: {ours_step:.2f} / {trl_def_step:.2f} s; overhead vs same-settings TRL: "
        f"{ours_step:.2f} / {same_step:.2f} s; ref cache (epoch 2): {no_cache_e2:.2f} / {cache_e2:.2f} s",
        flush=True,
    )
    print(
        f"RESULT mfu_pct={mfu:.1f} vs_trl_defaults={vs_defaults:.3f} overhead={overhead:.3f} "
        f"ref_cache_speedup={speedup:.2f}"
    )


def parse_args() -> argparse.Namespace:
    """No options: the run is fixed (see the module docstring); ``--help`` prints the first line."""
    return argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()


if __name__ == "__main__":
    parse_args()
    main()
