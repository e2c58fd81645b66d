"""The studio's background worker for per-version evaluations: "what changed" reports after every job, and (with
another task) safety evaluations. One thread computes requests in order; the UIs poll its state."""

from __future__ import annotations

import contextlib
import heapq
import inspect
import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from core.errors import Conflict, StudioError
from core.serving.host import Host
from core.serving.policies import default_against


class _Stopped(Exception):
    """The worker was stopped while computing a report (nothing is stored)."""


class _Cancelled(Exception):
    """Someone cancelled this request while it was computing (at its next progress report)."""


class CpuTurns:
    """How background evaluations share a machine without a GPU: one at a time, and none while a job trains.

    Why: a report, a safety run and a training job each start as many threads as there are cores. Run together on
    2 cores they oversubscribe them and all crawl: a DPO job that took 296 s alone took 549 s beside the previous
    version's safety run (its set-up alone went from 30 s to ~230 s). One after the other, each finishes sooner and
    the job the user started comes first. The chat and labeling are not held back: they ask a running job to lend
    them a core instead (core.studio.Studio.share_cpu).
    """

    RECHECK_S = 1.0  # how often a paused evaluation asks again (and how stale ``training()`` may be)

    def __init__(self, training: Callable[[], str | None]) -> None:
        self._training = training  # why to wait now ("job 7 is training on the CPU"), or None
        self._cv = threading.Condition()
        self._busy = False
        self._line: list[tuple[int, int]] = []  # heap of (priority, arrival) waiting for a turn
        self._arrivals = itertools.count()
        self._checked = float("-inf")
        self._why: str | None = None

    @contextlib.contextmanager
    def turn(self, priority: int, waiting: Callable[[], None]) -> Iterator[None]:
        """Hold the CPU for one evaluation. The lowest ``priority`` goes first, then the earliest: a new version's
        report (what its user looks at) does not queue behind the safety runs of older versions that waited out a
        job. ``waiting()`` is called about once a second while waiting; what it raises leaves the line."""
        ticket = (priority, next(self._arrivals))
        with self._cv:
            heapq.heappush(self._line, ticket)
            try:
                while self._busy or self._line[0] != ticket:
                    waiting()
                    self._cv.wait(self.RECHECK_S)
            except BaseException:
                self._line.remove(ticket)
                heapq.heapify(self._line)
                self._cv.notify_all()
                raise
            heapq.heappop(self._line)
            self._busy = True
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def training(self) -> str | None:
        """Why to pause now, asked at most once a second (generation reports progress after every token)."""
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_S:
            self._why, self._checked = self._training(), now
        return self._why


class ReportWorker:
    """One background thread computing reports in order: after every job, and on demand from the UIs.

    The same worker runs other per-version evaluations (core.compare.safety): ``compute(studio, version, against, user=,
    progress=, **options)`` does the work; ``paired=False`` keys requests by version alone (no parent to fill in).
    """

    def __init__(
        self,
        studio: Host,
        compute: Callable[..., Any],
        name: str = "report",
        paired: bool = True,
        turns: CpuTurns | None = None,
        priority: int = 0,
    ) -> None:
        self.studio = studio
        self._compute = compute
        self._name, self._paired = name, paired
        self._turns, self._priority = turns, priority  # shared by the studio's workers without a GPU; lower first
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._pending: dict[tuple[str, str | None], str] = {}  # (version, against) -> "queued" | "computing"
        self._asks: dict[tuple[str, str | None], tuple[Any, dict[str, Any]]] = {}  # pending key -> (user, options)
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
        """Queue a report (once); returns its state: "queued" or "computing".

        Why each case: a request without options joins whatever is pending for the version (the runs after every job
        ask so). One with options replaces the options of a queued run (the newest ask wins: it has not started), and
        is refused with ``Conflict`` while a run with other options computes, rather than silently answered with
        settings nobody asked for."""
        key, options = self._key(version, against), self._explicit(options)
        if self._stopped.is_set():
            raise StudioError("the studio is shutting down", hint="ask again after the restart", code="stopping")
        with self._lock:
            if key in self._pending:
                state = self._pending[key]
                if options and options != self._asks[key][1]:
                    if state == "queued":
                        self._asks[key] = (user, options)
                    else:
                        raise Conflict(
                            f"a {self._name} run of {' against '.join(filter(None, key))} is already computing with"
                            " other settings",
                            hint="wait for it to finish, or cancel it, then ask again",
                        )
                return state
            self._pending[key] = "queued"
            self._asks[key] = (user, options)
            self._errors.pop(key, None)
            self._queue.put(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        return "queued"

    def _explicit(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` less those equal to the compute function's own defaults: asking for the defaults by name is
        the same request as asking for nothing."""
        params = inspect.signature(self._compute).parameters
        return {k: v for k, v in options.items() if k not in params or v != params[k].default}

    def cancel(self, version: str, against: str | None = None) -> bool:
        """Stop a queued or computing request at its next progress report; False when none is pending."""
        key = self._key(version, against)
        with self._lock:
            if key not in self._pending:
                return False
            self._cancelled.add(key)
        return True

    def _paused(self, why: str) -> str:
        return f"paused while {why}: it goes on when the job ends"

    def _check(self, key: tuple[str, str | None]) -> None:
        """Raise when the studio is stopping or someone cancelled this request."""
        if self._stopped.is_set():
            raise _Stopped()
        if key in self._cancelled:
            raise _Cancelled()

    @contextlib.contextmanager
    def _turn(self, key: tuple[str, str | None]) -> Iterator[None]:
        """Wait for this worker's turn on the CPU (see CpuTurns); no waiting without shared turns."""
        if self._turns is None:
            yield
            return

        def waiting() -> None:
            self._check(key)
            self._progress[key] = (0.0, "waiting for another evaluation to finish (on a CPU they take turns)")

        with self._turns.turn(self._priority, waiting):
            yield

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
                if self._turns is not None and (why := self._turns.training()):
                    text = self._paused(why)  # mid-answer the generation itself waits (scheduler hold)
                return {"status": self._pending[key], "progress": value, "message": text}
            if key in self._errors:
                exc = self._errors[key]
                return {"status": "failed", "error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
        return {"status": "idle"}

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                version, against = self._queue.get(timeout=1)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            key = (version, against)
            with self._lock:
                self._pending[key] = "computing"
                user, options = self._asks[key]

            def progress(value: float, text: str, key: tuple[str, str | None] = key) -> None:
                self._check(key)
                while self._turns is not None and (why := self._turns.training()):
                    self._progress[key] = (value, self._paused(why))
                    time.sleep(CpuTurns.RECHECK_S)
                    self._check(key)
                self._progress[key] = (value, text)

            try:
                with self._turn(key):
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
                    self._asks.pop(key, None)
                    self._progress.pop(key, None)
                    self._cancelled.discard(key)
