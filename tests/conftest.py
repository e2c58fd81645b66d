"""Fixtures: real data dirs, a real server process on a free loopback port, a real browser.

The helpers behind them live in tests/support/ and bench/harness/ (test modules import from there, never
from this file)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.engine import EngineProcess
from bench.harness.processes import free_port
from storage.db import Database
from tests.support.browser import browser_page, chromium_browser
from tests.support.servers import Server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker, and the servers and training children it
    # starts, gets one torch thread, so two workers on two cores do not fight over both (measured: the suite's
    # parallel part 30.4 -> 27.3 min on 2 cores). Set before anything imports torch.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "STUDIO_TRAIN_THREADS"):
        os.environ.setdefault(_name, "1")


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (no browser download); closed after the test."""
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def page() -> Iterator[Any]:
    """A page in a fresh headless Chromium, closed after the test."""
    with browser_page() as tab:
        yield tab


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama, built once per test session."""
    from core.serving.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-cache"))


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One `transformers serve` of the tiny model for the whole session (engine and judge tests share it)."""
    process = EngineProcess(tiny_model_dir, tmp_path_factory.mktemp("engine")).start()
    yield process
    process.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db(data_dir: Path) -> Iterator[Database]:
    """An empty studio database (every migration applied) in a fresh data dir."""
    database = Database.in_data_dir(data_dir)
    yield database
    database.close()


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    """A running studio on the tiny model with a fresh data dir."""
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One studio for the whole session, for tests that only read or add rows of their own and tolerate other
    tests' rows (their own conversations, votes with unique prompts): each one saves a server start-up."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data", free_port()).start("--model", "tiny")
    yield srv
    srv.stop()
