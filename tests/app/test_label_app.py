"""The labeling app through the real server: streaming pair, vote, undo, queue; REST votes."""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from app.label_sections import SAME_VERSION
from bench.harness.processes import free_port
from core.labeling import queue as pq
from core.labeling.identity import ensure_user
from storage.db import Database
from tests.support.servers import Server
from tests.support.studios import make_random_adapter, users_file

NO_FEEDBACK = [None] * 8 + [[], "", ""]  # 6 ratings, 2 thumbs, flags, note, gold


def send(text, max_new_tokens, policy="base", other=SAME_VERSION, temperature=0.7):
    """Arguments of the /send endpoint: message, policy, compare-with, temperature, top-p, max tokens."""
    return text, policy, other, temperature, 0.9, max_new_tokens


def feedback(helpfulness_a=None, thumbs_b=None, flags=(), note="", gold=""):
    values = list(NO_FEEDBACK)
    values[0], values[7], values[8], values[9], values[10] = helpfulness_a, thumbs_b, list(flags), note, gold
    return values


@pytest.fixture
def shared_label_server(shared_server: Server) -> Server:
    """The session's shared studio (conftest): these tests chat in conversations of their own and tolerate other
    tests' rows, so they need no server of their own."""
    return shared_server


@pytest.fixture
def queued_server(data_dir):
    db = Database.in_data_dir(data_dir)
    admin = ensure_user(db, "local", "admin", "local")
    qid = pq.create_queue(db, admin, "team-queue", overlap=1, daily_goal=5)
    pq.import_prompts(db, admin, qid, ["What is 2+2?", "Name a colour."], "test")
    db.close()
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    yield srv
    srv.stop()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_pair_streams_then_vote_is_committed_with_ratings(queued_server: Server):
    client = Client(queued_server.url + "/label/", verbose=False)
    job = client.submit(*send("Tell me a joke", 10), api_name="/send")
    updates = list(job)
    message_box, chat, text_a, text_b, status = job.result()
    assert len(updates) >= 3 and text_a and text_b and updates[0][0] == ""  # message box cleared at once
    assert "Pick the better answer" in status
    first_status = status
    chat, a, b, status, *_ = client.predict(*feedback("5", "👎", ["off_topic"], "funny"), api_name="/vote_a")
    assert "Saved" in status and "A is better" in status
    assert chat[-1]["role"] == "assistant"
    _, _, _, status = client.predict(api_name="/undo")[:4]
    assert "undone" in status
    chat, _, _, status, *_ = client.predict(*feedback(gold="A better answer."), api_name="/vote_both_bad")
    assert "Saved" in status and chat[-1]["content"][0]["text"] == "A better answer."
    client.close()
    queued_server.stop()
    db = Database.in_data_dir(queued_server.data_dir)
    votes = db.query("SELECT outcome, note, flags, retracted_at IS NOT NULL AS undone FROM preferences ORDER BY id")
    assert votes == [
        {"outcome": "a", "note": "funny", "flags": ["off_topic"], "undone": True},
        {"outcome": "both_bad", "note": None, "flags": [], "undone": False},
    ]
    assert db.query("SELECT aspect, score FROM ratings") == [{"aspect": "helpfulness", "score": 5.0}]
    assert db.query("SELECT up FROM thumbs") == [{"up": False}]
    assert db.scalar("SELECT text FROM gold_answers") == "A better answer."
    sampling = db.query("SELECT sampling->>'max_new_tokens' AS n, latency_ms > 0 AS timed FROM candidates")
    assert sampling == [{"n": "10", "timed": True}] * 2
    # whether each answer ended by itself or hit the 10-token limit is stored, and the labeler was told
    cut = db.query("SELECT cut, new_tokens FROM candidates ORDER BY id")
    assert all(row["cut"] is not None and (not row["cut"] or row["new_tokens"] == 10) for row in cut), cut
    assert ("cut at the length limit (10 tokens)" in first_status) == any(row["cut"] for row in cut)
    db.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_labelers_see_their_contributions_and_rewards_in_the_label_app(queued_server: Server):
    client = Client(queued_server.url + "/label/", verbose=False)
    assert "**0 contributions**" in client.predict(api_name="/my_rewards")
    client.submit(*send("Hi", 4), api_name="/send").result()
    assert "Saved" in client.predict(*NO_FEEDBACK, api_name="/vote_b")[3]
    deadline = time.monotonic() + 30
    while "**1 contribution**" not in (text := client.predict(api_name="/my_rewards")):
        assert time.monotonic() < deadline, text  # the chain worker records the vote within a few ticks
        time.sleep(0.5)
    assert "1 waiting for a batch" in text and "No wallet linked yet" in text and "on the way" in text
    client.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_queue_serves_prompts_and_counts_progress(queued_server: Server):
    client = Client(queued_server.url + "/label/", verbose=False)
    text, chat, status, progress = client.predict("team-queue", api_name="/next_prompt")
    assert text == "What is 2+2?" and "0 / 5 today" in progress
    client.predict(*send(text, 6), api_name="/send")
    client.predict(*feedback(), api_name="/vote_b")
    text, _, _, progress = client.predict("team-queue", api_name="/next_prompt")
    assert text == "Name a colour." and "1 / 5 today" in progress
    text, _, status, _ = client.predict("team-queue", api_name="/skip")
    assert text == "" and "Nothing left" in status
    client.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_empty_message_and_vote_without_pair_are_refused(queued_server: Server):
    client = Client(queued_server.url + "/label/", verbose=False)
    with pytest.raises(Exception, match="empty messages are not sent"):
        client.predict(*send("   ", 6), api_name="/send")
    with pytest.raises(Exception, match="no pair to vote on"):
        client.predict(*feedback(), api_name="/vote_a")
    client.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_rest_votes_are_idempotent_and_validated(queued_server: Server):
    body = {
        "prompt": "p",
        "answer_a": "x",
        "answer_b": "y",
        "outcome": "tie",
        "labeler": "bot",
        "idempotency_key": "req-1",
        "ratings": {"b": {"honesty": 4}},
        "cut_b": True,  # B hit the length limit
    }
    first = httpx.post(queued_server.url + "/api/votes", json=body, timeout=10)
    again = httpx.post(queued_server.url + "/api/votes", json=body, timeout=10)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.json()["created"] is False
    bad = httpx.post(
        queued_server.url + "/api/votes", json={**body, "outcome": "c", "idempotency_key": "2"}, timeout=10
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    queued_server.stop()
    db = Database.in_data_dir(queued_server.data_dir)
    assert db.scalar("SELECT count(*) FROM preferences") == 1
    assert db.query("SELECT text, cut FROM candidates ORDER BY id") == [
        {"text": "x", "cut": None},
        {"text": "y", "cut": True},
    ]
    db.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_team_mode_requires_login_everywhere(tmp_path):
    users = tmp_path / "users.txt"
    users_file(users, "ada:pw-ada:admin", "bob:pw-bob:labeler")
    srv = Server(tmp_path / "data", free_port())
    import os

    os.environ["STUDIO_AUTH_MODE"], os.environ["STUDIO_USERS_FILE"] = "team", str(users)
    try:
        srv.start("--model", "tiny")
    finally:
        del os.environ["STUDIO_AUTH_MODE"], os.environ["STUDIO_USERS_FILE"]
    try:
        assert httpx.get(srv.url + "/", timeout=10).status_code == 401
        assert httpx.get(srv.url + "/", auth=("ada", "pw-ada"), timeout=10).status_code == 200
        body = {"prompt": "p", "answer_a": "x", "answer_b": "y", "outcome": "a"}
        # no account, or a wrong password: 401 (log in), like the console; 403 is for a known user's missing right
        assert httpx.post(srv.url + "/api/votes", json=body, timeout=10).status_code == 401
        assert httpx.post(srv.url + "/api/votes", json=body, auth=("bob", "wrong"), timeout=10).status_code == 401
        assert httpx.post(srv.url + "/api/votes", json=body, auth=("bob", "pw-bob"), timeout=10).status_code == 201
        with pytest.raises(Exception):  # noqa: B017 (gradio_client's error type here varies by version)
            Client(srv.url + "/label/", verbose=False)  # the Gradio app wants a login first
        client = Client(srv.url + "/label/", auth=("bob", "pw-bob"), verbose=False)
        client.predict(*send("hi", 4), api_name="/send")
        assert "Saved" in client.predict(*feedback(), api_name="/vote_a")[3]
        client.close()
    finally:
        srv.stop()
    db = Database.in_data_dir(srv.data_dir)
    assert db.query("SELECT u.name FROM preferences p JOIN users u ON u.id = p.labeler_id ORDER BY p.id") == [
        {"name": "bob"},
        {"name": "bob"},
    ]
    db.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_two_versions_answer_side_by_side_via_adapter_hot_swap(data_dir):
    from core.serving.policies import register_policy

    adapter = make_random_adapter(data_dir)
    db = Database.in_data_dir(data_dir)
    register_policy(db, "v1", 1, "tiny", "dpo", str(adapter))
    db.close()
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    try:
        client = Client(srv.url + "/label/", verbose=False)
        _, _, text_a, text_b, _ = client.predict(
            *send("Hello", 8, policy="v1", other="base", temperature=0.0), api_name="/send"
        )
        assert text_a != text_b  # greedy: only the adapter can make them differ
        client.close()
    finally:
        srv.stop()
    db = Database.in_data_dir(data_dir)
    rows = db.query("SELECT p.name FROM candidates c JOIN policies p ON p.id = c.policy_id ORDER BY c.id")
    assert [r["name"] for r in rows] == ["v1", "base"]
    db.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_huge_message_is_truncated_to_the_context_with_a_notice(shared_label_server: Server):
    client = Client(shared_label_server.url + "/label/", verbose=False)
    huge = ("lorem ipsum dolor sit amet " * 4000)[:100_000] + "\x00\x07 what now?"
    job = client.submit(*send(huge, 4), api_name="/send")
    first = next(iter(job))
    _, _, text_a, text_b, status = job.result()
    assert "longer than the model's context" in status and text_a and text_b
    stored = first[1][0]["content"][0]["text"]
    assert "\x00" not in stored and stored.endswith(" what now?")
    client.close()


def test_api_clients_see_named_parameters_with_defaults_and_no_widget_helpers(shared_label_server: Server):
    client = Client(shared_label_server.url + "/label/", verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {ep: [p["parameter_name"] for p in info["parameters"]] for ep, info in endpoints.items()}
    assert not [(ep, n) for ep, params in names.items() for n in params if n.startswith("param_")]
    assert names["/send"] == ["text", "name_a", "name_b", "temperature", "top_p", "max_new_tokens"]
    assert names["/vote_a"][:2] == ["helpfulness_a", "helpfulness_b"] and names["/vote_a"][-1] == "gold_answer"
    defaults = {p["parameter_name"]: p["parameter_default"] for p in endpoints["/send"]["parameters"]}
    assert (defaults["temperature"], defaults["top_p"], defaults["max_new_tokens"]) == (0.7, 0.9, 256)
    assert not {"/gold_from_a", "/gold_from_b", "/send_on_enter", "/page_load"} & set(endpoints)
    assert "/label_newest" in endpoints, "setting up 'newest version vs its parent' is an action, not a widget helper"

    *_, text_a, text_b, status = client.submit("Hello by name", max_new_tokens=4, api_name="/send").result()
    assert text_a and text_b and "Pick the better answer" in status
    chat, *_ = client.predict(helpfulness_a="5", note="named", api_name="/vote_a")
    assert chat[-1]["role"] == "assistant"
    client.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_people_review_pairs_an_ai_judge_labeled(shared_label_server: Server):
    """End to end on a served studio: a chat pair nobody voted on, an AI judge run started over REST (the policy
    judging), then the Review tab shows the pair, hides the AI's verdict until the vote, and stores the vote."""
    client = Client(shared_label_server.url + "/label/", verbose=False)
    client.submit("Which is larger, 3 or 7?", max_new_tokens=4, api_name="/send").result()  # a pair, no vote
    api = httpx.Client(base_url=shared_label_server.url, timeout=60)
    run = api.post("/api/judge-runs", json={"judge": "policy", "source": "unlabeled"})
    assert run.status_code == 202, run.text
    for _ in range(300):
        state = api.get(f"/api/judge-runs/{run.json()['id']}").json()
        if state["status"] != "running":
            break
        time.sleep(0.2)
    assert state["status"] == "succeeded" and state["done"] >= 1, state

    before = api.get("/api/judges/agreement", params={"judge": "ai:policy:base"}).json()["comparisons"]
    prompt, text_a, text_b, status, verdict = client.predict(False, api_name="/review_next")
    assert "**user**:" in prompt and text_a and text_b  # one of the pairs the judge labeled (other tests chat too)
    assert "shows after your vote" in verdict and "ai:policy:base" not in verdict
    status, verdict = client.predict(False, api_name="/review_vote_b")
    assert status.startswith("✓ Saved: **B is better**") and "ai:policy:base" in verdict
    after = api.get("/api/judges/agreement", params={"judge": "ai:policy:base"}).json()["comparisons"]
    assert after == before + 1  # the review counts toward the judge's calibration
    with pytest.raises(Exception, match="no pair to vote on"):
        client.predict(False, api_name="/review_vote_a")
    client.close()
    api.close()
