"""The studio's background worker for per-version evaluations: "what changed" reports after every job, and (with
another task) safety evaluations. One thread computes requests in order; the UIs poll its state."""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from core.errors import StudioError
from core.serving.host import Host
from core.serving.policies import default_against


class _Stopped(Exception):
    """The worker was stopped while computing a report (nothing is stored)."""


class _Cancelled(Exception):
    """Someone cancelled this request while it was computing (at its next progress report)."""


class ReportWorker:
    """One background thread computing reports in order: after every job, and on demand from the UIs.

    The same worker runs other per-version evaluations (core.compare.safety): ``compute(studio, version, against, user=,
    progress=, **options)`` does the work; ``paired=False`` keys requests by version alone (no parent to fill in).
    """

    def __init__(
        self, studio: Host, compute: Callable[..., Any], name: str = "version-reports", paired: bool = True
    ) -> None:
        self.studio = studio
        self._compute = compute
        self._name, self._paired = name, paired
        self._queue: queue.Queue[tuple[str, str | None, Any, dict[str, Any]]] = queue.Queue()
        self._pending: dict[tuple[str, str | None], str] = {}  # (version, against) -> "queued" | "computing"
        self._errors: dict[tuple[str, str | None], StudioError] = {}
        self._progress: dict[tuple[str, str | None], tuple[float, str]] = {}
        self._cancelled: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step (the studio is closing: the database is about to go away)."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def request(self, version: str, against: str | None = None, user: Any = None, **options: Any) -> str:
        """Queue a report (once); returns its state: "queued" or "computing"."""
        key = self._key(version, against)
        if self._stopped.is_set():
            raise StudioError("the studio is shutting down", hint="ask again after the restart", code="stopping")
        with self._lock:
            if key in self._pending:
                return self._pending[key]
            self._pending[key] = "queued"
            self._errors.pop(key, None)
            self._queue.put((*key, user, options))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        return "queued"

    def cancel(self, version: str, against: str | None = None) -> bool:
        """Stop a queued or computing request at its next progress report; False when none is pending."""
        key = self._key(version, against)
        with self._lock:
            if key not in self._pending:
                return False
            self._cancelled.add(key)
        return True

    def _key(self, version: str, against: str | None) -> tuple[str, str]:
        """(version, against) with the default spelled out, so "v2" and "v2 against v1" are one report."""
        if not self._paired:
            return version, against or ""
        return version, against or default_against(self.studio.db, version)

    def catch_up(self) -> list[str]:
        """Queue the report of every trained chat version that has none against its parent (a server stopped
        between a job's end and its report); returns the versions queued."""
        rows = self.studio.db.query(
            "SELECT v.name FROM chat_versions v WHERE v.job_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM version_reports r WHERE r.policy_id = v.id AND r.against_id = v.against_id)"
            " ORDER BY v.id"
        )
        for row in rows:
            self.request(row["name"])
        return [row["name"] for row in rows]

    def state(self, version: str, against: str | None = None) -> dict[str, Any]:
        """{"status": queued | computing | failed | idle, "progress", "message", "error"}."""
        key = self._key(version, against)
        with self._lock:
            if key in self._pending:
                value, text = self._progress.get(key, (0.0, "waiting for the model"))
                return {"status": self._pending[key], "progress": value, "message": text}
            if key in self._errors:
                exc = self._errors[key]
                return {"status": "failed", "error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
        return {"status": "idle"}

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                version, against, user, options = self._queue.get(timeout=1)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            key = (version, against)
            with self._lock:
                self._pending[key] = "computing"

            def progress(value: float, text: str, key: tuple[str, str | None] = key) -> None:
                if self._stopped.is_set():
                    raise _Stopped()
                if key in self._cancelled:
                    raise _Cancelled()
                self._progress[key] = (value, text)

            try:
                progress(0.0, "starting")
                self._compute(self.studio, version, against, user=user, progress=progress, **options)
            except _Stopped:
                return
            except _Cancelled:
                with self._lock:
                    self._errors[key] = StudioError(
                        f"the {self._name} of {version} was cancelled",
                        hint="start it again when you want it",
                        code="cancelled",
                    )
            except StudioError as exc:
                with self._lock:
                    self._errors[key] = exc
            except Exception as exc:  # the worker must survive anything a report does
                traceback.print_exc()
                with self._lock:
                    self._errors[key] = StudioError(
                        f"the {self._name} of {version} failed: {exc}", hint="see the server log", code="report_failed"
                    )
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                    self._progress.pop(key, None)
                    self._cancelled.discard(key)
