"""Property-based tests of the REST API: whatever a client sends, the answer is a 2xx or a 4xx with an error
code (never a 500), and a refused request stores nothing.

The real API app (app.api.create_api) over a real Studio and DuckDB file, driven in-process with Starlette's
TestClient so hundreds of generated requests run in seconds and the database can be checked after each one.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from app.api import create_api
from app.server import ApiFirst
from core.config import load_settings
from core.serving.models import build_tiny_model
from core.studio import Studio

TABLES = ("prompts", "candidates", "preferences", "ratings", "thumbs", "feedback", "jobs", "users", "policies")
MAX_BODY = 20_000

# unicode edge cases: NUL and other controls, RTL overrides, zero-width joiners, emoji, combining marks,
# non-characters, and lone surrogates (JSON may escape them as "\ud800"; json.dumps writes them that way)
EDGE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\x1b[31m",
        "\u202e",
        "\u200d",
        "🧪" * 50,
        "e\u0301",
        "\uffff",
        "a" * 5000,
        "'; DROP TABLE preferences; --",
        "null",
        "\ud7ff",
        "\ud800",
        "a\udfffb",
    ]
)
TEXT = st.one_of(st.text(max_size=60), EDGE_TEXT)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)


def field_values(valid: list) -> st.SearchStrategy:
    """Mostly plausible values for a field, sometimes anything at all."""
    return st.one_of(st.sampled_from(valid), JSON)


VOTE = st.fixed_dictionaries(
    {
        "prompt": field_values(["Which is kinder?", "  ", "\x00"]),
        "answer_a": field_values(["A", ""]),
        "answer_b": field_values(["B"]),
        "outcome": field_values(["a", "b", "tie", "both_bad", "A", "maybe"]),
    },
    optional={
        "labeler": field_values(["ann", " ", "x" * 300]),
        "idempotency_key": field_values(["k1", "k" * 500]),
        "ratings": field_values(
            [
                {"a": {"helpfulness": 5}},
                {"a": {"helpfulness": 9}},
                {"c": {"x": 1}},
                {"b": {"honesty": True}},
                {"a": {"nope": 3}},
            ]
        ),
        "flags": field_values([["unsafe"], ["pii", "pii"], ["nonsense"], "unsafe"]),
        "note": field_values(["fine", None, "n" * 10_000]),
        "extra": JSON,
    },
)
FEEDBACK = st.fixed_dictionaries(
    {
        "prompt": field_values(["p", ""]),
        "response": field_values(["r"]),
        "score": field_values([0, 1, 0.5, -1, 2, "high", 1e308]),
    },
    optional={"run_id": field_values(["r1"]), "notes": field_values([None, "ok"]), "bogus": JSON},
)
JOB = st.fixed_dictionaries(
    {
        "algorithm": field_values(["dpo", "sft", "reward", "kto", "orpo", "online_rl", "ppo", ""]),
    },
    optional={
        "parent": field_values(["base", "v404", ""]),
        "hyperparams": field_values([{"learning_rate": -1}, {"num_train_epochs": "x"}, {"nope": 1}, {}]),
        "filters": field_values([{"since": "yesterday"}, {"labelers": 5}, {"min_agreement": 2}, {}]),
        "reward_model": field_values([None, "rm404"]),
        "dry_run": field_values([True, False, "yes"]),
    },
)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("props")
    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))
    # routed at /api exactly as the server routes it, so the paths below are the real ones
    app = ApiFirst(PlainTextResponse("the console", status_code=418), create_api(lambda: studio, MAX_BODY))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/api/health").status_code == 200
    yield client, studio
    studio.close()


def as_json(body) -> dict:
    """Request arguments sending ``body`` as JSON text the way json.dumps writes it (lone surrogates escaped)."""
    return {"content": json.dumps(body), "headers": {"content-type": "application/json"}}


def counts(studio: Studio) -> dict[str, int]:
    return {table: studio.db.scalar(f"SELECT count(*) FROM {table}") for table in TABLES}


def check(response, before: dict[str, int], after: dict[str, int]) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"] and error["message"], response.text
        changed = {t for t in TABLES if after[t] != before[t] and t != "users"}  # a first-seen labeler may be added
        assert not changed, (response.text, changed)


PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPS
@given(body=st.one_of(VOTE, JSON))
def test_votes_never_500_and_refusals_store_nothing(api, body):
    client, studio = api
    before = counts(studio)
    response = client.post("/api/votes", **as_json(body))
    check(response, before, counts(studio))
    if response.status_code == 201:
        assert counts(studio)["preferences"] in (before["preferences"], before["preferences"] + 1)


@PROPS
@given(body=st.one_of(FEEDBACK, JSON))
def test_feedback_never_500_and_refusals_store_nothing(api, body):
    client, studio = api
    before = counts(studio)
    check(client.post("/api/feedback", **as_json(body)), before, counts(studio))


@PROPS
@given(body=st.one_of(JOB, JSON))
def test_jobs_never_500_and_refusals_start_nothing(api, body):
    client, studio = api
    before = counts(studio)
    response = client.post("/api/jobs", **as_json(body))
    check(response, before, counts(studio))
    assert counts(studio)["jobs"] == before["jobs"]  # no labels yet: every job is refused or a dry run


@PROPS
@given(
    name=TEXT,
    body=st.one_of(st.fixed_dictionaries({"name": TEXT}), JSON),
    method=st.sampled_from(["PATCH", "DELETE", "GET"]),
)
def test_policy_routes_never_500(api, name, body, method):
    client, studio = api
    before = counts(studio)
    path = "/api/policies/" + quote(name, safe="", errors="surrogatepass") if name else "/api/policies"
    response = client.request(method, path, **(as_json(body) if method == "PATCH" else {}))
    check(response, before, counts(studio))
    if method != "GET" or path != "/api/policies":
        assert counts(studio)["policies"] == before["policies"]


@PROPS
@given(
    raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
    path=st.sampled_from(["/api/votes", "/api/feedback", "/api/jobs", "/api/jobs/1/cancel"]),
)
def test_raw_bytes_and_wrong_content_types_are_refused_cleanly(api, raw, content_type, path):
    client, studio = api
    before = counts(studio)
    headers = {"content-type": content_type} if content_type else {}
    check(client.post(path, content=raw, headers=headers), before, counts(studio))


@pytest.mark.parametrize("path", ["/api/votes", "/api/feedback", "/api/jobs"])
def test_huge_bodies_get_413_before_anything_is_read(api, path):
    client, studio = api
    before = counts(studio)
    body = json.dumps({"prompt": "x" * (MAX_BODY * 5), "answer_a": "a", "answer_b": "b", "outcome": "a"})
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert counts(studio) == before


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/votes", {"prompt": "hi \ud800", "answer_a": "a", "answer_b": "b", "outcome": "a"}),
        ("/api/votes", {"prompt": "hi", "answer_a": "a", "answer_b": "\udfff", "outcome": "a", "note": "x"}),
        ("/api/feedback", {"prompt": "p", "response": "r \ud83d", "score": 1}),
    ],
)
def test_lone_surrogates_are_refused_with_a_code_and_nothing_is_stored(api, path, body):
    client, studio = api
    before = counts(studio)
    response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input", response.text
    assert "surrogate" in response.json()["error"]["message"]
    assert counts(studio) == before


def test_oversized_chunked_bodies_get_413(api):
    client, studio = api
    before = counts(studio)
    chunks = (b"x" * 8192 for _ in range(10))  # no content-length: counted while read
    response = client.post("/api/votes", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert counts(studio) == before


@pytest.mark.parametrize(
    "failure, status, code",
    [
        (RuntimeError("boom"), 500, "internal_error"),
        ("duckdb.IOException('IO Error: No space left on device')", 507, "storage_full"),
        ("duckdb.TransactionException('Conflict on update')", 503, "storage_unavailable"),
    ],
)
def test_unexpected_failures_answer_with_the_error_shape(api, monkeypatch, failure, status, code):
    import duckdb  # noqa: F401  (the failures above are built from it)

    import app.api_labels as api_module

    client, studio = api
    exc = eval(failure) if isinstance(failure, str) else failure

    def broken(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(api_module, "record_feedback", broken)
    response = client.post("/api/feedback", json={"prompt": "p", "response": "r", "score": 1})
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    assert "Traceback" not in response.text


def test_deeply_nested_json_is_refused_not_crashed(api):
    client, studio = api
    before = counts(studio)
    body = "[" * 5000 + "]" * 5000
    check(client.post("/api/votes", content=body, headers={"content-type": "application/json"}), before, counts(studio))
