"""Training jobs: freeze the data, queue, launch a child process, watch it, ingest its curves and
register the policy version it produces.

The server and a trainer share only files under ``runs/<id>/`` (DESIGN.md "Data flow"): the supervisor
writes ``config.json`` and ``data/*.parquet``; the child (``core.training.run``) writes ``metrics.jsonl``,
``progress.json``, ``checkpoints/``, the adapter and, last, ``result.json``. Pause and cancel are requests
written to ``control.json``. Job state lives in DuckDB, so a page reload never loses a job; a server
restart re-attaches to children that are still running (same pid AND same process start time) and marks
the others interrupted (resumable from their last checkpoint).
"""
from __future__ import annotations

import hashlib
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from core import ROOT
from core.data import trainsets
from core.errors import Conflict, NotFound, ValidationError
from core.labeling.identity import User
from core.serving.policies import BASE_POLICY, get_policy, newest_version, register_policy
from core.training import ALGORITHMS, AlgorithmSpec
from core.training.common import MIN_EVAL_FOR_EARLY_STOPPING, early_stopping
from core.training.launch import CONFIG_FILE as LAUNCH_FILE, LaunchConfig
from core.training.defaults import UNITS, Plan, plan_defaults
from storage.db import Database

ACTIVE = ("queued", "running")
RESUMABLE = ("paused", "interrupted", "failed")
LOG_TAIL_LINES = 40
CANCEL_GRACE_S = 20.0


@dataclass
class JobRequest:
    """What a user asks for on the Train page or with ``launch.py train``.

    ``hyperparams`` holds only what the user set; every other value is chosen from the data at submit time
    (core.training.defaults). ``filters.hold_out_percent`` defaults to the evaluation split (20% of prompts):
    those labels are never trained on, the job evaluates on them while it trains, and the "what changed" report
    measures the new version on them.
    """

    algorithm: str
    parent: str = "base"                       # policy version the job starts from (and the reference)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    filters: trainsets.Filters = field(default_factory=lambda: trainsets.Filters(
        hold_out_percent=trainsets.HELD_OUT_PERCENT))
    reward_model: str | None = None            # online RL: name of a trained reward model (rm1, ...)
    launch: LaunchConfig = field(default_factory=LaunchConfig)   # one process, DDP, FSDP, DeepSpeed, nodes

    def spec(self) -> AlgorithmSpec:
        if self.algorithm not in ALGORITHMS:
            raise ValidationError(f"Unknown algorithm {self.algorithm!r}",
                                  hint=f"choose one of {', '.join(ALGORITHMS)}")
        return ALGORITHMS[self.algorithm]

    def plan(self, n_examples: int) -> Plan:
        """Every hyperparameter for ``n_examples`` training rows: the user's values plus chosen defaults."""
        return plan_defaults(self.spec().config_class, n_examples, self.hyperparams,
                             world_size=self.launch.world_size)

    def config(self, n_examples: int) -> Any:
        """The algorithm's config dataclass for ``n_examples`` training rows, validated."""
        cfg = self.spec().config_from_dict(self.plan(n_examples).values)
        cfg.validate()
        return cfg


@dataclass
class DryRun:
    """What a job would do, before anything is written (seed N3's dry run)."""

    algorithm: str
    examples: int
    min_examples: int
    skipped: dict[str, int]
    data_stats: dict[str, Any]
    estimate: dict[str, Any]
    ok: bool
    reason: str
    summary: str = ""                                          # "64 pairs: 5 epochs -> 40 steps, lr 5e-4 ..."
    settings: list[dict[str, Any]] = field(default_factory=list)   # name, value, source (auto|user|default), reason
    eval_examples: int = 0                                     # held-out rows evaluated on while training
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_filters(values: dict[str, Any] | None) -> trainsets.Filters:
    """The data filters of a training job (REST, CLI): the evaluation split is held out unless they say otherwise."""
    return trainsets.filters_from_dict({"hold_out_percent": trainsets.HELD_OUT_PERCENT, **(values or {})})


