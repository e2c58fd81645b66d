"""Hugging Face Space packaging: front matter, and the Dockerfile's command run as the Space runs it."""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest

from bench.harness.processes import free_port, launch
from tests.support import ROOT


def test_readme_front_matter_declares_a_docker_space_on_7860():
    front = (ROOT / "README.md").read_text().split("---")[1]
    assert re.search(r"^sdk: docker$", front, re.M) and re.search(r"^app_port: 7860$", front, re.M)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_dockerfile_command_serves_and_warns_about_ephemeral_storage(tmp_path):
    """No Docker engine here: run the image's CMD with the image's env, as a Space without /data."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert re.search(r"STUDIO_PORT=7860", dockerfile) and re.search(r"STUDIO_HOST=0\.0\.0\.0", dockerfile)
    port = free_port()
    env = {
        **os.environ,
        "SPACE_ID": "someone/rlhf-studio",
        "STUDIO_PORT": str(port),
        "STUDIO_HOST": "127.0.0.1",
        "STUDIO_MODEL": "tiny",
        "STUDIO_DATA_DIR": str(tmp_path / "data"),
    }
    url = f"http://127.0.0.1:{port}/api/health"
    proc = launch(cmd, url, tmp_path / "space.log", name="the Space command", timeout=120, cwd=ROOT, env=env)
    try:
        health = httpx.get(url, timeout=2).json()
        assert health is not None and health["storage_ephemeral"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_a_space_with_a_backup_keeps_its_votes_across_a_restart_on_an_empty_disk(tmp_path):
    """A free Space: STUDIO_BACKUP_DIR stands in for STUDIO_BACKUP_REPO (tests/share/test_backup.py covers the Hub). A
    clean shutdown takes a last backup; the restarted Space finds an empty disk, restores, then serves."""
    import shutil

    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "SPACE_ID": "someone/rlhf-studio",
        "STUDIO_PORT": str(port),
        "STUDIO_HOST": "127.0.0.1",
        "STUDIO_MODEL": "tiny",
        "STUDIO_DATA_DIR": str(data),
        "STUDIO_BACKUP_DIR": str(tmp_path / "bucket"),
    }
    url = f"http://127.0.0.1:{port}"
    proc = launch(
        cmd, url + "/api/health", tmp_path / "space.log", name="the Space command", timeout=120, cwd=ROOT, env=env
    )
    try:
        vote = {"prompt": "kept across restarts?", "answer_a": "yes", "answer_b": "no", "outcome": "a"}
        assert httpx.post(url + "/api/votes", json=vote, timeout=10).status_code == 201
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    shutil.rmtree(data)
    proc = launch(
        cmd, url + "/api/health", tmp_path / "space2.log", name="the Space command", timeout=120, cwd=ROOT, env=env
    )
    try:
        assert "restored 1 vote, 0 versions from" in (tmp_path / "space2.log").read_text()
        health = httpx.get(url + "/api/health", timeout=10).json()
        assert health["storage_ephemeral"] is True and health["backup"]["target"] == str(tmp_path / "bucket")
    finally:
        proc.terminate()
        proc.wait(timeout=120)
