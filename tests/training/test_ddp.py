"""Training past one process, for real: a DDP job of 2 CPU processes (gloo) through the job runner."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from core.config import load_settings
from core.errors import ValidationError
from core.labeling.identity import ensure_user
from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
from core.serving.models import build_tiny_model
from core.studio import Studio
from core.training.distributed import LaunchConfig
from core.training.request import JobRequest

pytestmark = pytest.mark.slow
DDP = LaunchConfig(mode="ddp", num_processes=2)
CURVE = {"max_steps": 6, "logging_steps": 1, "max_length": 64}
LOSS_TOLERANCE = 0.02  # largest difference between the two loss curves, step by step (DPO loss starts at 0.693)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ddp") / "data"
    settings = load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={})
    s = Studio(settings, build_tiny_model(data_dir))
    ada = ensure_user(s.db, "ada", "admin", "test")
    for i in range(40):
        conv = new_conversation(s.db, ada, 1)
        turn = add_user_message(s.db, ada, conv, f"Question number {i}: what should I know?")
        a, b = save_pair(
            s.db,
            conv,
            turn,
            None,
            CandidateIn(f"A short, clear answer to question {i}.", 1),
            CandidateIn(f"well umm {i} maybe, I do not really know, sorry", 1),
            None,
        )
        record_vote(s.db, ada, Vote(a, b, "a"))
    yield s
    s.close()


def loss_curve(studio: Studio, job_id: int) -> dict[int, float]:
    return {r["step"]: r["value"] for r in studio.supervisor.metrics([job_id]) if r["name"] == "loss"}


def versions(studio: Studio) -> list[str]:
    return [r["name"] for r in studio.db.query("SELECT name FROM policies WHERE deleted_at IS NULL ORDER BY id")]


def test_a_ddp_job_of_two_cpu_processes_follows_the_one_process_loss_curve(studio):
    admin = ensure_user(studio.db, "ada", "admin", "test")
    one = JobRequest("dpo", "base", dict(CURVE))
    two = JobRequest("dpo", "base", dict(CURVE), launch=DDP)
    assert one.plan(32).values["gradient_accumulation_steps"] == 2 * two.plan(32).values["gradient_accumulation_steps"]

    single_id = studio.supervisor.submit(one, admin)
    assert studio.supervisor.run_blocking(single_id)["status"] == "succeeded"
    before = versions(studio)
    ddp_id = studio.supervisor.submit(two, admin)
    run_dir = Path(studio.supervisor.job(ddp_id)["run_dir"])
    config = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 2
    result = studio.supervisor.run_blocking(ddp_id)
    assert result["status"] == "succeeded", studio.supervisor.log_tail(ddp_id)

    single, ddp = loss_curve(studio, single_id), loss_curve(studio, ddp_id)
    assert sorted(single) == sorted(ddp) == list(range(1, 7))
    worst = max(abs(single[step] - ddp[step]) for step in single)
    print(f"largest loss difference, 1 vs 2 processes: {worst:.5f}")
    assert worst <= LOSS_TOLERANCE, (single, ddp)
    after = versions(studio)
    assert len(after) == len(before) + 1, "exactly one version per job, however many processes trained it"


def test_a_ddp_job_pauses_resumes_and_shows_live_curves(studio):
    admin = ensure_user(studio.db, "ada", "admin", "test")
    supervisor = studio.supervisor
    job_id = supervisor.submit(
        JobRequest(
            "dpo", "base", {"max_steps": 400, "save_steps": 2, "logging_steps": 1, "max_length": 64}, launch=DDP
        ),
        admin,
    )
    supervisor.start()
    try:

        def wait(predicate, timeout=300.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                job = supervisor.job(job_id)
                job["progress"] = supervisor.progress(job)
                if predicate(job):
                    return job
                time.sleep(0.5)
            raise AssertionError(f"timed out; job {supervisor.job(job_id)}\n{supervisor.log_tail(job_id)}")

        wait(lambda j: j["progress"].get("step", 0) >= 3)
        wait(lambda j: j["status"] == "running" and len(loss_curve(studio, job_id)) >= 2)  # the curve grows live
        supervisor.pause(job_id)
        paused = wait(lambda j: j["status"] == "paused")
        resumed_from = paused["progress"]["step"]
        supervisor.resume(job_id)
        wait(lambda j: j["status"] == "running" and j["progress"].get("step", 0) > resumed_from)
        supervisor.cancel(job_id)
        wait(lambda j: j["status"] == "cancelled")
    finally:
        if supervisor.job(job_id)["status"] == "running":  # a failed step above: leave no trainer running
            supervisor.cancel(job_id)
            deadline = time.monotonic() + 60
            while supervisor.job(job_id)["status"] == "running" and time.monotonic() < deadline:
                time.sleep(0.5)
        supervisor.stop()


def test_launch_modes_are_checked_before_anything_runs():
    with pytest.raises(ValidationError, match="IP address of machine 0"):
        LaunchConfig(mode="ddp", num_processes=1, num_machines=2).validate()
    with pytest.raises(ValidationError, match="shards the model over GPUs"):
        LaunchConfig(mode="fsdp", num_processes=2).validate(cuda=False)
    with pytest.raises(ValidationError, match="single-process mode"):
        LaunchConfig(mode="single", num_processes=2).validate()
    with pytest.raises(ValidationError, match="Unknown launch setting"):
        LaunchConfig.from_dict({"gpus": 2})
    nodes = LaunchConfig(mode="ddp", num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.2")
    config = nodes.validate().accelerate_config(cuda=True)
    assert (config["num_processes"], config["num_machines"], config["machine_rank"]) == (8, 2, 1)
    assert config["main_process_ip"] == "10.0.0.2" and config["main_process_port"] == 29500
    zero3 = LaunchConfig(mode="deepspeed_zero3", num_processes=2).accelerate_config(cuda=True)
    assert zero3["distributed_type"] == "DEEPSPEED" and zero3["deepspeed_config"]["zero_stage"] == 3