# -- data ----------------------------------------------------------------------------------------
MAX_EVAL_ROWS = 48   # held-out rows evaluated while training: enough to see a trend, cheap to run ~8 times


@dataclass
class TrainingData:
    """The rows a job trains on, the held-out rows it evaluates on while training, and how they were chosen."""

    rows: list[dict]
    eval_rows: list[dict]
    stats: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def build_rows(db: Database, spec: AlgorithmSpec, filters: trainsets.Filters) -> tuple[list[dict], dict]:
    """The training rows for an algorithm's dataset kind, from the labels in the database."""
    data = build_training_data(db, spec, filters)
    return data.rows, data.stats


def build_training_data(db: Database, spec: AlgorithmSpec, filters: trainsets.Filters) -> TrainingData:
    """Training rows and the held-out split (``filters.hold_out_percent`` of prompts, by a fixed hash).

    When holding out would leave fewer rows than the algorithm needs, the job trains on every row instead and
    says so (a first job on a dozen labels should run; its report then has no held-out pairs to measure on).
    Online RL trains on prompts and evaluates nothing while training (its curve is the reward itself).
    """
    kind = spec.dataset_kind
    if kind == "preference":
        rows = trainsets.preference_rows(db, filters)
    elif kind == "reward":
        rows = trainsets.preference_rows(db, filters, margin_from_ratings=True)
    elif kind == "unpaired":
        rows = trainsets.unpaired_rows(db, filters)
    elif kind == "sft":
        rows = trainsets.sft_rows(db, filters)
    elif kind == "prompts":
        pairs = trainsets.preference_rows(db, filters)
        seen: dict[str, dict] = {}
        for row in pairs.rows:
            seen.setdefault(json.dumps(row["prompt"], sort_keys=True), {"prompt": row["prompt"]})
        kept, held = trainsets.split_held_out(list(seen.values()), filters.hold_out_percent)
        return TrainingData(kept, [], _with_held_out(pairs.stats, len(held)))
    else:
        raise ValidationError(f"Unknown dataset kind {kind!r}")
    kept, held = trainsets.split_held_out(rows.rows, filters.hold_out_percent)
    if held and len(kept) < spec.min_examples:
        notes = [] if len(rows.rows) < spec.min_examples else [
            f"too few labels to hold out an evaluation split ({len(kept)} would be left, {spec.min_examples} "
            f"needed): training on all {len(rows.rows)} {UNITS.get(kind, 'examples')}; label more to get a "
            "held-out measurement"]
        return TrainingData(rows.rows, [], rows.stats, notes)
    return TrainingData(kept, _eval_subset(held), _with_held_out(rows.stats, len(held)))


def _eval_subset(rows: list[dict]) -> list[dict]:
    """At most MAX_EVAL_ROWS held-out rows, a fixed subset (by content hash) so reruns evaluate the same ones."""
    if len(rows) <= MAX_EVAL_ROWS:
        return rows
    return sorted(rows, key=lambda r: hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode())
                  .hexdigest())[:MAX_EVAL_ROWS]


def _with_held_out(stats: dict[str, Any], held: int) -> dict[str, Any]:
    """The builder's stats, with the examples the evaluation split took counted among the skipped ones."""
    return {**stats, "skipped": {**stats.get("skipped", {}), **({"held_out": held} if held else {})}}


def unit(spec: AlgorithmSpec) -> str:
    return UNITS.get(spec.dataset_kind, "examples")


def data_stats(rows: list[dict]) -> dict[str, Any]:
    """A few numbers people check before training: sizes, label balance, margins, lengths."""
    stats: dict[str, Any] = {"rows": len(rows)}
    if rows and "label" in rows[0]:
        stats["desirable"] = sum(1 for r in rows if r["label"])
        stats["undesirable"] = len(rows) - stats["desirable"]
    if rows and "margin" in rows[0]:
        margins = [r["margin"] for r in rows if r.get("margin") is not None]
        stats["mean_margin"] = round(sum(margins) / len(margins), 3) if margins else None
    if rows and "chosen" in rows[0]:
        stats["mean_chosen_chars"] = round(sum(len(r["chosen"][0]["content"]) for r in rows) / len(rows))
        stats["mean_rejected_chars"] = round(sum(len(r["rejected"][0]["content"]) for r in rows) / len(rows))
    return stats


