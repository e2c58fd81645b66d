"""Training jobs: freeze the data, queue, launch a child process, watch it, ingest its curves and
register the policy version it produces.

The server and a trainer share only files under ``runs/<id>/`` (DESIGN.md "Data flow"; core.training.rundir
defines them): the supervisor writes ``config.json`` and ``data/*.parquet``; the child (``core.training.child``)
writes ``metrics.jsonl``, ``progress.json``, ``checkpoints/``, the adapter and, last, ``result.json``. Pause and
cancel are requests written to ``control.json``. The child never imports this module.

Job state lives in DuckDB, so a page reload never loses a job; a server restart re-attaches to children that are
still running (same pid AND same process start time) and marks the others interrupted (resumable from their last
checkpoint). What a job is asked to do is a ``core.training.request.JobRequest``; how the child is started,
``core.training.distributed``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, cast

import psutil

from core import ROOT
from core.data.job_data import build_training_data, content_hash, data_stats, unit
from core.errors import Conflict, NotFound, ValidationError
from core.labeling.identity import User
from core.serving.policies import Version, get_policy, register_policy
from core.training import rundir
from core.training.common import MIN_EVAL_FOR_EARLY_STOPPING, early_stopping
from core.training.distributed import LaunchConfig, child_command, cuda_available, trainer_threads
from core.training.estimate import estimate
from core.training.request import DryRun, JobRequest
from storage.db import Database, one_value

ACTIVE = ("queued", "running")
RESUMABLE = ("paused", "interrupted", "failed")
LOG_TAIL_LINES = 40
CANCEL_GRACE_S = 20.0


class JobSummary(TypedDict):
    """A job as the Runs page's list and ``GET /api/jobs`` show it: what it trains, how far it got, how it ended."""

    id: int
    algorithm: str
    status: str  # queued, running, paused, succeeded, failed, cancelled, interrupted
    parent: str | None  # the version it trains from
    version: str | None  # the version it made (once it succeeded and while that version lives)
    error: str | None
    run_dir: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]  # core.training.rundir.read_progress ({} before it starts)


class Job(TypedDict):
    """A job's whole row (the jobs table), with its parent's and its version's names and its request decoded."""

    id: int
    algorithm: str
    status: str
    parent_policy_id: int | None
    parent: str | None
    version: str | None
    config: dict[str, Any] | None  # the child's JobConfig (None only while the job is being submitted)
    run_dir: str  # written by submit before the job is queued
    pid: int | None  # the training child, while it runs
    pid_started_at: float | None  # its process start time, to re-attach safely after a restart
    error: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# -- supervisor ------------------------------------------------------------------------------------
