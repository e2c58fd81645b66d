"""The process-wide studio: settings, database, hardware profile and the loaded base model.

One server process hosts the Streamlit console, the Gradio app and the REST API; they all reach the
same :class:`Studio` through :func:`current`, so there is one DuckDB connection owner and one model
cache per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from core import __version__
from core.chain.service import stop_service
from core.compare.benchmarks import benchmark_in_background, mark_interrupted
from core.compare.report import compute_report
from core.compare.safety import evaluate_in_background
from core.compare.worker import CpuTurns, ReportWorker
from core.config import Settings
from core.errors import ModelError, StudioError
from core.judging.runs import JudgeRuns
from core.labeling.identity import Directory
from core.labeling.users import User
from core.serving.engine import Engine
from core.serving.generate import PairUpdate, SamplingParams, stream_pair
from core.serving.hardware import HardwareProfile, detect_hardware
from core.serving.models import auto_dtype, load_model
from core.serving.policies import default_against, ensure_base_policy, get_policy
from core.serving.scheduler import clear_background_hold, scheduler_for, set_background_hold
from core.share.backup import DirTarget, target_from
from core.share.backup_service import BackupService
from core.training.distributed import trainer_threads
from core.training.jobs import Supervisor
from core.training.rundir import mark_chat_active
from storage.db import Database

_current: Studio | None = None


# The studio itself, evaluating a new version after its job (safety runs are admin work; no person asked for it,
# so the run records no creator).
AFTER_JOB = User(None, "studio", "admin")  # type: ignore[arg-type]


class Studio:
    def __init__(self, settings: Settings, model_path: Path | str) -> None:
        self.settings = settings
        self.model_path = model_path
        self.db = Database(settings.db_path)
        self.hardware: HardwareProfile = detect_hardware()
        self.base_policy_id = ensure_base_policy(self.db, settings.model)
        self.directory = Directory(settings, self.db)
        self.supervisor = Supervisor(self.db, settings.runs_dir, model_path, settings.model)
        # Without a GPU the background evaluations take turns and wait for training (CpuTurns says why).
        turns = None if self.hardware.cuda_available else CpuTurns(self.training_on_cpu)
        self._hold = turns.training if turns is not None else None
        if self._hold is not None:
            set_background_hold(self._hold)  # their generation waits too, even mid-answer
        self.reports = ReportWorker(self, compute=compute_report, turns=turns)  # first: what people look at
        self.safety = ReportWorker(
            self, compute=evaluate_in_background, name="safety evaluation", paired=False, turns=turns, priority=1
        )
        self.benchmarks = ReportWorker(
            self, compute=benchmark_in_background, name="benchmarks", turns=turns, priority=2
        )
        mark_interrupted(self.db)  # runs a stopped studio left behind never finish
        self.judge_runs = JudgeRuns(self)
        self.engine = Engine(settings.inference_url, settings.inference_model) if settings.inference_url else None
        self.supervisor.on_new_version = self._on_new_version
        self.backup = self._backup_service()
        self._model: tuple[Any, Any] | None = None
        self._model_error: StudioError | None = None
        self._model_lock = threading.Lock()
        self._loaded_adapters: set[str] = set()

    # -- model -------------------------------------------------------------------------------------
    def model(self) -> tuple[Any, Any]:
        """(model, tokenizer) of the base policy, loaded on first use and shared by every UI."""
        with self._model_lock:
            if self._model is None:
                try:
                    self._model = load_model(self.model_path, dtype=self.settings.chat_dtype)
                    self._model_error = None
                except StudioError as exc:
                    self._model_error = exc
                    raise
                except Exception as exc:  # a broken model dir must not take the server down
                    self._model_error = ModelError(
                        f"Could not load {self.model_path}: {exc}",
                        hint="check --model or delete the model dir to re-provision",
                    )
                    raise self._model_error from exc
            return self._model

    def adapter_rows(
        self, policy_a: str, policy_b: str
    ) -> tuple[tuple[str | None, str | None] | None, tuple[int, int]]:
        """Hot-swap: make both policies' adapters available on the shared base model (loaded once each,
        the base weights are never reloaded) and return (per-row adapter names, policy ids)."""
        a, b = get_policy(self.db, policy_a), get_policy(self.db, policy_b)
        model, _ = self.model()
        with self._model_lock:
            for policy in (a, b):
                if policy["adapter_path"] and policy["name"] not in self._loaded_adapters:
                    try:
                        model.load_adapter(policy["adapter_path"], adapter_name=policy["name"])
                    except Exception as exc:  # a missing or broken adapter dir must not take the chat down
                        raise ModelError(
                            f"Cannot load the adapter of {policy['name']}: {exc}",
                            hint="the version's files may have been moved or deleted",
                        ) from exc
                    self._loaded_adapters.add(policy["name"])
        rows = (a["name"] if a["adapter_path"] else None, b["name"] if b["adapter_path"] else None)
        return (rows if self._loaded_adapters else None), (a["id"], b["id"])

    def pair_stream(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingParams,
        policy_a: str,
        policy_b: str,
        *,
        seed: int | None = None,
        interval: float | Callable[[], float] = 0.0,
    ) -> tuple[Iterator[PairUpdate], tuple[int, int]]:
        """Two answers of two policy versions, streamed: from the external inference engine when one is set,
        else from the shared in-process model (adapters hot-swapped in). Also returns the policies' ids."""
        if self.engine is not None:
            a, b = get_policy(self.db, policy_a), get_policy(self.db, policy_b)
            models = (
                self.engine.model_for(a["name"], a["adapter_path"]),
                self.engine.model_for(b["name"], b["adapter_path"]),
            )
            return self.engine.stream_pair(messages, sampling, models, seed, interval), (a["id"], b["id"])
        rows, ids = self.adapter_rows(policy_a, policy_b)
        model, tokenizer = self.model()
        self.share_cpu()
        return stream_pair(model, tokenizer, messages, sampling, adapter_names=rows, seed=seed, interval=interval), ids

    def loaded_model(self) -> Any | None:
        """The shared model if it is loaded (without loading it)."""
        return self._model[0] if self._model is not None else None

    def generation_load(self) -> int:
        """Requests the in-process model is generating for now (0 with an external engine)."""
        model = self.loaded_model()
        if self.engine is not None or model is None:
            return 0
        return scheduler_for(model).load()["running_requests"]

    def _backup_service(self) -> BackupService | None:
        """The background backup, when a target is configured (settings backup_repo / backup_dir)."""
        s = self.settings
        target = target_from(s.backup_repo, s.backup_dir, s.backup_public)
        if target is None:
            return None
        service = BackupService(
            self.db,
            s.data_dir,
            target,
            s.backup_every,
            self.supervisor.running_run_dirs if s.backup_checkpoints else None,
        )
        self.supervisor.on_finished = lambda job_id, state: service.request(f"job {job_id} {state}")
        return service.start()

    def backup_service(self) -> BackupService:
        """The configured backup, or (none configured) a one-off one to ``<data dir>/backups``."""
        return self.backup or BackupService(
            self.db, self.settings.data_dir, DirTarget(self.settings.data_dir / "backups"), self.settings.backup_every
        )

    def _on_new_version(self, version: str) -> None:
        """A job registered a version: report on it, evaluate its safety (and its parent's, once) so the release
        gate knows, and offer its adapter to the external engine."""
        self.reports.request(version)
        if get_policy(self.db, version)["algorithm"] != "reward":
            from core.compare.safety import default_conditions, has_run

            self.safety.request(version, user=AFTER_JOB)
            parent = default_against(self.db, version)
            if not has_run(self.db, parent, default_conditions()):  # the gate compares runs made alike
                self.safety.request(parent, user=AFTER_JOB)
        if self.engine is not None:
            policy = get_policy(self.db, version)
            if policy["adapter_path"]:
                self.engine.register_adapter(policy["name"], str(Path(policy["adapter_path"]).resolve()))

    def training_on_cpu(self) -> str | None:
        """ "job N is training on this CPU" while a job trains on a machine without a GPU, else None."""
        job = None if self.hardware.cuda_available else self.supervisor.running_job()
        return None if job is None else f"job {job} is training on this CPU"

    def share_cpu(self) -> None:
        """Before generating: while a job trains, ask it to lend a core and use only what it leaves free."""
        from core.serving.scheduler import set_generation_threads

        total = psutil.cpu_count(logical=True) or 1
        if self.supervisor.busy():
            mark_chat_active(self.supervisor.runs_dir)
            set_generation_threads(max(1, total - trainer_threads(chat_active=True)))
        else:
            set_generation_threads(total)

    def warm_up(self) -> None:
        """Load the model in the background so the first chat does not pay for it."""

        def run() -> None:
            try:
                self.model()
            except StudioError:
                pass  # recorded in model_status()

        threading.Thread(target=run, name="model-warm-up", daemon=True).start()

    def model_status(self) -> str:
        if self._model is not None:
            return "ready"
        if self._model_error is not None:
            return f"error: {self._model_error.message}"
        return "loading"

    def chat_dtype(self) -> str:
        """The precision chat runs in: the setting, with 'auto' resolved for this machine."""
        spec = self.settings.chat_dtype
        if spec != "auto":
            return spec
        return str(auto_dtype(self.hardware.device, self.hardware)).removeprefix("torch.")

    # -- info --------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": self.settings.model,
            "model_path": str(self.model_path),
            "model_status": self.model_status(),
            "chat_dtype": self.chat_dtype(),
            "data_dir": str(self.settings.data_dir.resolve()),
            "schema_version": self.db.schema_version,
            "storage_ephemeral": self.settings.storage_is_ephemeral,
            "backup": self.backup.status() if self.backup is not None else None,
            **({"engine": self.engine.status().as_dict()} if self.engine is not None else {}),
        }

    def close(self) -> None:
        if self._hold is not None:  # held evaluations go on to their next step, where they see the stop
            clear_background_hold(self._hold)
        if self.engine is not None:
            self.engine.close()
        self.supervisor.stop()
        self.reports.stop()
        self.safety.stop()
        self.benchmarks.stop()
        self.judge_runs.stop()
        stop_service(self)
        model = self.loaded_model()
        if model is not None:  # let the generating thread leave torch before the process exits (else a C++ abort)
            scheduler_for(model).idle(timeout=10)
        if self.backup is not None:
            self.backup.close()  # a last snapshot of what changed, before the database closes
        self.db.close()


def open_studio(settings: Settings, model_path: Path | str) -> Studio:
    """Create the process's studio and make it :func:`current`."""
    global _current
    _current = Studio(settings, model_path)
    return _current


def current() -> Studio:
    if _current is None:
        raise StudioError("The studio is not running in this process", hint="start it with `python launch.py`")
    return _current
