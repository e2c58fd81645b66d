"""The studio's chain service: one ledger connection and one background worker per process.

The worker ticks every few seconds: collect new contributions, cut a batch when the policy says so
(count or age), and anchor queued batches whose retry time has come. A chain that is down only
delays the work: the ledger is (re)connected on the next tick and queued batches are retried with
exponential backoff. The service starts on first use (Wallet page, CLI) via :func:`service_for`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path
from typing import Any

from core.chain import contributions as cb
from core.chain.contract import compile_ledger
from core.chain.errors import ChainError, ChainUnavailable
from core.chain.ledger import Ledger, connect_rpc, load_operator
from core.chain.local import open_embedded
from core.config import Settings
from core.serving.host import Host
from storage.db import Database

log = logging.getLogger(__name__)
TICK_SECONDS = 5.0
RPC_TIMEOUT_SECONDS = 10.0


class ChainService:
    def __init__(self, settings: Settings, db: Database, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.env = env
        self.cache_dir = Path(settings.data_dir) / "chain" / "build"
        self._ledger: Ledger | None = None
        self._ledger_error: str | None = None
        self._lock = threading.RLock()  # the work: collecting, batching, anchoring
        self._ledger_lock = threading.Lock()  # the connection only, so a page never waits behind the work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def embedded(self) -> bool:
        return not self.settings.chain_rpc_url

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "embedded (py-evm, rebuilt from the database)" if self.embedded else "JSON-RPC",
            "rpc_url": self.settings.chain_rpc_url,
            "chain_id": self._ledger.chain_id if self._ledger else None,
            "contract": self._ledger.address if self._ledger else self.settings.contract_address,
            "operator": self._ledger.operator.address if self._ledger else None,
            "error": self._ledger_error,
        }

    def ledger(self) -> Ledger:
        """The connected ledger (connecting, deploying or replaying on first use).

        Under its own lock, not the work's: the Wallet page asks for the ledger on every run, and while the worker
        recorded a backlog (10k votes after an upgrade: tens of seconds, paced) the page waited for all of it."""
        with self._ledger_lock:
            if self._ledger is None:
                try:
                    self._ledger = self._connect()
                    self._ledger_error = None
                except ChainError as exc:
                    self._ledger_error = exc.message
                    raise
            return self._ledger

    def _connect(self) -> Ledger:
        if self.embedded:
            return open_embedded(self.db, self.cache_dir)
        if not self.settings.contract_address:
            raise ChainError(
                "No ledger contract address for the external chain",
                hint="deploy with `launch.py chain deploy` and set STUDIO_CHAIN_CONTRACT",
            )
        assert self.settings.chain_rpc_url is not None  # not embedded: the URL is set
        return connect_rpc(
            self.settings.chain_rpc_url,
            compile_ledger(self.cache_dir),
            self.settings.contract_address,
            load_operator(self.env),
            self.settings.chain_id,
            timeout=RPC_TIMEOUT_SECONDS,
        )

    def try_ledger(self) -> Ledger | None:
        try:
            return self.ledger()
        except ChainError:
            return None

    def drop_connection(self) -> None:
        """Forget the connection after an RPC failure (external chains only: the embedded one is local)."""
        if not self.embedded:
            with self._ledger_lock:
                self._ledger = None

    # -- work --------------------------------------------------------------------------------------
    def cut_batch(self, trigger: str = "admin") -> int | None:
        """Collect, then batch every pending contribution of a linked wallet now."""
        with self._lock:
            cb.collect_contributions(self.db)
            return cb.make_batch(self.db, trigger)

    def anchor(self, include_not_due: bool = False) -> list[int]:
        with self._lock:
            ledger = self.ledger()
            try:
                return cb.anchor_due(self.db, ledger, include_not_due=include_not_due)
            finally:
                if self.db.scalar(
                    "SELECT count(*) FROM chain_batches WHERE status = 'queued'"
                    " AND last_error LIKE '[chain_unavailable]%'"
                ):
                    self.drop_connection()

    def tick(self) -> None:
        """One round of the worker: collect, batch when due, anchor what is due."""
        with self._lock:
            cb.collect_contributions(self.db, pause=0.1)  # a backlog is spread out: labelers' votes come first
            trigger = cb.due_trigger(self.db, cb.load_batch_policy(self.db))
            if trigger:
                cb.make_batch(self.db, trigger)
            if self.db.scalar(
                "SELECT count(*) FROM chain_batches WHERE status = 'queued' AND next_attempt_at <= current_timestamp"
            ):
                try:
                    self.anchor()
                except ChainUnavailable:
                    pass  # stays queued; retried on a later tick
                except ChainError as exc:
                    log.warning("chain: %s", exc.message)

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="chain-worker", daemon=True)
                self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the worker is ticking."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception as exc:  # the worker must survive anything; the error is shown on the page
                log.warning("chain worker: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        """Stop the worker and wait for its current tick (before the database is closed)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)


_services: weakref.WeakKeyDictionary[Any, ChainService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def service_for(studio: Host) -> ChainService:
    """The process's chain service for this studio, started on first use (keyed weakly: a closed
    and collected studio never hands its service to a new one)."""
    with _services_lock:
        service = _services.get(studio)
        if service is None:
            service = _services[studio] = ChainService(studio.settings, studio.db)
            service.start()
        return service


def stop_service(studio: Host) -> None:
    """Stop this studio's chain worker, if one started: the studio is closing and its database goes next (a worker
    left ticking on a closed database logs 'Connection already closed' every few seconds until the process ends)."""
    with _services_lock:
        service = _services.pop(studio, None)
    if service is not None:
        service.stop()
