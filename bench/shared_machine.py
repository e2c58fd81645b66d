"""Timing child processes on a shared machine: other engineers' tests and benchmarks run on the same cores.

Two 2-thread torch processes on 2 cores slow each other down 5-10x (OpenMP threads wait for descheduled peers),
so foreign load is handled explicitly (bench/train_step.py's docstring says how its figures use this):
- ``wait_for_quiet``: before a run, wait (bounded: STUDIO_BENCH_QUIET_WAIT_S per run, STUDIO_BENCH_QUIET_BUDGET_S in
  all) until other processes use < QUIET_CORES for two 2-s windows;
- ``run_child`` + ``LoadMonitor``: while a child runs, sample every 0.5 s the CPU used by everything else;
- ``attempts`` / ``clean_median``: a step during which the foreign load averaged > QUIET_CORES is left out of the
  medians, provided MIN_CLEAN_STEPS clean steps remain; a run without enough clean steps is repeated
  (STUDIO_BENCH_ATTEMPTS runs at most), else its figure is printed with a "!!" flag.

A run is a dict: ``stamps`` {step: wall time at the end of the step}, ``times`` (``step_times(stamps)``) and the
``monitor`` that watched it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 600
# Other processes' CPU use (in cores) below which the machine counts as quiet, how long to wait for quiet before a
# run (and in all), the clean steps a median needs, and how often a run without them is repeated.
QUIET_CORES = 0.3
QUIET_WAIT_S = float(os.environ.get("STUDIO_BENCH_QUIET_WAIT_S", 120))
QUIET_BUDGET_S = float(os.environ.get("STUDIO_BENCH_QUIET_BUDGET_S", 420))
MIN_CLEAN_STEPS = 2
MAX_ATTEMPTS = int(os.environ.get("STUDIO_BENCH_ATTEMPTS", 2))


def matmul_peak(dtype, n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` FLOP/s of an n x n x n matmul in ``dtype`` with torch's default threads."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _tree_cpu_seconds(proc) -> float:
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            c = p.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


def foreign_load(seconds: float = 2.0) -> float:
    """CPU cores used by all processes over ``seconds`` (the parent is idle meanwhile)."""
    start = _busy_seconds()
    time.sleep(seconds)
    return (_busy_seconds() - start) / seconds


def wait_for_quiet(label: str, budget: dict) -> float:
    """Wait (within a per-run cap and a total budget) until other processes have used < QUIET_CORES for two
    consecutive 2-s windows; return the last load seen."""
    load, quiet_windows, waited, announced = foreign_load(), 0, 0.0, False
    quiet_windows = int(load <= QUIET_CORES)
    while quiet_windows < 2 and waited < QUIET_WAIT_S and budget["left"] > 0:
        if load > QUIET_CORES and not announced:
            announced = True
            print(
                f"  [{label}] other processes use {load:.2f} cores; waiting up to "
                f"{min(QUIET_WAIT_S, budget['left']):.0f} s for quiet",
                flush=True,
            )
        start = time.time()
        load = foreign_load()
        quiet_windows = quiet_windows + 1 if load <= QUIET_CORES else 0
        waited += time.time() - start
        budget["left"] -= time.time() - start
    if load > QUIET_CORES:
        print(f"  [{label}] still busy ({load:.2f} cores of other processes); going on", flush=True)
    return load


class LoadMonitor(threading.Thread):
    """Samples, while a child runs, its cumulative CPU time and the CPU everything else uses (in cores)."""

    INTERVAL_S = 0.5

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (time, foreign cores over the interval ending then)
        self.child_cpu: list[tuple[float, float]] = []  # (time, the child's cumulative CPU seconds)

    def run(self) -> None:
        last_t, last_busy, last_child = time.time(), _busy_seconds(), 0.0
        while not self.stop.wait(self.INTERVAL_S):
            try:
                child = _tree_cpu_seconds(self.proc)
            except Exception:
                break
            now, busy = time.time(), _busy_seconds()
            foreign = max(0.0, (busy - last_busy) - (child - last_child)) / max(now - last_t, 1e-6)
            self.samples.append((now, foreign))
            self.child_cpu.append((now, child))
            last_t, last_busy, last_child = now, busy, child

    def mean_between(self, start: float, end: float) -> float:
        """Mean foreign load over the sampling intervals that overlap [start, end]."""
        values = [v for t, v in self.samples if start < t < end + self.INTERVAL_S]
        return sum(values) / len(values) if values else 0.0

    def cpu_at(self, when: float) -> float:
        """The child's cumulative CPU seconds at ``when`` (linear between samples)."""
        points = self.child_cpu
        if not points:
            return 0.0
        for (t0, c0), (t1, c1) in zip(points, points[1:]):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)
        return points[0][1] if when < points[0][0] else points[-1][1]


