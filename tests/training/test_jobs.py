"""Training jobs through the job runner: every algorithm registers a version; cancel, pause/resume,
kill -9, server restart; the CLI; the whole loop on the REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from app.label_sections import SAME_VERSION
from bench.harness.processes import free_port
from core.config import load_settings
from core.labeling.identity import ensure_user
from core.serving.generate import SamplingParams, generate_batch, stream_chat
from core.serving.models import build_tiny_model
from core.studio import Studio
from core.training.request import JobRequest
from storage.db import Database
from tests.support import ROOT
from tests.support.servers import Server, job_status, wait_for
from tests.support.studios import FAST, seed_labels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("jobs") / "data"
    settings = load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={})
    s = Studio(settings, build_tiny_model(data_dir))
    seed_labels(s.db)
    yield s
    s.close()


def run(studio: Studio, algorithm: str, **extra) -> dict:
    admin = ensure_user(studio.db, "ada", "admin", "test")
    request = JobRequest(
        algorithm,
        extra.pop("parent", "base"),
        {**FAST, **extra.pop("hyperparams", {})},
        reward_model=extra.pop("reward_model", None),
    )
    job_id = studio.supervisor.submit(request, admin)
    return studio.supervisor.run_blocking(job_id)


@pytest.mark.parametrize("algorithm", ["sft", "dpo", "kto", "orpo"])
def test_each_algorithm_trains_and_registers_a_version(studio, algorithm):
    job = run(studio, algorithm)
    assert job["status"] == "succeeded", job["error"]
    version = studio.db.query(
        "SELECT name, algorithm, adapter_path, data_hash FROM policies WHERE job_id = ?", [job["id"]]
    )[0]
    assert version["name"].startswith("v") and version["algorithm"] == algorithm
    assert (Path(version["adapter_path"]) / "adapter_config.json").exists() and len(version["data_hash"]) == 64
    names = {r["name"] for r in studio.db.query("SELECT DISTINCT name FROM job_metrics WHERE job_id = ?", [job["id"]])}
    assert "loss" in names


def test_reward_model_then_online_rl_from_it(studio):
    reward = run(studio, "reward")
    assert reward["status"] == "succeeded", reward["error"]
    rm = studio.db.scalar("SELECT name FROM policies WHERE job_id = ?", [reward["id"]])
    assert rm.startswith("rm")
    online = run(studio, "online_rl", reward_model=rm, hyperparams={"max_length": 128, "max_completion_length": 16})
    assert online["status"] == "succeeded", online["error"]
    names = {
        r["name"] for r in studio.db.query("SELECT DISTINCT name FROM job_metrics WHERE job_id = ?", [online["id"]])
    }
    assert {"kl", "reward"} <= names


def test_dpo_from_a_trained_version_keeps_the_parent(studio):
    first = run(studio, "sft")
    parent = studio.db.scalar("SELECT name FROM policies WHERE job_id = ?", [first["id"]])
    child = run(studio, "dpo", parent=parent)
    assert child["status"] == "succeeded", child["error"]
    row = studio.db.query(
        "SELECT p.name FROM policies v JOIN policies p ON p.id = v.parent_id WHERE v.job_id = ?", [child["id"]]
    )
    assert row == [{"name": parent}]
    config = json.loads((Path(child["run_dir"]) / "config.json").read_text())
    assert config["parent_adapter"].endswith("adapter") and f"/{first['id']}/" in config["parent_adapter"]


def test_too_little_data_is_refused_with_a_reason(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path), "model": "tiny"}, env={})
    s = Studio(settings, build_tiny_model(tmp_path))
    seed_labels(s.db, n=3)
    report = s.supervisor.dry_run(JobRequest("dpo", "base", FAST))
    # 3 votes with gold edits = 6 pairs (picked vs rejected, gold vs rejected)
    assert not report.ok and "only 6 usable pairs" in report.reason and "need at least 10" in report.reason
    with pytest.raises(Exception, match="needs at least 10"):
        s.supervisor.submit(JobRequest("dpo", "base", FAST), ensure_user(s.db, "ada", "admin", "t"))
    assert s.db.scalar("SELECT count(*) FROM jobs") == 0
    s.close()


def test_cli_trains_headless(tmp_path):
    data_dir = tmp_path / "data"
    db = Database.in_data_dir(data_dir)
    seed_labels(db)
    db.close()
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "train",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
            "--algorithm",
            "dpo",
            "--set",
            "max_steps=2",
            "--set",
            "max_length=64",
            "--no-report",
        ],  # the report after training is tested in test_learning
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "succeeded: new version v1" in out.stdout and "launch.py report v1" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "train",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
            "--algorithm",
            "dpo",
            "--set",
            "learning_rate=-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "learning_rate" in bad.stderr


# -- through the real server ---------------------------------------------------------------------
@pytest.fixture
def labeled_server(data_dir):
    db = Database.in_data_dir(data_dir)
    seed_labels(db)
    db.close()
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    yield srv
    srv.stop()


def start_job(srv: Server, **hyperparams) -> int:
    reply = httpx.post(
        f"{srv.url}/api/jobs", json={"algorithm": "dpo", "hyperparams": {**FAST, **hyperparams}}, timeout=60
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def test_api_job_becomes_a_version_people_can_chat_with(labeled_server):
    srv = labeled_server
    dry = httpx.post(
        f"{srv.url}/api/jobs", json={"algorithm": "dpo", "hyperparams": FAST, "dry_run": True}, timeout=60
    ).json()["dry_run"]
    # 12 votes, each with a gold edit: 2 pairs each; the evaluation split (20% of prompts) is held out
    assert dry["ok"] and dry["examples"] + dry["skipped"]["held_out"] == 24 and dry["eval_examples"] > 0
    job_id = start_job(srv)
    done = wait_for(lambda: (j := job_status(srv, job_id))["status"] in ("succeeded", "failed") and j)
    assert done["status"] == "succeeded", done["error"]
    names = [p["name"] for p in httpx.get(f"{srv.url}/api/policies", timeout=10).json()["policies"]]
    assert names == ["base", "v1"]
    client = Client(srv.url + "/label/", verbose=False)
    _, _, a, b, _ = client.predict("Hello", "v1", SAME_VERSION, 0.0, 0.9, 6, api_name="/send")
    assert a and a == b  # greedy, same version twice
    client.close()
    metrics = httpx.get(f"{srv.url}/api/jobs/{job_id}", timeout=10).json()
    assert metrics["progress"]["step"] == 2


def test_cancel_pause_resume_and_kill(labeled_server):
    srv = labeled_server
    long = {"max_steps": 400, "save_steps": 2}
    job_id = start_job(srv, **long)
    wait_for(lambda: job_status(srv, job_id)["progress"].get("step", 0) >= 3)
    assert httpx.post(f"{srv.url}/api/jobs/{job_id}/pause", timeout=10).status_code == 200
    paused = wait_for(lambda: (j := job_status(srv, job_id))["status"] == "paused" and j)
    assert paused["progress"]["step"] >= 3
    assert httpx.post(f"{srv.url}/api/jobs/{job_id}/resume", timeout=10).status_code == 200
    resumed_from = paused["progress"]["step"]
    wait_for(
        lambda: (j := job_status(srv, job_id))["status"] == "running" and j["progress"].get("step", 0) > resumed_from
    )
    assert httpx.post(f"{srv.url}/api/jobs/{job_id}/cancel", timeout=10).status_code == 200
    assert wait_for(lambda: job_status(srv, job_id)["status"] == "cancelled")

    killed = start_job(srv, **long)
    pid = wait_for(lambda: (j := job_status(srv, killed))["progress"].get("step", 0) >= 1 and j["pid"])
    os.killpg(pid, signal.SIGKILL)
    failed = wait_for(lambda: (j := job_status(srv, killed))["status"] == "failed" and j)
    assert "signal 9" in failed["error"]
    names = [p["name"] for p in httpx.get(f"{srv.url}/api/policies", timeout=10).json()["policies"]]
    assert names == ["base"]  # nothing registered from a cancelled or killed job


def test_a_cancel_the_trainer_does_not_answer_in_time_kills_it_and_the_job_reads_cancelled(studio, monkeypatch):
    """A child still loading (it looks for requests only between steps) is killed after the grace time: the job
    the user cancelled says "cancelled", not "failed: killed by signal 9"."""
    import core.training.jobs

    monkeypatch.setattr(core.training.jobs, "CANCEL_GRACE_S", 0.2)
    admin = ensure_user(studio.db, "ada", "admin", "test")
    job_id = studio.supervisor.submit(JobRequest("dpo", "base", {**FAST, "max_steps": 400}), admin)

    def status() -> str:
        studio.supervisor.tick()
        return studio.supervisor.job(job_id)["status"]

    assert status() == "running"
    studio.supervisor.cancel(job_id)  # within a second of the start: the child is still importing torch
    assert wait_for(lambda: status() != "running", timeout=60)
    job = studio.supervisor.job(job_id)
    assert job["status"] == "cancelled" and job["error"] is None
    assert job["pid"] is not None and not Path(f"/proc/{job['pid']}").exists()


def test_server_restart_reattaches_a_running_job(labeled_server):
    srv = labeled_server
    job_id = start_job(srv, max_steps=12, save_steps=4)
    wait_for(lambda: job_status(srv, job_id)["progress"].get("step", 0) >= 2)
    srv.process.send_signal(signal.SIGKILL)  # the server dies; the trainer (own session) goes on
    srv.process.wait()
    srv.start("--model", "tiny")
    assert job_status(srv, job_id)["status"] in ("running", "succeeded")
    done = wait_for(lambda: (j := job_status(srv, job_id))["status"] in ("succeeded", "failed") and j)
    assert done["status"] == "succeeded", done["error"]
    assert [p["name"] for p in httpx.get(f"{srv.url}/api/policies", timeout=10).json()["policies"]] == ["base", "v1"]


def _mount_tmpfs(path: Path, size_bytes: int) -> bool:
    size_kb = max(64, size_bytes // 1024 + 1)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_checkpoint_fails_clearly_and_resumes_from_the_last_complete_one(labeled_server, tmp_path):
    """The checkpoint dir sits on a tmpfs that holds one checkpoint but not two: the second save fails with
    ENOSPC. The job says the disk is full (not a bare traceback), the half-written checkpoint is gone, and once
    space is freed the job resumes from the complete one."""
    if os.geteuid() != 0 or subprocess.run(["which", "mount"], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    srv = labeled_server
    job_id = start_job(srv, max_steps=400, save_steps=100_000)
    wait_for(lambda: job_status(srv, job_id)["progress"].get("step", 0) >= 2)
    httpx.post(f"{srv.url}/api/jobs/{job_id}/pause", timeout=10)
    paused = wait_for(lambda: (j := job_status(srv, job_id))["status"] == "paused" and j)
    checkpoints = Path(paused["run_dir"]) / "checkpoints"
    first = next(checkpoints.glob("checkpoint-*"))
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    saved = tmp_path / "saved"
    saved.mkdir()
    os.rename(first, saved / first.name)
    if not _mount_tmpfs(checkpoints, int(size * 1.5)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["cp", "-a", str(saved / first.name), str(checkpoints)], check=True)
        httpx.post(f"{srv.url}/api/jobs/{job_id}/resume", timeout=10)
        step = paused["progress"]["step"]
        wait_for(lambda: (j := job_status(srv, job_id))["status"] == "running" and j["progress"].get("step", 0) > step)
        httpx.post(f"{srv.url}/api/jobs/{job_id}/pause", timeout=10)  # the save that does not fit
        failed = wait_for(lambda: (j := job_status(srv, job_id))["status"] == "failed" and j)
        assert "disk is full" in failed["error"] and f"restarts from {first.name}" in failed["error"], failed["error"]
        assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [first.name]  # the partial one is gone

        subprocess.run(["mount", "-o", "remount,size=200m", str(checkpoints)], check=True)  # space freed
        assert httpx.post(f"{srv.url}/api/jobs/{job_id}/resume", timeout=10).status_code == 200
        wait_for(lambda: (j := job_status(srv, job_id))["status"] == "running" and j["progress"].get("step", 0) > step)
        assert httpx.post(f"{srv.url}/api/jobs/{job_id}/cancel", timeout=10).status_code == 200
        assert wait_for(lambda: job_status(srv, job_id)["status"] == "cancelled")
    finally:
        subprocess.run(["umount", "-l", str(checkpoints)], capture_output=True)


def test_evaluations_wait_while_a_job_trains_on_the_cpu_and_the_chat_does_not(studio):
    """On a machine without a GPU an evaluation's answers (reports, safety runs) wait while a job trains; a chat
    answer does not (core.compare.worker.CpuTurns)."""
    if studio.hardware.cuda_available:
        pytest.skip("with a GPU, evaluations and training do not share the CPU")
    admin = ensure_user(studio.db, "ada", "admin", "test")
    job_id = studio.supervisor.submit(JobRequest("dpo", "base", {**FAST, "max_steps": 400, "save_steps": 400}), admin)
    model, tokenizer = studio.model()
    conversations = [[{"role": "user", "content": "Name a colour."}]] * 2
    greedy = SamplingParams(0.0, 1.0, 6)

    def status() -> str:
        studio.supervisor.tick()  # what the server's watcher does every second: start, follow, finish
        return studio.supervisor.job(job_id)["status"]

    try:
        assert status() == "running"
        assert studio.training_on_cpu() == f"job {job_id} is training on this CPU"
        result: dict = {}
        evaluation = threading.Thread(
            target=lambda: result.update(answers=generate_batch(model, tokenizer, conversations, greedy, seed=0))
        )
        evaluation.start()
        evaluation.join(3)
        assert evaluation.is_alive() and not result  # held while the job trains
        chat = "".join(stream_chat(model, tokenizer, conversations[0], greedy))
        assert chat  # a person's answer runs at once
    finally:
        studio.supervisor.cancel(job_id)
    assert wait_for(lambda: status() == "cancelled")
    evaluation.join(60)
    assert result["answers"] == generate_batch(model, tokenizer, conversations, greedy, seed=0)  # as if never held
