"""The studio as a process the tests talk to over HTTP, started the way a person (or a Space) starts it:
`python launch.py ...` or the README's `make run`, both through the one launcher in bench/harness/processes.py
(the external inference engine, `transformers serve`, is bench/harness/engine.py, shared with the benchmarks).
Also the polling the tests do against a running studio (`wait_for`, `job_status`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness.processes import free_port, launch, log_tail, stop
from tests.support import ROOT


@dataclass
class Server:
    """A studio started exactly as a user starts it: `python launch.py ...` in its own process."""

    data_dir: Path
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str, timeout: float = 120.0) -> Server:
        """Start (or restart, on the same data dir and port) and wait for /api/health."""
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        command = [
            sys.executable,
            str(ROOT / "launch.py"),
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            *extra,
        ]
        self.process = launch(
            command, f"{self.url}/api/health", self.log_path, name="server", timeout=timeout, cwd=ROOT
        )
        return self

    def stop(self) -> None:
        """SIGTERM, as a person's Ctrl-C: the studio closes DuckDB, so the test can open the file afterwards."""
        stop(self.process)

    def log(self) -> str:
        return log_tail(self.log_path)


@dataclass
class MakeRunServer:
    """`make run ARGS="--model tiny --data-dir D --port P"` from the repo root, exactly as the README says."""

    data_dir: Path
    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> MakeRunServer:
        args = f"--model tiny --data-dir {self.data_dir} --port {self.port}"
        # its own process group: make, the shell and launch.py are stopped together (and only them)
        self.process = launch(
            ["make", "run", f"ARGS={args}"],
            self.url + "/api/health",
            self.log_path,
            name="`make run`",
            timeout=timeout,
            cwd=ROOT,
            env=self.env,
            own_group=True,
        )
        return self

    def stop(self) -> None:
        """SIGTERM to the process group (like Ctrl-C in a terminal), SIGKILL after 30 s."""
        stop(self.process, own_group=True)

    def log(self) -> str:
        return log_tail(self.log_path)


def wait_for(predicate: Callable[[], Any], timeout: float = 240.0, every: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def job_status(srv: Server, job_id: int) -> dict:
    """A training job as the REST API reports it."""
    return httpx.get(f"{srv.url}/api/jobs/{job_id}", timeout=10).json()


def team_server(root: Path, *accounts: str) -> Server:
    """A team-mode studio on the tiny model (accounts as ``name:password:role``) with one trained version, v1 (a
    random LoRA adapter registered with a config naming paths, as a job registers it), started and serving."""
    from core.serving.policies import ensure_base_policy, register_policy
    from storage.db import Database
    from tests.support.studios import make_random_adapter, users_file

    users = users_file(root / "users.txt", *accounts)
    srv = Server(root / "data", free_port())
    database = Database.in_data_dir(srv.data_dir)
    adapter = make_random_adapter(srv.data_dir)
    register_policy(
        database,
        "v1",
        ensure_base_policy(database, "tiny"),
        "tiny",
        "dpo",
        str(adapter),
        data_hash="h",
        config={"beta": 0.1, "model_path": str(adapter)},
        metrics={"loss": 0.5},
    )
    database.close()
    saved = {k: os.environ.get(k) for k in ("STUDIO_AUTH_MODE", "STUDIO_USERS_FILE")}
    os.environ["STUDIO_AUTH_MODE"], os.environ["STUDIO_USERS_FILE"] = "team", str(users)
    try:
        return srv.start("--model", "tiny")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
