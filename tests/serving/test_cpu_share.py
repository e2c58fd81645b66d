"""A training job lends one core to the chat only while people chat (measured: holding it back all the time
made DPO steps 1.7x slower on 2 cores; sharing cores unmanaged made chat 30x slower)."""

from __future__ import annotations

import os
import time

import psutil
import pytest
import torch

from core.training.callbacks import CpuShareCallback
from core.training.distributed import trainer_threads
from core.training.rundir import CHAT_ACTIVE_WINDOW_S, chat_active, mark_chat_active


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    monkeypatch.delenv("STUDIO_TRAIN_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_trainer_uses_every_core_unless_the_chat_is_active():
    cores = psutil.cpu_count(logical=True)
    assert trainer_threads() == cores
    assert trainer_threads(chat_active=True) == max(1, cores - 1)


def test_configured_thread_count_wins(monkeypatch):
    monkeypatch.setenv("STUDIO_TRAIN_THREADS", "3")
    assert trainer_threads() == trainer_threads(chat_active=True) == 3


def test_callback_lends_a_core_between_steps_while_the_chat_is_active(tmp_path):
    if psutil.cpu_count(logical=True) < 2:
        pytest.skip("nothing to lend on one core")
    runs = tmp_path / "runs"
    (runs / "7").mkdir(parents=True)
    callback = CpuShareCallback(runs / "7")
    callback.on_step_begin(None, None, None)
    assert torch.get_num_threads() == psutil.cpu_count(logical=True)

    mark_chat_active(runs)  # the server generates an answer
    assert chat_active(runs)
    callback.on_step_begin(None, None, None)
    assert torch.get_num_threads() == psutil.cpu_count(logical=True) - 1

    stale = time.time() - CHAT_ACTIVE_WINDOW_S - 1  # nobody chatted for a while: the core comes back
    os.utime(runs / "chat_active", (stale, stale))
    assert not chat_active(runs)
    callback.on_substep_end(None, None, None)
    assert torch.get_num_threads() == psutil.cpu_count(logical=True)
