"""Background evaluations on a machine without a GPU take turns and wait while a job trains (core.compare.worker
CpuTurns): run together on 2 cores they oversubscribe the cores and the job the user started crawls."""

from __future__ import annotations

import threading
import time

import pytest

from core.compare.worker import CpuTurns, ReportWorker
from core.errors import Conflict


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


class Recorder:
    """An evaluation that reports progress a few times and records when it ran."""

    def __init__(self, steps: int = 5, step_s: float = 0.05) -> None:
        self.steps, self.step_s = steps, step_s
        self.spans: list[tuple[str, float, float]] = []
        self.done = threading.Event()

    def __call__(self, studio, version, against, user=None, progress=None, **options) -> None:
        started = time.monotonic()
        for i in range(self.steps):
            progress(i / self.steps, f"step {i}")
            time.sleep(self.step_s)
        self.spans.append((version, started, time.monotonic()))
        self.done.set()


def test_evaluations_take_turns_one_at_a_time():
    turns = CpuTurns(lambda: None)
    compute = Recorder()
    reports = ReportWorker(None, compute=compute, paired=False, turns=turns)  # type: ignore[arg-type]
    safety = ReportWorker(None, compute=compute, name="safety evaluation", paired=False, turns=turns)  # type: ignore[arg-type]
    reports.request("v1")
    safety.request("v1")
    safety.request("base")
    wait_until(lambda: len(compute.spans) == 3)
    spans = sorted(compute.spans, key=lambda s: s[1])
    assert all(end <= next_start for (_, _, end), (_, next_start, _) in zip(spans, spans[1:]))  # never overlapped


def test_an_evaluation_pauses_while_a_job_trains_says_why_and_can_be_cancelled():
    training = {"why": None}
    turns = CpuTurns(lambda: training["why"])
    compute = Recorder(steps=20)
    worker = ReportWorker(None, compute=compute, paired=False, turns=turns)  # type: ignore[arg-type]
    training["why"] = "job 7 is training on this CPU"
    worker.request("v1")
    time.sleep(2 * CpuTurns.RECHECK_S)
    state = worker.state("v1")
    assert state["status"] == "computing" and state["progress"] == 0.0
    assert state["message"] == "paused while job 7 is training on this CPU: it goes on when the job ends"
    assert not compute.spans

    training["why"] = None  # the job ended: the evaluation goes on by itself
    assert compute.done.wait(10) and worker.state("v1")["status"] == "idle"

    compute.done.clear()
    compute.steps = 400  # 20 s: long enough to be paused by the next job (seen within CpuTurns.RECHECK_S)
    worker.request("v2")
    wait_until(lambda: worker.state("v2")["progress"] > 0)
    training["why"] = "job 8 is training on this CPU"
    wait_until(lambda: worker.state("v2")["message"].startswith("paused while job 8"))
    assert worker.cancel("v2")
    failed = wait_until(lambda: (s := worker.state("v2"))["status"] == "failed" and s)
    assert failed["error"]["code"] == "cancelled" and not compute.done.is_set()
    worker.stop()


def test_without_turns_evaluations_never_wait():
    compute = Recorder(steps=2)
    worker = ReportWorker(None, compute=compute, paired=False)  # type: ignore[arg-type]
    worker.request("v1")
    assert compute.done.wait(10)


def test_a_report_waiting_for_its_turn_goes_before_older_safety_runs():
    turns = CpuTurns(lambda: None)
    compute = Recorder(steps=10, step_s=0.1)
    reports = ReportWorker(None, compute=compute, paired=False, turns=turns)  # type: ignore[arg-type]
    safety = ReportWorker(None, compute=compute, name="safety", paired=False, turns=turns, priority=1)  # type: ignore[arg-type]
    other = ReportWorker(None, compute=compute, name="safety 2", paired=False, turns=turns, priority=1)  # type: ignore[arg-type]
    safety.request("v1")  # holds the turn for ~1 s
    wait_until(lambda: safety.state("v1")["progress"] > 0)
    other.request("v2")  # the older safety run waits...
    time.sleep(0.2)
    reports.request("v3")  # ...and the new version's report, asked later, goes first
    wait_until(lambda: len(compute.spans) == 3)
    assert [version for version, _, _ in sorted(compute.spans, key=lambda s: s[1])] == ["v1", "v3", "v2"]


def test_a_request_with_other_settings_replaces_a_queued_run_and_is_refused_while_one_computes():
    release, ran = threading.Event(), []

    def compute(studio, version, against, user=None, progress=None, size=5):
        progress(0.0, "started")
        release.wait(10)
        ran.append((version, user, size))

    worker = ReportWorker(None, compute=compute, paired=False)  # type: ignore[arg-type]
    assert worker.request("v1") == "queued"
    wait_until(lambda: worker.state("v1")["status"] == "computing")
    assert worker.request("v1", user="admin") == "computing"  # no settings: joins the run
    assert worker.request("v1", size=5) == "computing"  # the compute function's default is no other setting
    with pytest.raises(Conflict) as refused:
        worker.request("v1", user="admin", size=12)
    assert refused.value.http_status == 409 and "already computing with other settings" in refused.value.message

    assert worker.request("v2", user="a", size=1) == "queued"  # waits behind v1
    assert worker.request("v2", user="b", size=2) == "queued"  # not started: the newest ask wins
    assert worker.request("v2") == "queued"  # a plain request keeps it
    release.set()
    wait_until(lambda: len(ran) == 2)
    assert ran == [("v1", None, 5), ("v2", "b", 2)]
    assert worker.state("v1") == {"status": "idle"} and worker.state("v2") == {"status": "idle"}
