"""The background backup: a snapshot every ``backup_every`` seconds when something changed, after every job, on
demand and at a clean shutdown; never on a request's path.

A vote is acknowledged from DuckDB as before; this thread reads the database in its own transaction (EXPORT
DATABASE) and uploads from its own staging folder, so whatever the Hub does (down, 429, 5xx) delays a backup
and never a vote. A failed backup is retried with backoff (5 s, 10 s, 20 s, ... up to the interval) and the next
good one catches up on everything, because every snapshot is whole.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.share.backup import BackupTarget, DirTarget, Snapshot, redaction_count, snapshot_title, take_snapshot
from storage.db import DB_FILENAME, Database

log = logging.getLogger(__name__)
FIRST_RETRY_S = 5.0
FIRST_LOOK_S = 10.0
STAGE = ".backup-stage"


class BackupService:
    """One thread per studio. ``status()`` is what the health answer, the Settings page and /metrics show."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        target: BackupTarget,
        every: float,
        running_run_dirs: Callable[[], list[Path]] | None = None,
    ) -> None:
        self.db, self.data_dir, self.target, self.every = db, Path(data_dir), target, float(every)
        self._running_run_dirs = running_run_dirs
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one snapshot at a time (the thread, "Back up now", shutdown)
        self._stopping = False
        self._reason = "scheduled"
        self._backed_fingerprint: tuple | None = None
        self._state: dict[str, Any] = {
            "last_good_at": None,
            "last_started_at": None,
            "last_ref": None,
            "last_title": None,
            "last_seconds": None,
            "last_error": None,
            "last_error_at": None,
            "failures": 0,
            "running": False,
            "history_start": None,
            "started_at": time.time(),
        }
        self._thread: threading.Thread | None = None
        self._oldest_redactions: int | None = None
        self._refreshed = False

    # -- control ------------------------------------------------------------------------------------------
    def start(self) -> BackupService:
        self._refresh_history()
        self._thread = threading.Thread(target=self._loop, name="backup", daemon=True)
        self._thread.start()
        return self

    def request(self, reason: str) -> None:
        """Back up soon (the thread wakes now), whether or not the tables changed: a job's files may have."""
        self._reason = reason
        self._wake.set()

    def close(self, timeout: float = 120.0) -> None:
        """Stop the thread, then take a last snapshot if anything changed since the last good one."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self.pending():
            try:
                self.backup_now("shutdown")
            except StudioError as exc:
                log.warning("backup at shutdown failed: %s", exc.message)

    # -- work ---------------------------------------------------------------------------------------------
    def backup_now(self, reason: str) -> Snapshot:
        """Take and store one snapshot now (in the caller's thread); raises what went wrong, and records it."""
        with self._lock:
            self._state["running"] = True
            started, started_at = time.monotonic(), _now()
            fingerprint = self._fingerprint()  # before reading: writes during the snapshot count as pending
            stage = self.data_dir / STAGE
            try:
                running = self._running_run_dirs() if self._running_run_dirs else None
                manifest, files = take_snapshot(self.db, self.data_dir, stage, reason, running)
                title = snapshot_title(manifest)
                ref = self.target.push(manifest, files, title)
            except StudioError as exc:
                self._state.update(
                    last_error=exc.message, last_error_at=_now(), running=False, failures=self._state["failures"] + 1
                )
                raise
            except Exception as exc:  # noqa: BLE001 - recorded and shown; the thread retries
                self._state.update(
                    last_error=f"{type(exc).__name__}: {exc}",
                    last_error_at=_now(),
                    running=False,
                    failures=self._state["failures"] + 1,
                )
                raise StudioError(
                    f"The backup failed: {type(exc).__name__}: {exc}",
                    hint="see the studio's log; the next backup tries again",
                ) from exc
            finally:
                shutil.rmtree(stage, ignore_errors=True)
            self._backed_fingerprint = fingerprint
            self._state.update(
                last_good_at=_now(),
                last_ref=ref,
                last_title=title,
                running=False,
                failures=0,
                last_seconds=round(time.monotonic() - started, 3),
                last_error=None,
                last_started_at=started_at,
            )
        self._refresh_history()
        return Snapshot(ref, self._state["last_good_at"], title)

    def rewrite_history(self) -> None:
        """Keep only a snapshot taken now: older ones may hold text redacted since (the Hub squashes its history,
        a directory deletes the older manifests and unused blobs)."""
        self.backup_now("before rewriting the backup history")
        with self._lock:
            self.target.squash()
        self._refresh_history()

    def _loop(self) -> None:
        # the first look comes soon: a studio started on data no snapshot holds yet (a first run with a new target,
        # or a process killed before its last backup) should not wait a whole interval to be safe
        delay = min(self.every, FIRST_LOOK_S)
        while not self._stopping:
            asked = self._wake.wait(timeout=delay)
            self._wake.clear()
            if self._stopping:
                break
            if not (asked or self.pending() or self._state["failures"]):
                delay = self.every
                continue
            reason, self._reason = self._reason if asked else "scheduled", "scheduled"
            try:
                self.backup_now(reason)
                delay = self.every
            except StudioError as exc:
                delay = min(self.every, FIRST_RETRY_S * 2 ** (self._state["failures"] - 1))
                log.warning("backup to %s failed (%s); retrying in %.0f s", self.target.describe(), exc.message, delay)

    # -- state --------------------------------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """Changes since a snapshot: every commit touches the database file or its write-ahead log."""
        out: list[tuple[int, int] | None] = []
        for name in (DB_FILENAME, DB_FILENAME + ".wal"):
            try:
                st = (self.data_dir / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def pending(self) -> bool:
        return self._fingerprint() != self._backed_fingerprint

    def _refresh_history(self) -> None:
        self._refreshed = True
        try:
            snaps = self.target.snapshots()
        except StudioError as exc:
            log.warning("listing the backups in %s failed: %s", self.target.describe(), exc.message)
            return
        self._state["history_start"] = snaps[-1].created_at if snaps else None
        try:  # the oldest snapshot's redaction count: fewer than now means it may hold redacted text
            self._oldest_redactions = int(self.target.manifest(snaps[-1].ref).get("redactions", 0)) if snaps else None
        except StudioError as exc:
            log.warning("reading the oldest backup's manifest failed: %s", exc.message)
        if snaps and self._state["last_good_at"] is None:
            self._state.update(last_good_at=snaps[0].created_at, last_ref=snaps[0].ref, last_title=snaps[0].title)

    def seconds_since_last_good(self) -> float | None:
        last = self._state["last_good_at"]
        return None if last is None else max(0.0, time.time() - datetime.fromisoformat(last).timestamp())

    def seconds_running(self) -> float:
        return time.time() - self._state["started_at"]

    def status(self) -> dict[str, Any]:
        """Target, last good backup, last error, whether changes wait, and whether older snapshots still hold
        text redacted since (then the Settings page offers to rewrite the history)."""
        if not self._refreshed:
            self._refresh_history()
        oldest = self._oldest_redactions
        holds_redacted = oldest is not None and redaction_count(self.db) > oldest
        return {
            "target": self.target.describe(),
            "kind": "directory" if isinstance(self.target, DirTarget) else "hub",
            "every_s": self.every,
            "pending": self.pending(),
            "seconds_since_last_good": self.seconds_since_last_good(),
            "history_holds_redacted": holds_redacted,
            **{k: v for k, v in self._state.items() if k != "started_at"},
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
