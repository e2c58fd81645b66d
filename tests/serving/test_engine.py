"""External inference engine: the studio against a real OpenAI-compatible server (`transformers serve`) on loopback."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client

from app.label_sections import SAME_VERSION
from bench.harness.engine import EngineProcess
from bench.harness.processes import free_port
from core.serving.engine import Engine, EngineUnavailable
from core.serving.generate import SamplingParams, generate_pair
from core.serving.models import load_model
from storage.db import Database
from tests.support.servers import Server

MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow."}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)
NO_FEEDBACK = [None] * 8 + [[], "", ""]


def test_a_pair_streams_from_the_engine_and_greedy_matches_the_in_process_model(engine, tiny_model_dir):
    remote = Engine(engine.url, engine.model)
    updates = list(remote.stream_pair(MESSAGES, GREEDY, (engine.model, engine.model)))
    *streaming, final = updates
    assert final.finished and final.latency_ms > 0 and final.done_a and final.done_b
    assert len(streaming) >= 3 and all(u.latency_ms is None for u in streaming)
    assert all(after.text_a.startswith(before.text_a) for before, after in zip(updates, updates[1:]))

    model, tokenizer = load_model(tiny_model_dir, dtype="float32")
    local = generate_pair(model, tokenizer, MESSAGES, GREEDY)
    assert (final.text_a, final.text_b) == (local.text_a, local.text_b), "same model, same greedy answer"
    assert (final.new_tokens_a, final.eos_a) == (local.new_tokens_a, local.eos_a)

    status = remote.status()
    assert status.status == "ok" and status.model == engine.model and status.latency_ms > 0
    remote.close()


def test_versions_the_engine_cannot_serve_say_so_and_an_unreachable_engine_is_a_clear_503(engine, tmp_path):
    remote = Engine(engine.url + "/", engine.model)  # a trailing slash is the same server
    with pytest.raises(EngineUnavailable, match="v3 cannot be served.*does not load LoRA adapters") as refused:
        remote.model_for("v3", str(tmp_path / "adapter"))
    assert refused.value.http_status == 503 and "enable-lora" in refused.value.hint
    assert remote.model_for("base", None) == engine.model
    assert remote.status().lora is False

    gone = Engine(f"http://127.0.0.1:{free_port()}/v1", "m")
    with pytest.raises(EngineUnavailable, match="stopped answering|refused") as down:
        list(gone.stream_pair(MESSAGES, GREEDY, ("m", "m")))
    assert down.value.code == "engine_unavailable" and "labels are saved" in down.value.hint
    assert gone.status().status.startswith("unreachable")
    listless = Engine(engine.url)  # transformers serve lists no models for a pinned local directory
    with pytest.raises(EngineUnavailable, match="lists no models"):
        listless.model  # noqa: B018 - the property asks the engine


@pytest.mark.slow
def test_labeling_through_the_engine_survives_an_outage_without_losing_a_vote(tiny_model_dir, tmp_path):
    (tmp_path / "engine").mkdir()
    own_engine = EngineProcess(tiny_model_dir, tmp_path / "engine").start()
    server = Server(tmp_path / "data", free_port()).start(
        "--model", "tiny", "--inference-url", own_engine.url, "--inference-model", own_engine.model
    )
    try:
        health = httpx.get(f"{server.url}/api/health", timeout=10).json()
        assert health["engine"]["status"] == "ok" and health["engine"]["model"] == own_engine.model

        client = Client(server.url + "/label/", verbose=False)
        *_, text_a, text_b, status = client.submit(
            "Hello there", "base", SAME_VERSION, 0.7, 0.9, 8, api_name="/send"
        ).result()
        assert text_a and text_b and "Pick the better answer" in status
        assert "Saved" in client.predict(*NO_FEEDBACK, api_name="/vote_a")[3]

        own_engine.stop()  # the engine goes away between two turns
        with pytest.raises(Exception, match="inference engine at .* (stopped answering|refused)"):
            client.submit("And now?", "base", SAME_VERSION, 0.7, 0.9, 8, api_name="/send").result()

        own_engine.start()  # back on the same port: the open turn gets its pair
        *_, text_a, text_b, status = client.predict("base", SAME_VERSION, 0.7, 0.9, 8, api_name="/regenerate")
        assert text_a and text_b and "Pick the better answer" in status
        assert "Saved" in client.predict(*NO_FEEDBACK, api_name="/vote_b")[3]
        client.close()
    finally:
        server.stop()
        own_engine.stop()
    db = Database.in_data_dir(tmp_path / "data")
    assert [r["outcome"] for r in db.query("SELECT outcome FROM preferences ORDER BY id")] == ["a", "b"]
    assert db.scalar("SELECT count(*) FROM messages WHERE role = 'user'") == 2, "the message sent during the outage"
    db.close()
