"""One launcher for every process the tests and the benchmarks start: the studio (`launch.py`, `make run`, the
Space's Docker command), the inference engine (`transformers serve`) and the local chain (anvil).

A launched process writes its output to a log file; it counts as up once a URL answers 200 (or its own
``ready`` probe says so: anvil answers JSON-RPC POSTs only); if it exits or
does not answer in time, the error carries the log's tail, which is what a person needs to see why. It lives
in bench/harness/ and imports nothing but the standard library and httpx: bench scripts put the checkout on
sys.path and `from bench.harness.processes import ...`, and the tests import it the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

LOG_TAIL_CHARS = 5000


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a log file, or "" when there is none yet."""
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")[-chars:]


def answers_200(url: str) -> bool:
    """The default readiness probe: a GET of ``url`` answers 200."""
    return httpx.get(url, timeout=2).status_code == 200


def launch(
    command: list[str],
    url: str,
    log_path: Path,
    *,
    name: str,
    timeout: float,
    cwd: Path,
    env: dict[str, str] | None = None,
    own_group: bool = False,
    every: float = 0.3,
    ready: Callable[[str], bool] = answers_200,
) -> subprocess.Popen:
    """Start ``command`` with its output appended to ``log_path`` and wait until ``url`` answers 200.

    ``own_group`` starts it in a new session so that `stop` reaches its children too (`make run` starts a shell
    that starts launch.py). A process that exits, or does not answer within ``timeout`` seconds, raises
    RuntimeError with the log's tail; a process that does not answer is stopped first."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own handle; ours is closed at once
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=own_group
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            if ready(url):
                return process
        except httpx.HTTPError:
            pass
        time.sleep(every)
    stop(process, grace=0, own_group=own_group)
    raise RuntimeError(f"{name} did not answer within {timeout}s:\n{log_tail(log_path)}")


def stop(process: subprocess.Popen | None, *, grace: float = 30.0, own_group: bool = False) -> None:
    """SIGTERM (like Ctrl-C in a terminal), then SIGKILL after ``grace`` seconds; ``grace=0`` kills at once.

    With ``own_group`` the signals go to the whole process group, and stop returns only once every process of
    the group has gone (`make` may exit before launch.py has finished closing DuckDB)."""
    if process is None or process.poll() is not None:
        return
    group = os.getpgid(process.pid) if own_group else None

    def send(sig: signal.Signals) -> None:
        if group is None:
            process.send_signal(sig)
        else:
            os.killpg(group, sig)

    if grace > 0:
        send(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait()
    else:
        send(signal.SIGKILL)
        process.wait()
    if group is not None:
        _wait_for_group_to_exit(group, grace)


def _wait_for_group_to_exit(group: int, timeout: float) -> None:
    """Poll until no process of ``group`` is left; SIGKILL what remains after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
