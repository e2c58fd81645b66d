"""Helpers for the newcomer flow (tests/test_newcomer.py): the studio started with the README's run command
(`make run ARGS=...`) in its own process group, and a page checker that screenshots and looks for tracebacks."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


from tests.conftest import ROOT, wait_until_up

ARTIFACTS = ROOT / "test-artifacts"


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

    def start(self, timeout: float = 180.0) -> "MakeRunServer":
        args = f"--model tiny --data-dir {self.data_dir} --port {self.port}"
        with open(self.log_path, "ab") as log:
            # its own process group: make, the shell and launch.py are stopped together (and only them)
            self.process = subprocess.Popen(["make", "run", f"ARGS={args}"], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_up(self.process, self.url + "/api/health", timeout, "`make run`", self.log, self.stop)
        return self

    def stop(self) -> None:
        """SIGTERM to the process group (like Ctrl-C in a terminal), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()
        deadline = time.monotonic() + 30      # make may exit before launch.py has finished closing DuckDB
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(group, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""


@dataclass
class PageChecker:
    """Screenshots each step as test-artifacts/newcomer-NN-<name>.png and fails on a Python traceback."""

    page: object
    count: int = 0
    shots: list[Path] = field(default_factory=list)

    def failure_path(self) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        return ARTIFACTS / f"newcomer-{self.count + 1:02d}-FAILED.png"

    def check(self, name: str) -> Path:
        self.count += 1
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"newcomer-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        content = self.page.content()
        assert "Traceback" not in content, f"{name}: the page shows a traceback ({path})"
        assert self.page.locator("[data-testid='stException']").count() == 0, f"{name}: Streamlit exception ({path})"
        return path
