"""Simulated labelers voting through a real studio server: shared by bench/labeling.py, bench/load.py and the
load tests.

A simulated labeler is a thread with its own HTTP client that POSTs /api/votes back to back, each vote with a
fresh idempotency key. When a request fails (server down, timeout, 5xx) it retries THE SAME vote with the same
key until it is acknowledged or the run is over, as a real client should: that is what makes "acknowledged
once, stored once" checkable after a crash.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness.processes import free_port, launch, log_tail  # noqa: E402 - the one launcher, shared with tests


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class StudioProcess:
    """``launch.py --model MODEL`` on a loopback port and a data dir, started, killed and restarted at will."""

    def __init__(
        self, data_dir: Path, log_path: Path, port: int | None = None, model: str = "tiny", extra: tuple[str, ...] = ()
    ) -> None:
        self.data_dir, self.log_path, self.model, self.extra = Path(data_dir), Path(log_path), model, tuple(extra)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600.0) -> float:
        """Start and wait for /api/health; returns the seconds it took."""
        t0 = time.monotonic()
        self.proc = launch(
            [
                sys.executable,
                str(ROOT / "launch.py"),
                "--model",
                self.model,
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.extra,
            ],
            f"{self.url}/api/health",
            self.log_path,
            name="studio server",
            timeout=timeout,
            cwd=ROOT,
            every=0.1,
        )
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("the server ignored SIGTERM for 60 s and was killed") from exc

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)


@dataclass
class VoteLoad:
    """Labeler threads voting until :meth:`stop`; what was acknowledged, how fast, and what failed."""

    url: str
    labelers: int = 20
    acked: list[tuple[str, float]] = field(default_factory=list)  # (idempotency key, latency s) per 2xx
    sent_at: list[float] = field(default_factory=list)  # monotonic send time of each acked vote
    last_ack_wall: float = 0.0  # wall clock of the last acknowledgement
    failures: collections.Counter = field(default_factory=collections.Counter)
    first_errors: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> VoteLoad:
        barrier = threading.Barrier(self.labelers)
        self._threads = [
            threading.Thread(target=self._labeler, args=(n, barrier), daemon=True) for n in range(1, self.labelers + 1)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _fail(self, kind: str, detail: str) -> None:
        with self._lock:
            self.failures[kind] += 1
            self.first_errors.setdefault(kind, detail[:300])

    def _labeler(self, n: int, barrier: threading.Barrier) -> None:
        import httpx

        barrier.wait()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                body = {
                    "prompt": f"load prompt {n}-{i}: which answer is kinder?",
                    "answer_a": f"Answer A #{i} from labeler {n}.",
                    "answer_b": f"Answer B #{i}, different.",
                    "outcome": ("a", "b", "tie")[i % 3],
                    "labeler": f"labeler-{n}",
                    "idempotency_key": str(uuid.uuid4()),
                }
                while not self._stop.is_set():  # retry this vote, same key, until acknowledged
                    sent = time.perf_counter()
                    try:
                        response = client.post("/api/votes", json=body)
                    except httpx.HTTPError as exc:
                        self._fail(type(exc).__name__, str(exc))
                        time.sleep(0.2)
                        continue
                    latency = time.perf_counter() - sent
                    if 200 <= response.status_code < 300:
                        with self._lock:
                            self.acked.append((body["idempotency_key"], latency))
                            self.sent_at.append(sent)
                            self.last_ack_wall = time.time()
                        break
                    self._fail(f"http_{response.status_code}", response.text)
                    if response.status_code < 500:
                        break  # the vote itself is wrong: retrying will not help
                    time.sleep(0.2)

    def latencies_ms(self) -> list[float]:
        with self._lock:
            return sorted(latency * 1000 for _, latency in self.acked)


def stored_keys(data_dir: Path) -> collections.Counter:
    """idempotency key -> number of preference rows, read from the DuckDB file (server stopped)."""
    from storage.db import Database

    db = Database.in_data_dir(data_dir)
    try:
        return collections.Counter(
            {
                row["idempotency_key"]: row["n"]
                for row in db.query(
                    "SELECT idempotency_key, count(*) AS n FROM preferences"
                    " WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key"
                )
            }
        )
    finally:
        db.close()


def audit(load: VoteLoad, data_dir: Path) -> dict[str, int]:
    """lost = acknowledged but not stored; duplicated = stored more than once (by key or by retry)."""
    stored = stored_keys(data_dir)
    keys = [key for key, _ in load.acked]
    return {
        "acked": len(keys),
        "lost": sum(1 for key in set(keys) if key not in stored),
        "duplicated": sum(1 for n in stored.values() if n > 1) + len(keys) - len(set(keys)),
        "stored": len(stored),
        "stored_not_acked": len(set(stored) - set(keys)),
    }
