"""The one-process server, as a user starts it: console, labeling app and REST API on one port."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from gradio_client import Client

from app.label_sections import SAME_VERSION
from storage.db import Database
from tests.support import ROOT
from tests.support.servers import Server


def test_console_label_app_and_api_answer_on_one_port(shared_server: Server):
    server = shared_server
    console = httpx.get(server.url + "/", timeout=10)
    assert console.status_code == 200 and "streamlit" in console.text.lower()
    label = httpx.get(server.url + "/label/", timeout=10)
    assert label.status_code == 200 and "gradio" in label.text.lower()
    health = httpx.get(server.url + "/api/health", timeout=10).json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["schema_version"] >= 1
    assert health["data_dir"] == str(server.data_dir.resolve())


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_feedback_is_committed_and_survives_a_restart(server: Server):
    body = {"prompt": "What is 2+2?", "response": "4", "score": 0.9, "run_id": "r1", "notes": "short"}
    reply = httpx.post(server.url + "/api/feedback", json=body, timeout=10)
    assert reply.status_code == 201, reply.text
    row_id = reply.json()["id"]
    server.stop()
    db = Database.in_data_dir(server.data_dir)  # a fresh connection, after the server let go of the file
    row = db.query("SELECT prompt, response, score, run_id, notes, source FROM feedback WHERE id = ?", [row_id])
    db.close()
    assert row == [
        {"prompt": "What is 2+2?", "response": "4", "score": 0.9, "run_id": "r1", "notes": "short", "source": "api"}
    ]
    server.start("--model", "tiny")
    assert httpx.get(server.url + "/api/health", timeout=10).status_code == 200


BAD_FEEDBACK = [
    ({"prompt": "p", "response": "r"}, 422, "invalid_input"),  # missing score
    ({"prompt": "p", "response": "r", "score": 1.5}, 422, "invalid_input"),  # out of range
    ({"prompt": "p", "response": "r", "score": "high"}, 422, "invalid_input"),  # wrong type
    ({"prompt": "  ", "response": "r", "score": 0.5}, 422, "invalid_input"),  # empty prompt
    ({"prompt": "p", "response": "r", "score": 0.5, "extra": 1}, 422, "invalid_input"),
    ({"prompt": "p" * 2_000_000, "response": "r", "score": 0.5}, 413, "payload_too_large"),
    (["not", "an", "object"], 422, "invalid_input"),
]


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_bad_feedback_gets_a_4xx_with_a_code_and_stores_nothing(server: Server):
    for body, status, code in BAD_FEEDBACK:
        reply = httpx.post(server.url + "/api/feedback", json=body, timeout=30)
        assert reply.status_code == status, (body if len(str(body)) < 200 else "huge", reply.text)
        error = reply.json()["error"]
        assert error["code"] == code and error["message"]
    assert httpx.get(server.url + "/api/health", timeout=10).status_code == 200  # still healthy
    server.stop()
    db = Database.in_data_dir(server.data_dir)
    assert db.scalar("SELECT count(*) FROM feedback") == 0
    db.close()


def test_malformed_json_is_a_4xx_not_a_500(shared_server: Server):
    server = shared_server
    reply = httpx.post(
        server.url + "/api/feedback", content=b"{not json", timeout=10, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"
    assert httpx.get(server.url + "/api/nope", timeout=10).json()["error"]["code"] == "not_found"


def test_policies_lists_the_base_model(shared_server: Server):
    server = shared_server
    policies = httpx.get(server.url + "/api/policies", timeout=10).json()["policies"]
    assert [(p["name"], p["base_model"], p["parent"]) for p in policies] == [("base", "tiny", None)]


def test_chat_streams_tokens_through_the_gradio_queue(shared_server: Server):
    """The Gradio queue runs inside the one process (its lifespan is entered by ours)."""
    client = Client(shared_server.url + "/label/", verbose=False)
    job = client.submit("Hello there", "base", SAME_VERSION, 0.0, 0.9, 12, api_name="/send")
    answers_a = [update[2] for update in job if isinstance(update[2], str)]
    final = job.result()
    client.close()
    # the tiny random model babbles, but every streamed update must extend the previous one
    assert len(answers_a) >= 3 and final[2] == answers_a[-1] and len(final[2]) > len(answers_a[0])
    assert all(later.startswith(earlier) for earlier, later in zip(answers_a, answers_a[1:]))


def test_bad_settings_exit_with_a_clear_message(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--port", "99999", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "config_invalid" in out.stderr and "between 1 and 65535" in out.stderr


def test_help_documents_the_serving_flags():
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    for flag in ("--host", "--port", "--data-dir", "--model"):
        assert flag in out.stdout
