"""The whole loop on the real default model (SmolLM2-135M-Instruct): label through the APIs, train DPO,
chat with the new version."""

import httpx
import pytest
from gradio_client import Client

from app.label_sections import SAME_VERSION
from bench.harness.processes import free_port
from tests.support.servers import Server, job_status, wait_for

pytestmark = pytest.mark.slow
NO_FEEDBACK = [None] * 8 + [[], "", ""]


def test_labels_to_dpo_version_on_the_default_model(data_dir):
    srv = Server(data_dir, free_port()).start(timeout=300)  # default model: converted on first start
    try:
        client = Client(srv.url + "/label/", verbose=False)
        for question in ("What is the capital of France?", "Name a primary colour."):
            client.predict(api_name="/new_chat")
            _, _, a, b, _ = client.predict(question, "base", SAME_VERSION, 0.7, 0.9, 12, api_name="/send")
            assert a and b
            assert "Saved" in client.predict(*NO_FEEDBACK, api_name="/vote_a")[3]
        for i in range(10):
            body = {
                "prompt": f"Give me fact number {i} about the sea.",
                "answer_a": f"The sea covers most of the planet (fact {i}).",
                "answer_b": "I don't know.",
                "outcome": "a",
            }
            assert httpx.post(srv.url + "/api/votes", json=body, timeout=10).status_code == 201
        reply = httpx.post(
            srv.url + "/api/jobs",
            json={"algorithm": "dpo", "hyperparams": {"max_steps": 2, "logging_steps": 1, "max_length": 128}},
            timeout=60,
        )
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        done = wait_for(lambda: (j := job_status(srv, job_id))["status"] in ("succeeded", "failed") and j, timeout=900)
        assert done["status"] == "succeeded", done["error"]
        client.predict(api_name="/new_chat")
        _, _, a, b, _ = client.predict("What is the capital of France?", "v1", "base", 0.0, 0.9, 16, api_name="/send")
        assert a.strip() and b.strip()
        assert "Paris" in b  # the base still answers correctly next to the new version
        client.close()
    finally:
        srv.stop()
