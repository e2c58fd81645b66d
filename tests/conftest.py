"""Shared fixtures: real data dirs, a real server process on a free loopback port."""
from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@functools.cache
def hashed(password: str) -> str:
    """A users-file hash of ``password`` (600k PBKDF2 rounds: computed once per password per test run)."""
    from core.labeling.identity import hash_password

    return hash_password(password)


def users_file(path: Path, *accounts: str) -> Path:
    """Write a team users file from ``name:password:role`` entries, with the passwords hashed as required."""
    lines = []
    for entry in accounts:
        name, password, role = entry.split(":")
        lines.append(f"{name}:{hashed(password)}:{role}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def chromium():
    """Debian's Chromium driven by Playwright (no browser download); closed after the test."""
    import shutil

    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, timeout: float, name: str, log: Callable[[], str],
                  stop: Callable[[], None]) -> None:
    """Poll ``url`` until it answers 200; a process that exits or a timeout raises with the log's tail.

    The one wait loop of every process the tests start (the studio, `make run`, the inference engine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop()
    raise RuntimeError(f"{name} did not answer within {timeout}s:\n{log()}")


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

    def start(self, *extra: str, timeout: float = 120.0) -> "Server":
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "--data-dir", str(self.data_dir),
             "--port", str(self.port), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_until_up(self.process, f"{self.url}/api/health", timeout, "server", self.log, self.stop)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""


@dataclass
class EngineProcess:
    """`transformers serve` (an OpenAI-compatible inference server that ships with transformers) on loopback,
    pinned to one local model: the external engine the studio's --inference-url talks to in tests."""

    model_dir: Path
    work_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return str(self.model_dir)

    def start(self, timeout: float = 120.0) -> "EngineProcess":
        self.port = self.port or free_port()
        cache = self.work_dir / "hf-cache"  # it lists cached Hub models; an empty cache lists none
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        log = open(self.work_dir / f"engine-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "transformers"), "serve", self.model, "--host", "127.0.0.1",
             "--port", str(self.port), "--dtype", "float32"],
            cwd=self.work_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until_up(self.process, f"http://127.0.0.1:{self.port}/health", timeout, "transformers serve", self.log,
                      self.stop)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        path = self.work_dir / f"engine-{self.port}.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama, built once per test session."""
    from core.serving.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-cache"))


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One `transformers serve` of the tiny model for the whole session (engine and judge tests share it)."""
    process = EngineProcess(tiny_model_dir, tmp_path_factory.mktemp("engine")).start()
    yield process
    process.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    """A running studio on the tiny model with a fresh data dir."""
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One studio for a module's tests that only read or add independent rows (saves start-ups)."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data", free_port()).start("--model", "tiny")
    yield srv
    srv.stop()