def content_hash(rows: list[dict]) -> str:
    """Hash of the rows themselves (not of parquet bytes, which vary with library versions)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# -- the guided loop ------------------------------------------------------------------------------
FIRST_JOB_PAIRS = 40   # preference pairs before the first suggested job: ~32 to train on, ~8 held out to measure
NEXT_JOB_PAIRS = 20    # new pairs since the newest version before suggesting the next round


@dataclass
class Suggestion:
    """What the console suggests next: a DPO job from the newest version once enough labels exist."""

    ready: bool
    parent: str                 # the version to train from (the newest chat version)
    pairs: int                  # usable preference pairs (all, before the held-out split)
    new_pairs: int              # of those, labeled after the parent was trained (all of them for base)
    needed: int                 # more labels before the suggestion is ready (0 when ready)
    text: str
    request: JobRequest


def suggest_next_job(db: Database) -> Suggestion:
    """The next training the console suggests: a first DPO run after FIRST_JOB_PAIRS pairs, then a new round from
    the newest version after NEXT_JOB_PAIRS new pairs; always with the data-chosen defaults."""
    newest = newest_version(db)
    parent = {"name": newest["name"], "created_at": newest["trained_at"]} if newest else \
        {"name": BASE_POLICY, "created_at": None}
    rows = trainsets.preference_rows(db, trainsets.Filters()).rows
    pairs = len(rows)
    if parent["created_at"] is None:
        new_pairs, target = pairs, FIRST_JOB_PAIRS
    else:
        new_pairs = len(trainsets.preference_rows(db, trainsets.Filters(since=parent["created_at"])).rows)
        target = NEXT_JOB_PAIRS
    request = JobRequest("dpo", parent["name"])
    needed = max(0, target - new_pairs)
    first = parent["name"] == "base"
    if needed:
        text = (f"{new_pairs} preference pair(s) labeled{'' if first else ' since ' + parent['name'] + ' was trained'}"
                f": {needed} more and the studio suggests {'a first' if first else 'the next'} DPO run"
                f"{'' if first else ' from ' + parent['name']}.")
    else:
        text = (f"{new_pairs} {'preference pairs labeled' if first else 'new pairs since ' + parent['name']}: "
                f"ready for {'a first' if first else 'the next'} DPO run from {parent['name']}, with settings "
                "chosen for this data.")
    return Suggestion(not needed, parent["name"], pairs, new_pairs, needed, text, request)


# -- supervisor ------------------------------------------------------------------------------------
class Supervisor:
    """Queue and watcher of training jobs for one data dir (one job at a time by default)."""

    def __init__(self, db: Database, runs_dir: Path, base_model_path: str | Path, base_model_spec: str,
                 max_running: int = 1) -> None:
        self.db = db
        self.runs_dir = Path(runs_dir)
        self.base_model_path = str(base_model_path)
        self.base_model_spec = base_model_spec
        self.max_running = max_running
        self._children: dict[int, subprocess.Popen] = {}
        self._metric_offsets: dict[int, int] = {}
        self._results: dict[int, dict[str, Any]] = {}   # result.json of succeeded jobs (immutable)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []   # pending kills of cancelled jobs that ignore the cancel
        # Called with the new version's name after a job registered a chat policy (the studio queues its
        # "what changed" report there). Never called for reward models.
        self.on_new_version: Callable[[str], None] | None = None

    # -- requests ----------------------------------------------------------------------------------
    def dry_run(self, request: JobRequest) -> DryRun:
        spec = request.spec()
        request.launch.validate(cuda=_cuda())
        self._check_parent(request)
        data = build_training_data(self.db, spec, request.filters)
        rows = data.rows
        plan = request.plan(len(rows))
        cfg = request.config(len(rows))
        from core.training.run import estimate

        est = estimate(cfg, len(rows), self.base_model_path) if rows else {"steps": 0, "seconds": 0,
                                                                             "peak_memory_bytes": 0}
        ok = len(rows) >= spec.min_examples
        reason = "ready" if ok else (
            f"only {len(rows)} usable {unit(spec)} (need at least {spec.min_examples}): label more, "
            "or loosen the data filters")
        notes = list(data.notes)
        if data.eval_rows and not early_stopping(cfg, len(data.eval_rows)) and cfg.early_stopping_patience:
            notes.append(f"{len(data.eval_rows)} held-out {unit(spec)} are evaluated for the curves and the report, "
                         f"but are too few to pick a checkpoint by (early stopping needs "
                         f"{MIN_EVAL_FOR_EARLY_STOPPING}): the last step is kept")
        return DryRun(request.algorithm, len(rows), spec.min_examples, data.stats.get("skipped", {}),
                      data_stats(rows), est, ok, reason, plan.summary, plan.rows(), len(data.eval_rows), notes)

    def submit(self, request: JobRequest, user: User) -> int:
        """Freeze the data into runs/<id>/ and queue the job."""
        if not user.is_admin:
            raise ValidationError("Only admins can start training jobs", hint="ask an admin",
                                  code="forbidden")
        spec = request.spec()
        request.launch.validate(cuda=_cuda())
        parent = self._check_parent(request)
        data = build_training_data(self.db, spec, request.filters)
        rows = data.rows
        cfg = request.config(len(rows))
        if len(rows) < spec.min_examples:
            raise ValidationError(f"Only {len(rows)} usable {unit(spec)}; {request.algorithm} needs at least "
                                  f"{spec.min_examples}", hint="label more, or loosen the data filters")
        reward_path = self._reward_model_path(request) if spec.needs_reward_model else None
        with self.db.transaction() as cur:
            job_id = cur.execute(
                "INSERT INTO jobs (algorithm, status, parent_policy_id, created_by) VALUES (?, 'queued', ?, ?)"
                " RETURNING id", [request.algorithm, parent["id"], user.id]).fetchone()[0]
        run_dir = self.runs_dir / str(job_id)
        try:
            (run_dir / "data").mkdir(parents=True, exist_ok=True)
            _write_parquet(rows, run_dir / "data" / "train.parquet")
            if data.eval_rows:
                _write_parquet(data.eval_rows, run_dir / "data" / "eval.parquet")
            data_hash = content_hash(rows)
            config = {  # the child's contract (core.training.common.JobConfig)
                "job_id": job_id, "algorithm": request.algorithm, "base_model": self.base_model_path,
                "parent_adapter": parent["adapter_path"], "reward_model": reward_path,
                "hyperparams": cfg.to_dict(), "resume": False, "seed": cfg.seed,
            }
            _write_json(run_dir / "config.json", config)
            request.launch.write(run_dir, cuda=_cuda())
            record = {**config, "launch": request.launch.to_dict(), "parent_policy": parent["name"], "data_hash": data_hash, "examples": len(rows),
                      "eval_examples": len(data.eval_rows), "plan": request.plan(len(rows)).rows(),
                      "notes": data.notes,
                      "filters": _jsonable(asdict(request.filters))}
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM jobs WHERE id = ?", [job_id])
            raise
        with self.db.transaction() as cur:
            cur.execute("UPDATE jobs SET config = ?, run_dir = ? WHERE id = ?",
                        [json.dumps(record), str(run_dir), job_id])
        self.wake()
        return job_id

    def cancel(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] == "queued" or job["status"] in RESUMABLE:
            self._set_status(job_id, "cancelled", finished=True)
        elif job["status"] == "running":
            _write_json(Path(job["run_dir"]) / "control.json", {"action": "cancel", "time": time.time()})
            timer = threading.Timer(CANCEL_GRACE_S, self._kill_if_running, [job_id])
            self._timers.append(timer)
            timer.start()
        else:
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only queued or running jobs can be cancelled")

    def pause(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] != "running":
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only running jobs can be paused")
        _write_json(Path(job["run_dir"]) / "control.json", {"action": "pause", "time": time.time()})

    def resume(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] not in RESUMABLE:
            raise Conflict(f"Job {job_id} is {job['status']}", hint="only paused, interrupted or failed jobs resume")
        if not latest_checkpoint(Path(job["run_dir"])):
            raise Conflict(f"Job {job_id} has no checkpoint to resume from",
                           hint="start a new job instead")
        config = json.loads((Path(job["run_dir"]) / "config.json").read_text())
        config["resume"] = True
        _write_json(Path(job["run_dir"]) / "config.json", config)
        self._set_status(job_id, "queued", error=None)
        self.wake()

    # -- reads -------------------------------------------------------------------------------------
    def job(self, job_id: int) -> dict[str, Any]:
        rows = self.db.query("SELECT j.*, p.name AS parent, v.name AS version FROM jobs j"
                             " LEFT JOIN policies p ON p.id = j.parent_policy_id"
                             " LEFT JOIN policies v ON v.job_id = j.id AND v.deleted_at IS NULL"
                             " WHERE j.id = ?", [job_id])
        if not rows:
            raise NotFound(f"Job {job_id} does not exist", hint="pick a job from the list")
        job = rows[0]
        job["config"] = json.loads(job["config"]) if job["config"] else None
        return job

    def jobs(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT j.id, j.algorithm, j.status, p.name AS parent, v.name AS version, j.error, j.run_dir,"
            " j.created_at, j.started_at, j.finished_at FROM jobs j"
            " LEFT JOIN policies p ON p.id = j.parent_policy_id"
            " LEFT JOIN policies v ON v.job_id = j.id AND v.deleted_at IS NULL"
            " ORDER BY j.id DESC LIMIT ?", [limit])
        for row in rows:
            row["progress"] = self.progress(row) if row["run_dir"] else {}
        return rows

    def busy(self) -> bool:
        """A trainer is running on this machine (the chat then uses the core it leaves free)."""
        return bool(self.db.scalar("SELECT count(*) FROM jobs WHERE status = 'running'"))

    def progress(self, job: dict[str, Any]) -> dict[str, Any]:
        path = Path(job["run_dir"]) / "progress.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def result(self, job_id: int) -> dict[str, Any]:
        """The child's result.json (status, metrics, setup: reference, kept step, ...); {} while it runs.

        A succeeded job's result never changes, and the Runs page asks every few seconds: it is read once."""
        if job_id in self._results:
            return self._results[job_id]
        job = self.job(job_id)
        result = _read_json(Path(job["run_dir"]) / "result.json") or {}
        if job["status"] == "succeeded":
            self._results[job_id] = result
        return result

    def log_tail(self, job_id: int, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(Path(self.job(job_id)["run_dir"]) / "log.txt", lines)

    def metrics(self, job_ids: list[int]) -> list[dict[str, Any]]:
        if not job_ids:
            return []
        placeholders = ", ".join("?" for _ in job_ids)
        return self.db.query(f"SELECT job_id, step, name, value FROM job_metrics WHERE job_id IN ({placeholders})"
                             " ORDER BY job_id, step, name", job_ids)

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
            for job in self.db.query("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT ?",
                                     [max(free, 0)]):
                self._launch(job["id"])

    def run_blocking(self, job_id: int, on_progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
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
        for stale in ("result.json", "control.json", "progress.json"):
            (run_dir / stale).unlink(missing_ok=True)
        log = open(run_dir / "log.txt", "ab")
        launch = LaunchConfig.from_dict((job["config"] or {}).get("launch"))
        # the pool's size (CpuShareCallback lends a core to the chat), shared by this machine's processes
        threads = str(launch.threads_per_process(trainer_threads()))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        accelerate_file = run_dir / LAUNCH_FILE
        command = child_command(run_dir / "config.json", accelerate_file if accelerate_file.is_file() else None)
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=ROOT,
                                 env=env, start_new_session=True)
        log.close()
        self._children[job_id] = child
        started = psutil.Process(child.pid).create_time()
        with self.db.transaction() as cur:
            cur.execute("UPDATE jobs SET status = 'running', pid = ?, pid_started_at = ?, error = NULL,"
                        " started_at = coalesce(started_at, now()), finished_at = NULL WHERE id = ?",
                        [child.pid, started, job_id])

    def _ingest(self, job_id: int, run_dir: Path) -> None:
        """Copy new lines of metrics.jsonl into job_metrics (the curves the Runs page plots)."""
        path = run_dir / "metrics.jsonl"
        if not path.exists():
            return
        offset = self._metric_offsets.get(job_id)
        if offset is None:  # after a server restart: re-read everything (upserts make it idempotent)
            offset = 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next tick
        values = []
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            step = int(record.get("step", 0))
            values += [[job_id, step, name, float(v)] for name, v in record.items()
                       if name not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(float(v))]
        if values:
            with self.db.transaction() as cur:
                cur.executemany("INSERT INTO job_metrics (job_id, step, name, value) VALUES (?, ?, ?, ?)"
                                " ON CONFLICT (job_id, step, name) DO UPDATE SET value = excluded.value", values)
        self._metric_offsets[job_id] = offset + len(complete)

    def _finish(self, job_id: int, exit_code: int | None, reattached: bool = False) -> str | None:
        """Decide the final state from the exit code and result.json; never 'succeeded' after a failure."""
        self._children.pop(job_id, None)
        job = self.job(job_id)
        run_dir = Path(job["run_dir"])
        self._ingest(job_id, run_dir)
        result = _read_json(run_dir / "result.json")
        status = result.get("status") if result else None
        clean_exit = exit_code == 0 or (exit_code is None and result is not None)
        if status == "succeeded" and clean_exit and _artifact_exists(result):
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
        if exit_code is None and result is None and reattached:
            self._set_status(job_id, "interrupted", finished=True,
                             error="The server restarted while this job ran and its process is gone. "
                                   + ("Resume it from its last checkpoint." if latest_checkpoint(run_dir)
                                      else "It had no checkpoint yet: start it again."))
            return None
        reason = (result or {}).get("error") or (
            f"the training process was killed by signal {-exit_code}" if exit_code and exit_code < 0
            else f"the training process exited with code {exit_code}")
        self._set_status(job_id, "failed", finished=True,
                         error=f"{reason}\n--- last lines of the log ---\n{_tail(run_dir / 'log.txt', 15)}")
        return None

    def _register(self, job: dict[str, Any], result: dict[str, Any]) -> str:
        config = job["config"] or {}
        is_reward = job["algorithm"] == "reward"
        prefix = "rm" if is_reward else "v"
        taken = [int(m.group(1)) for r in self.db.query("SELECT name FROM policies")
                 if (m := re.fullmatch(prefix + r"(\d+)", r["name"]))]
        name = f"{prefix}{max(taken, default=0) + 1}"
        register_policy(
            self.db, name, job["parent_policy_id"], self.base_model_spec, job["algorithm"],
            None if is_reward else result.get("adapter_path"), config.get("data_hash"),
            {**config.get("hyperparams", {}), "model_path": result.get("model_path"),
             "reward_model_path": (result.get("adapter_path") or result.get("model_path")) if is_reward else None},
            result.get("metrics"), job["id"])
        return name

    def _set_status(self, job_id: int, status: str, finished: bool = False, error: str | None = "") -> None:
        with self.db.transaction() as cur:
            if error == "":
                cur.execute("UPDATE jobs SET status = ?, finished_at = CASE WHEN ? THEN now() ELSE finished_at END"
                            " WHERE id = ?", [status, finished, job_id])
            else:
                cur.execute("UPDATE jobs SET status = ?, error = ?, finished_at = CASE WHEN ? THEN now()"
                            " ELSE finished_at END WHERE id = ?", [status, error, finished, job_id])

    def _kill_if_running(self, job_id: int) -> None:
        job = self.job(job_id)
        if job["status"] == "running" and _same_process(job["pid"], job["pid_started_at"]):
            try:
                os.killpg(job["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _check_parent(self, request: JobRequest) -> dict[str, Any]:
        parent = get_policy(self.db, request.parent)
        if parent["algorithm"] == "reward":
            raise ValidationError(f"{parent['name']} is a reward model, not a chat policy",
                                  hint="start from base or a vN version")
        return parent

    def _reward_model_path(self, request: JobRequest) -> str:
        if not request.reward_model:
            raise ValidationError("Online RL needs a trained reward model", hint="train one (algorithm reward) first")
        rows = self.db.query("SELECT config FROM policies WHERE name = ? AND algorithm = 'reward'"
                             " AND deleted_at IS NULL", [request.reward_model])
        if not rows:
            raise NotFound(f"Reward model {request.reward_model!r} does not exist", hint="pick one of the rmN models")
        return json.loads(rows[0]["config"])["reward_model_path"]


CHAT_ACTIVE_FILE = "chat_active"   # in the runs dir; touched by the server whenever the chat generates
CHAT_ACTIVE_WINDOW_S = 60.0        # a trainer lends a core to the chat for this long after the last touch


def trainer_threads(chat_active: bool = False) -> int:
    """CPU threads a trainer uses: every core, or all cores but one while people are chatting.

    Two OpenMP pools competing for the same cores spin against each other: on 2 cores a 32-token answer
    took 30-38 s instead of 1.2 s while a job ran with all threads (measured). But holding a core back all
    the time made a DPO step 1.7x slower on 2 cores (measured), so the trainer only lends the core while
    the chat is in use (see :func:`mark_chat_active`). STUDIO_TRAIN_THREADS fixes the count instead.
    """
    configured = os.environ.get("STUDIO_TRAIN_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    total = psutil.cpu_count(logical=True) or 1
    return max(1, total - 1) if chat_active else total


def mark_chat_active(runs_dir: Path) -> None:
    """Tell running trainers (they check between steps) that the chat needs a core now."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / CHAT_ACTIVE_FILE).touch()


def chat_active(runs_dir: Path) -> bool:
    try:
        return time.time() - (runs_dir / CHAT_ACTIVE_FILE).stat().st_mtime < CHAT_ACTIVE_WINDOW_S
    except FileNotFoundError:
        return False


def child_command(config_path: Path, accelerate_file: Path | None = None) -> list[str]:
    """``accelerate launch -m core.training.run CONFIG``: the job's accelerate config (its launch mode, see
    core.training.launch), or one from env STUDIO_ACCELERATE_CONFIG for jobs launched as a single process."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env_file = os.environ.get("STUDIO_ACCELERATE_CONFIG")
    config_file = env_file if env_file and (accelerate_file is None or _single_process(accelerate_file)) \
        else accelerate_file
    if config_file:
        cmd += ["--config_file", config_file]
    else:
        import torch

        cmd += ["--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no",
                "--mixed_precision", "no"]
        if not torch.cuda.is_available():
            cmd += ["--cpu"]
    return cmd + ["-m", "core.training.run", str(config_path)]


def _single_process(accelerate_file: Path) -> bool:
    import yaml

    return (yaml.safe_load(accelerate_file.read_text()) or {}).get("num_processes", 1) == 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest COMPLETE checkpoint: the Trainer writes trainer_state.json last, so a checkpoint cut short
    (disk full, kill -9 mid-save) lacks it and is never resumed from."""
    checkpoints = sorted((p for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
                          if (p / "trainer_state.json").is_file()),
                         key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return checkpoints[-1] if checkpoints else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
            if p.is_dir() and not (p / "trainer_state.json").is_file()]


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
    return bool(path) and Path(path).exists()


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