def run_child(
    label: str, cmd: list[str], log_path: Path, env: dict, budget: dict, progress: Callable[[], str] | None = None
) -> dict:
    """Run one measured process to completion; returns timing facts and the foreign load during it.
    ``progress`` says where the child is (e.g. ", step 3/8"), for the line printed every 15 s."""
    quiet = wait_for_quiet(label, budget)
    started = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    monitor = LoadMonitor(proc.pid)
    monitor.start()
    last_report = started
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if time.time() - started > RUN_TIMEOUT_S:
                proc.kill()
                proc.wait()
                raise SystemExit(f"{label}: no result within {RUN_TIMEOUT_S} s; log: {log_path}")
            if time.time() - last_report >= 15:
                last_report = time.time()
                step = progress() if progress is not None else ""
                print(f"  [{label}] running {time.time() - started:.0f} s{step}", flush=True)
    finally:
        monitor.stop.set()
        if proc.poll() is None:  # the parent is stopping (Ctrl-C, error): do not leave the child running
            proc.kill()
            proc.wait()
    ended = time.time()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"{label}: exit code {proc.returncode}; log {log_path}:\n" + "\n".join(tail))
    return {"started": started, "ended": ended, "load_before": quiet, "monitor": monitor}


def step_times(stamps: dict[int, float]) -> dict[int, float]:
    """{step: seconds} from {step: wall time at the end of that step}; step 1 has no predecessor."""
    return {k: stamps[k] - stamps[k - 1] for k in sorted(stamps) if k - 1 in stamps}


def step_loads(run: dict) -> dict[int, float]:
    """{step: mean CPU cores used by other processes while that step ran}."""
    stamps = run["stamps"]
    return {k: run["monitor"].mean_between(stamps[k - 1], stamps[k]) for k in run["times"]}


def clean_steps(run: dict, first: int, last: int) -> int:
    loads = step_loads(run)
    return sum(1 for k in run["times"] if first <= k <= last and loads[k] <= QUIET_CORES)


def attempts(label: str, start_run, spans: list[tuple[int, int]]) -> dict:
    """``start_run(attempt)`` up to MAX_ATTEMPTS times, until every span has MIN_CLEAN_STEPS steps run without
    foreign load; returns that run, else the attempt with the most clean steps."""
    best, best_score = None, None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        run = start_run(attempt)
        counts = [clean_steps(run, *span) for span in spans]
        print(
            f"  [{label}] step times in s ([foreign load in cores] where > {QUIET_CORES}): {fmt_steps(run)}", flush=True
        )
        loads = step_loads(run)
        in_spans = [loads[k] for k in run["times"] if any(a <= k <= b for a, b in spans)]
        score = (min(counts), -statistics.mean(in_spans or [0.0]))  # more clean steps, then less foreign load
        if best_score is None or score > best_score:
            best, best_score = run, score
        if min(counts) >= MIN_CLEAN_STEPS:
            break
        if attempt < MAX_ATTEMPTS:
            print(f"  [{label}] too few steps free of foreign load ({counts}); running it again", flush=True)
    return best


def clean_median(label: str, run: dict, first: int, last: int) -> float:
    """Median step time over steps first..last, using only steps run without foreign load when enough remain."""
    loads = step_loads(run)
    span = [k for k in run["times"] if first <= k <= last]
    if not span:
        raise SystemExit(f"{label}: no step times for steps {first}-{last}: {run['times']}")
    clean = [k for k in span if loads[k] <= QUIET_CORES]
    used = clean if len(clean) >= MIN_CLEAN_STEPS else span
    med = statistics.median(run["times"][k] for k in used)
    dirty = sorted(set(span) - set(used))
    note = (
        f"steps {','.join(map(str, dirty))} excluded (foreign load)"
        if dirty and used is clean
        else "all steps used"
        if used is clean
        else f"!! only {len(clean)} step(s) free of foreign load: all used, figure is pessimistic"
    )
    print(f"  [{label}] median steps {first}-{last}: {med:.2f} s ({note})", flush=True)
    return med


def fmt_steps(run: dict) -> str:
    """'step:seconds' for every step, with the foreign load (cores) of loaded steps in brackets."""
    loads = step_loads(run)
    return " ".join(
        f"{k}:{v:.2f}" + (f"[{loads[k]:.1f}]" if loads[k] > QUIET_CORES else "")
        for k, v in sorted(run["times"].items())
    )


def cpu_per_step(run: dict, first: int, last: int) -> float:
    """Median CPU seconds the measured process used per step (diagnostic: less sensitive to foreign load)."""
    stamps, monitor = run["stamps"], run["monitor"]
    values = [monitor.cpu_at(stamps[k]) - monitor.cpu_at(stamps[k - 1]) for k in run["times"] if first <= k <= last]
    return statistics.median(values) if values else float("nan")