class Supervisor:
    """Queue and watcher of training jobs for one data dir (one job at a time by default)."""

    def __init__(
        self, db: Database, runs_dir: Path, base_model_path: str | Path, base_model_spec: str, max_running: int = 1
    ) -> None:
        self.db = db
        self.runs_dir = Path(runs_dir)
        self.base_model_path = str(base_model_path)
        self.base_model_spec = base_model_spec
        self.max_running = max_running
        self._children: dict[int, subprocess.Popen] = {}
        self._metric_offsets: dict[int, int] = {}
        self._results: dict[int, dict[str, Any]] = {}  # result.json of succeeded jobs (immutable)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []  # pending kills of cancelled jobs that ignore the cancel
        # Called with the new version's name after a job registered a chat policy (the studio queues its
        # "what changed" report there). Never called for reward models.
        self.on_new_version: Callable[[str], None] | None = None
        # Called with (job id, final state) whenever a job ends, whatever the outcome (the backup takes a snapshot).
        self.on_finished: Callable[[int, str], None] | None = None

    # -- requests ----------------------------------------------------------------------------------
    def dry_run(self, request: JobRequest) -> DryRun:
        spec = request.spec()
        request.launch.validate(cuda=cuda_available())
        self._check_parent(request)
        data = build_training_data(self.db, spec, request.filters)
        rows = data.rows
        plan = request.plan(len(rows))
        cfg = request.config(len(rows))
        est = (
            estimate(cfg, len(rows), self.base_model_path)
            if rows
            else {"steps": 0, "seconds": 0, "peak_memory_bytes": 0}
        )
        ok = len(rows) >= spec.min_examples
        reason = (
            "ready"
            if ok
            else (
                f"only {len(rows)} usable {unit(spec)} (need at least {spec.min_examples}): label more, "
                "or loosen the data filters"
            )
        )
        notes = list(data.notes)
        if data.eval_rows and not early_stopping(cfg, len(data.eval_rows)) and cfg.early_stopping_patience:
            notes.append(
                f"{len(data.eval_rows)} held-out {unit(spec)} are evaluated for the curves and the report, "
                f"but are too few to pick a checkpoint by (early stopping needs "
                f"{MIN_EVAL_FOR_EARLY_STOPPING}): the last step is kept"
            )
        return DryRun(
            request.algorithm,
            len(rows),
            spec.min_examples,
            data.stats.get("skipped", {}),
            data_stats(rows),
            est,
            ok,
            reason,
            plan.summary,
            plan.rows(),
            len(data.eval_rows),
            notes,
        )

    def submit(self, request: JobRequest, user: User) -> int:
        """Freeze the data into runs/<id>/ and queue the job."""
        if not user.is_admin:
            raise ValidationError("Only admins can start training jobs", hint="ask an admin", code="forbidden")
        spec = request.spec()
        request.launch.validate(cuda=cuda_available())
        parent = self._check_parent(request)
        data = build_training_data(self.db, spec, request.filters)
        rows = data.rows
        cfg = request.config(len(rows))
        if len(rows) < spec.min_examples:
            raise ValidationError(
                f"Only {len(rows)} usable {unit(spec)}; {request.algorithm} needs at least {spec.min_examples}",
                hint="label more, or loosen the data filters",
            )
        reward_path = self._reward_model_path(request) if spec.needs_reward_model else None
        with self.db.transaction() as cur:
            job_id = one_value(
                cur.execute(
                    "INSERT INTO jobs (algorithm, status, parent_policy_id, created_by) VALUES (?, 'queued', ?, ?)"
                    " RETURNING id",
                    [request.algorithm, parent["id"], user.id],
                )
            )
        run_dir = self.runs_dir / str(job_id)
        try:
            rundir.write_data(run_dir, rows, data.eval_rows)
            data_hash = content_hash(rows)
            config = rundir.JobConfig(  # the child's contract
                job_id=job_id,
                algorithm=request.algorithm,
                base_model=self.base_model_path,
                parent_adapter=parent["adapter_path"],
                reward_model=reward_path,
                hyperparams=cfg.to_dict(),
                resume=False,
                seed=cfg.seed,
            )
            rundir.write_config(run_dir, config)
            request.launch.write(run_dir, cuda=cuda_available())
            record = {
                **config.to_dict(),
                "launch": request.launch.to_dict(),
                "parent_policy": parent["name"],
                "data_hash": data_hash,
                "examples": len(rows),
                "eval_examples": len(data.eval_rows),
                "plan": request.plan(len(rows)).rows(),
                "notes": data.notes,
                "filters": _jsonable(asdict(request.filters)),
            }
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM jobs WHERE id = ?", [job_id])
            raise
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET config = ?, run_dir = ? WHERE id = ?", [json.dumps(record), str(run_dir), job_id]
            )
        self.wake()
        return job_id

    def cancel(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] == "queued" or job["status"] in RESUMABLE:
            self._set_status(job_id, "cancelled", finished=True)
        elif job["status"] == "running":
            rundir.request_control(Path(job["run_dir"]), "cancel")
            timer = threading.Timer(CANCEL_GRACE_S, self._kill_if_running, [job_id])
            self._timers.append(timer)
            timer.start()
        else:
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only queued or running jobs can be cancelled")

    def pause(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] != "running":
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only running jobs can be paused")
        rundir.request_control(Path(job["run_dir"]), "pause")

    def resume(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] not in RESUMABLE:
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only paused, interrupted or failed jobs resume")
        if not rundir.latest_checkpoint(Path(job["run_dir"])):
            raise Conflict(f"Job {job_id} has no checkpoint to resume from", hint="start a new job instead")
        rundir.set_resume(Path(job["run_dir"]))
        self._set_status(job_id, "queued", error=None)
        self.wake()

    # -- reads -------------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        rows = self.db.query(
            "SELECT j.*, p.name AS parent, v.name AS version FROM jobs j"
            " LEFT JOIN policies p ON p.id = j.parent_policy_id"
            " LEFT JOIN policies v ON v.job_id = j.id AND v.deleted_at IS NULL"
            " WHERE j.id = ?",
            [job_id],
        )
        if not rows:
            raise NotFound(f"Job {job_id} does not exist", hint="pick a job from the list")
        job = rows[0]
        job["config"] = json.loads(job["config"]) if job["config"] else None
        return cast(Job, job)

    def jobs(self, limit: int = 200) -> list[JobSummary]:
        rows = self.db.query(
            "SELECT j.id, j.algorithm, j.status, p.name AS parent, v.name AS version, j.error, j.run_dir,"
            " j.created_at, j.started_at, j.finished_at FROM jobs j"
            " LEFT JOIN policies p ON p.id = j.parent_policy_id"
            " LEFT JOIN policies v ON v.job_id = j.id AND v.deleted_at IS NULL"
            " ORDER BY j.id DESC LIMIT ?",
            [limit],
        )
        for row in rows:
            row["progress"] = self.progress(row) if row["run_dir"] else {}
        return cast(list[JobSummary], rows)

    def running_run_dirs(self) -> list[Path]:
        """Run directories of the jobs training now (the backup keeps their newest checkpoint when asked)."""
        return [
            Path(r["run_dir"])
            for r in self.db.query("SELECT run_dir FROM jobs WHERE status = 'running' AND run_dir IS NOT NULL")
        ]

    def busy(self) -> bool:
        """A trainer is running on this machine (the chat then uses the core it leaves free)."""
        return self.running_job() is not None

    def running_job(self) -> int | None:
        """The id of the job training now, if any (one runs at a time)."""
        return self.db.scalar("SELECT min(id) FROM jobs WHERE status = 'running'")

    def progress(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return rundir.read_progress(Path(job["run_dir"]))

    def result(self, job_id: int) -> dict[str, Any]:
        """The child's result.json (status, metrics, setup: reference, kept step, ...); {} while it runs.

        A succeeded job's result never changes, and the Runs page asks every few seconds: it is read once."""
        if job_id in self._results:
            return self._results[job_id]
        job = self.job(job_id)
        result = rundir.read_result(Path(job["run_dir"])) or {}
        if job["status"] == "succeeded":
            self._results[job_id] = result
        return result

    def log_tail(self, job_id: int, lines: int = LOG_TAIL_LINES) -> str:
        return rundir.log_tail(Path(self.job(job_id)["run_dir"]), lines)

    def metrics(self, job_ids: list[int]) -> list[dict[str, Any]]:
        if not job_ids:
            return []
        placeholders = ", ".join("?" for _ in job_ids)
        return self.db.query(
            f"SELECT job_id, step, name, value FROM job_metrics WHERE job_id IN ({placeholders})"
            " ORDER BY job_id, step, name",
            job_ids,
        )

    # -- watching ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Re-attach to jobs left running by a previous server, then watch in the background."""
        self.reattach()
        self._thread = threading.Thread(target=self._loop, name="job-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (jobs keep running and are re-attached by the next start); returns once the watcher has
        finished its current pass, so the database can be closed right after."""
        self._stop.set()
        self._wakeup.set()
        for timer in self._timers:  # a job still running is re-attached (and can be cancelled) by the next start
            timer.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Look at the queue now instead of at the next tick."""
        self._wakeup.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the watcher must survive anything a job does
                print(f"job supervisor: {exc!r}", file=sys.stderr, flush=True)
            self._wakeup.wait(1.0)
            self._wakeup.clear()

    def reattach(self) -> None:
        for job in self.db.query("SELECT id, pid, pid_started_at, run_dir FROM jobs WHERE status = 'running'"):
            if _same_process(job["pid"], job["pid_started_at"]):
                continue  # still running: tick() follows it by pid
            self._finish(job["id"], exit_code=None, reattached=True)

    def tick(self) -> None:
        """One pass: ingest curves, finish exited jobs, start queued ones."""
        with self._lock:
            running = self.db.query("SELECT id, pid, pid_started_at, run_dir FROM jobs WHERE status = 'running'")
            for job in running:
                self._ingest(job["id"], Path(job["run_dir"]))
                child = self._children.get(job["id"])
                if child is not None:
                    if child.poll() is not None:
                        self._finish(job["id"], exit_code=child.returncode)
                elif not _same_process(job["pid"], job["pid_started_at"]):
                    self._finish(job["id"], exit_code=None, reattached=True)
            free = self.max_running - self.db.scalar("SELECT count(*) FROM jobs WHERE status = 'running'")
            for job in self.db.query("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT ?", [max(free, 0)]):
                self._launch(job["id"])

    def run_blocking(self, job_id: int, on_progress: Callable[[dict], None] | None = None) -> Job:
        """Run one queued job in the foreground (the CLI): same child, same files, same finishing."""
        with self._lock:
            self._launch(job_id)
        child = self._children[job_id]
        run_dir = Path(self.job(job_id)["run_dir"])
        while child.poll() is None:
            time.sleep(0.5)
            self._ingest(job_id, run_dir)
            if on_progress:
                on_progress(self.progress({"run_dir": str(run_dir)}))
        with self._lock:
            self._ingest(job_id, run_dir)
            self._finish(job_id, exit_code=child.returncode)
        return self.job(job_id)

    # -- internals ---------------------------------------------------------------------------------
    def _launch(self, job_id: int) -> None:
        job = self.job(job_id)
        run_dir = Path(job["run_dir"])
        rundir.clear_stale_files(run_dir)
        log = open(rundir.log_path(run_dir), "ab")
        launch = LaunchConfig.from_dict((job["config"] or {}).get("launch"))
        # the pool's size (CpuShareCallback lends a core to the chat), shared by this machine's processes
        threads = str(launch.threads_per_process(trainer_threads()))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        accelerate_file = rundir.accelerate_path(run_dir)
        command = child_command(rundir.config_path(run_dir), accelerate_file if accelerate_file.is_file() else None)
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self._children[job_id] = child
        started = psutil.Process(child.pid).create_time()
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET status = 'running', pid = ?, pid_started_at = ?, error = NULL,"
                " started_at = coalesce(started_at, now()), finished_at = NULL WHERE id = ?",
                [child.pid, started, job_id],
            )

    def _ingest(self, job_id: int, run_dir: Path) -> None:
        """Copy new lines of metrics.jsonl into job_metrics (the curves the Runs page plots)."""
        # after a server restart the offset is unknown: re-read everything (upserts make it idempotent)
        rows, offset = rundir.read_new_metrics(run_dir, self._metric_offsets.get(job_id, 0))
        values = []
        for record in rows:
            step = int(record.get("step", 0))
            values += [
                [job_id, step, name, float(v)]
                for name, v in record.items()
                if name not in ("step", "time")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(float(v))
            ]
        if values:
            with self.db.transaction() as cur:
                cur.executemany(
                    "INSERT INTO job_metrics (job_id, step, name, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (job_id, step, name) DO UPDATE SET value = excluded.value",
                    values,
                )
        self._metric_offsets[job_id] = offset

    def _finish(self, job_id: int, exit_code: int | None, reattached: bool = False) -> str | None:
        """Decide the final state from the exit code and result.json; never 'succeeded' after a failure."""
        self._children.pop(job_id, None)
        job = self.job(job_id)
        run_dir = Path(job["run_dir"])
        self._ingest(job_id, run_dir)
        result = rundir.read_result(run_dir)
        status = result.get("status") if result else None
        clean_exit = exit_code == 0 or (exit_code is None and result is not None)
        if status == "succeeded" and clean_exit and result is not None and _artifact_exists(result):
            version = self._register(job, result)
            self._set_status(job_id, "succeeded", finished=True, error=None)
            if self.on_new_version is not None and job["algorithm"] != "reward":
                try:
                    self.on_new_version(version)
                except Exception as exc:  # a report that cannot be queued must not fail the job
                    print(f"job supervisor: report of {version}: {exc!r}", file=sys.stderr, flush=True)
            return version
        if status in ("paused", "cancelled") and clean_exit:
            self._set_status(job_id, status, finished=status == "cancelled")
            return None
        if rundir.read_control(run_dir) == "cancel" and exit_code is not None and exit_code < 0:
            # Cancelled, and the child had not stopped CANCEL_GRACE_S later (it looks for requests between steps,
            # not while it loads the model or prepares the data), so it was killed: as the user asked.
            self._set_status(job_id, "cancelled", finished=True, error=None)
            return None
        if exit_code is None and result is None and reattached:
            self._set_status(
                job_id,
                "interrupted",
                finished=True,
                error="The server restarted while this job ran and its process is gone. "
                + (
                    "Resume it from its last checkpoint."
                    if rundir.latest_checkpoint(run_dir)
                    else "It had no checkpoint yet: start it again."
                ),
            )
            return None
        reason = (result or {}).get("error") or (
            f"the training process was killed by signal {-exit_code}"
            if exit_code and exit_code < 0
            else f"the training process exited with code {exit_code}"
        )
        self._set_status(
            job_id,
            "failed",
            finished=True,
            error=f"{reason}\n--- last lines of the log ---\n{rundir.log_tail(run_dir, 15)}",
        )
        return None

    def _register(self, job: Job, result: dict[str, Any]) -> str:
        config = job["config"] or {}
        is_reward = job["algorithm"] == "reward"
        prefix = "rm" if is_reward else "v"
        taken = [
            int(m.group(1))
            for r in self.db.query("SELECT name FROM policies")
            if (m := re.fullmatch(prefix + r"(\d+)", r["name"]))
        ]
        name = f"{prefix}{max(taken, default=0) + 1}"
        register_policy(
            self.db,
            name,
            job["parent_policy_id"],
            self.base_model_spec,
            job["algorithm"],
            None if is_reward else result.get("adapter_path"),
            data_hash=config.get("data_hash"),
            config={
                **config.get("hyperparams", {}),
                "model_path": result.get("model_path"),
                "reward_model_path": (result.get("adapter_path") or result.get("model_path")) if is_reward else None,
            },
            metrics=result.get("metrics"),
            job_id=job["id"],
        )
        return name

    def _set_status(self, job_id: int, status: str, finished: bool = False, error: str | None = "") -> None:
        with self.db.transaction() as cur:
            if error == "":
                cur.execute(
                    "UPDATE jobs SET status = ?, finished_at = CASE WHEN ? THEN now() ELSE finished_at END"
                    " WHERE id = ?",
                    [status, finished, job_id],
                )
            else:
                cur.execute(
                    "UPDATE jobs SET status = ?, error = ?, finished_at = CASE WHEN ? THEN now()"
                    " ELSE finished_at END WHERE id = ?",
                    [status, error, finished, job_id],
                )
        if finished and self.on_finished is not None:
            self.on_finished(job_id, status)

    def _kill_if_running(self, job_id: int) -> None:
        job = self.job(job_id)
        pid = job["pid"]
        if job["status"] == "running" and pid is not None and _same_process(pid, job["pid_started_at"]):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _check_parent(self, request: JobRequest) -> Version:
        parent = get_policy(self.db, request.parent)
        if parent["algorithm"] == "reward":
            raise ValidationError(
                f"{parent['name']} is a reward model, not a chat policy", hint="start from base or a vN version"
            )
        return parent

    def _reward_model_path(self, request: JobRequest) -> str:
        if not request.reward_model:
            raise ValidationError("Online RL needs a trained reward model", hint="train one (algorithm reward) first")
        rows = self.db.query(
            "SELECT config FROM policies WHERE name = ? AND algorithm = 'reward' AND deleted_at IS NULL",
            [request.reward_model],
        )
        if not rows:
            raise NotFound(f"Reward model {request.reward_model!r} does not exist", hint="pick one of the rmN models")
        return json.loads(rows[0]["config"])["reward_model_path"]


def _same_process(pid: int | None, started_at: float | None) -> bool:
    """True if ``pid`` is alive AND is the process we started (pids are reused after a reboot)."""
    if not pid or started_at is None:
        return False
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started_at) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _artifact_exists(result: dict[str, Any]) -> bool:
    path = result.get("adapter_path") or result.get("model_path")
    return bool(path and Path(path).exists())


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
