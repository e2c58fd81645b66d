"""The REST API's OpenAPI schema is what clients really get: every route names its answer model and every status it
can give, errors have one shape (ErrorBody), and real answers validate against the schema, unchanged.

The real API app (app.api.create_api) over a real Studio and DuckDB file, driven in-process with Starlette's
TestClient as in tests/app/test_api_properties.py; every answer below is checked against the schema document the
API serves (JSON Schema 2020-12, which OpenAPI 3.1 uses) and compared with what core returns.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fastapi.encoders import jsonable_encoder
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from app import access
from app.api import create_api
from app.server import ApiFirst
from core.chain.public import contributions_report
from core.compare.report import latest_report
from core.config import load_settings
from core.labeling.votes import OUTCOMES
from core.serving.models import build_tiny_model
from core.serving.policies import list_policies, register_policy
from core.studio import Studio
from core.training.distributed import LaunchConfig
from core.training.request import JobRequest, job_filters
from tests.support.studios import users_file

MAX_BODY = 20_000
ERROR_REF = "#/components/schemas/ErrorBody"
EVERY_ROUTE = {"401", "403", "429", "500"}
WRITES = {"503", "507"}
# every error status each route can give, read from the code (core raises, app.api handlers, BodyLimit)
STATUSES = {
    ("get", "/health"): EVERY_ROUTE,
    ("get", "/metrics"): EVERY_ROUTE,
    ("post", "/feedback"): EVERY_ROUTE | {"413", "422"} | WRITES,
    ("post", "/votes"): EVERY_ROUTE | {"413", "422"} | WRITES,
    ("get", "/contributions/{name}"): EVERY_ROUTE | {"404"},
    ("get", "/contributions/{name}/proof/{contribution_id}"): EVERY_ROUTE | {"404", "409", "422"},
    ("get", "/policies"): EVERY_ROUTE,
    ("patch", "/policies/{name}"): EVERY_ROUTE | {"404", "409", "413", "422"} | WRITES,
    ("delete", "/policies/{name}"): EVERY_ROUTE | {"404", "422"} | WRITES,
    ("get", "/policies/{name}/report"): EVERY_ROUTE | {"404", "409", "422"},
    ("post", "/policies/{name}/report"): EVERY_ROUTE | {"404", "409", "422"},
    ("get", "/policies/{name}/safety"): EVERY_ROUTE | {"404", "409", "422"},
    ("post", "/policies/{name}/safety"): EVERY_ROUTE | {"404", "409", "422"},
    ("get", "/policies/{name}/gate"): EVERY_ROUTE | {"404", "422"},
    ("get", "/policies/{name}/lineage"): EVERY_ROUTE | {"404", "422"},
    ("get", "/jobs"): EVERY_ROUTE,
    ("post", "/jobs"): EVERY_ROUTE | {"404", "413", "422"} | WRITES,
    ("get", "/jobs/{job_id}"): EVERY_ROUTE | {"404", "422"},
    ("post", "/jobs/{job_id}/{action}"): EVERY_ROUTE | {"404", "409", "422"} | WRITES,
    ("get", "/judge-runs"): EVERY_ROUTE,
    ("post", "/judge-runs"): EVERY_ROUTE | {"404", "413", "422", "503"} | WRITES,
    ("get", "/judge-runs/{run_id}"): EVERY_ROUTE | {"404", "422"},
    ("post", "/judge-runs/{run_id}/cancel"): EVERY_ROUTE | {"404", "422"} | WRITES,
    ("get", "/judges/agreement"): EVERY_ROUTE | {"422"},
    ("get", "/policies/{name}/benchmarks"): EVERY_ROUTE | {"404", "422"},
    ("post", "/policies/{name}/benchmarks"): EVERY_ROUTE | {"404", "409", "422"},
    ("get", "/backup"): EVERY_ROUTE,
    ("post", "/backup"): EVERY_ROUTE | {"404", "409", "502", "503"},
    ("post", "/backup/rewrite-history"): EVERY_ROUTE | {"404", "409", "502", "503"},
}


def _client(data_dir, **settings: Any) -> tuple[TestClient, Studio]:
    studio = Studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny", **settings}, env={}), build_tiny_model(data_dir)
    )
    # routed at /api exactly as the server routes it, so the paths below are the real ones
    app = ApiFirst(PlainTextResponse("the console", status_code=418), create_api(lambda: studio, MAX_BODY))
    return TestClient(app, raise_server_exceptions=False), studio


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    client, studio = _client(tmp_path_factory.mktemp("openapi"))
    yield client, studio
    studio.close()


@pytest.fixture(scope="module")
def document(api) -> dict[str, Any]:
    client, _ = api
    reply = client.get("/api/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield (method, path), operation


def call(
    client: TestClient,
    document: dict[str, Any],
    method: str,
    route: str,
    status: int,
    json_body: Any = None,
    **params: Any,
) -> Any:
    """Send a request to ``route`` (the template, with ``params`` filled in), expect ``status``, and check the
    body against the schema the route declares for that status. Returns the body."""
    reply = client.request(method, "/api" + route.format(**params), json=json_body)
    assert reply.status_code == status, reply.text
    declared = document["paths"][route][method.lower()]["responses"]
    assert str(status) in declared, f"{method} {route} answered {status}, which its schema does not list"
    schema = declared[str(status)]["content"]["application/json"]["schema"]
    body = reply.json()
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(body)
    return body


def test_every_route_is_in_the_schema(document):
    """Every API route with an access rule (less the docs and the schema itself) is documented."""
    documented = {f"{method.upper()} {path}" for (method, path), _ in operations(document)}
    assert documented == set(access.API) - {"GET /docs", "GET /openapi.json"}
    assert document["servers"] == [{"url": "/api"}]


def test_every_success_answer_names_a_model(document):
    for (method, path), operation in operations(document):
        successes = {k: v for k, v in operation["responses"].items() if k.startswith("2")}
        assert successes, (method, path)
        for status, answer in successes.items():
            if path == "/metrics":
                assert answer["content"] == {"text/plain": {"schema": {"type": "string"}}}
                continue
            schema = answer["content"]["application/json"]["schema"]
            refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
            assert refs and all(r["$ref"].startswith("#/components/schemas/") for r in refs), (method, path, schema)
    report = document["paths"]["/policies/{name}/report"]
    assert set(report["get"]["responses"]) >= {"200", "202"} and "202" in report["post"]["responses"]
    jobs = document["paths"]["/jobs"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in jobs["anyOf"]} == {"JobQueued", "JobDryRun"}


def test_errors_have_one_shape_and_every_status_is_listed(document):
    for (method, path), operation in operations(document):
        errors = {k: v for k, v in operation["responses"].items() if not k.startswith("2")}
        assert set(errors) == STATUSES[(method, path)], (method, path)
        for status, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (method, path, status)
            assert answer["description"], (method, path, status)
        assert "Retry-After" in errors["429"]["headers"]
    # FastAPI's own 422 shape is never what clients get: it is not in the schema
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "hint"} and "details" in detail["properties"]


def test_the_vote_route_lists_413_and_422(document):
    assert {"413", "422"} <= set(document["paths"]["/votes"]["post"]["responses"])


def test_outcome_is_an_enum_of_the_four_outcomes(document):
    outcome = document["components"]["schemas"]["VoteIn"]["properties"]["outcome"]
    assert outcome["enum"] == list(OUTCOMES) == ["a", "b", "tie", "both_bad"]


def test_an_unknown_outcome_is_a_422_with_our_error_shape(api, document):
    client, studio = api
    before = studio.db.scalar("SELECT count(*) FROM preferences")
    body = call(
        client, document, "POST", "/votes", 422, {"prompt": "p", "answer_a": "A", "answer_b": "B", "outcome": "maybe"}
    )
    error = body["error"]
    assert error["code"] == "invalid_input" and "outcome" in error["message"] and error["hint"]
    assert [d["field"] for d in error["details"]] == ["outcome"]
    assert studio.db.scalar("SELECT count(*) FROM preferences") == before


def test_real_answers_validate_and_are_what_core_returns(api, document, tmp_path, monkeypatch):
    client, studio = api
    db = studio.db
    assert call(client, document, "GET", "/health", 200) == studio.health()  # local mode: the local admin
    saved = call(client, document, "POST", "/feedback", 201, {"prompt": "p", "response": "r", "score": 1})
    assert saved == {"id": db.scalar("SELECT max(id) FROM feedback"), "status": "saved", "created": True}
    vote = {"prompt": "q", "answer_a": "A", "answer_b": "B", "outcome": "tie", "labeler": "ann"}
    first = call(client, document, "POST", "/votes", 201, vote)
    assert first["status"] == "saved" and first["created"] is True
    assert call(client, document, "GET", "/contributions/{name}", 200, name="ann") == contributions_report(db, "ann")
    call(client, document, "GET", "/contributions/{name}", 404, name="nobody")
    call(client, document, "GET", "/contributions/{name}/proof/{contribution_id}", 404, name="ann", contribution_id=1)
    call(client, document, "GET", "/contributions/{name}/proof/{contribution_id}", 422, name="ann", contribution_id="x")

    # a trained version (its adapter is never loaded here) with a stored report
    v1 = register_policy(
        db,
        "v1",
        studio.base_policy_id,
        "tiny",
        "dpo",
        str(tmp_path / "adapter"),
        data_hash="h",
        config={"lr": 1},
        metrics={"loss": 0.5},
    )
    assert call(client, document, "GET", "/policies", 200) == {"policies": list_policies(db)}
    call(client, document, "GET", "/policies/{name}/report", 404, name="v1")
    call(client, document, "GET", "/policies/{name}/report", 422, name="base")
    monkeypatch.setattr(
        studio.reports,
        "state",
        lambda *_: {"status": "computing", "progress": 0.3, "message": "scoring 6 held-out pairs"},
    )
    assert call(client, document, "GET", "/policies/{name}/report", 202, name="v1")["status"] == "computing"
    monkeypatch.undo()
    report = {
        "version": "v1",
        "against": "base",
        "verdict": "no_change",
        "summary": "nothing moved",
        "metrics": {"toward": 0, "away": 0, "p_value": None, "new_figure": [1, 2]},
        "warnings": [],
        "settings": {"prompts": 12},
        "examples": [{"prompt": "p", "answer_version": "a", "answer_against": "b", "difference": 0.5}],
    }
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report)"
            " VALUES (?, ?, 'no_change', 'nothing moved', ?)",
            [v1, studio.base_policy_id, json.dumps(report)],
        )
    )
    assert call(client, document, "GET", "/policies/{name}/report", 200, name="v1") == {
        "report": latest_report(db, "v1")
    }
    call(client, document, "POST", "/policies/{name}/report", 422, name="base")
    call(client, document, "POST", "/policies/{name}/report", 404, name="v404")

    # a failed job with a run dir, as the supervisor leaves one
    run_dir = tmp_path / "runs" / "77"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text(json.dumps({"step": 3, "total": 10}))
    (run_dir / "log.txt").write_text("line 1\nline 2\n")
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO jobs (id, algorithm, status, parent_policy_id, config, run_dir,"
            " error) VALUES (77, 'dpo', 'failed', ?, ?, ?, 'boom')",
            [studio.base_policy_id, json.dumps({"hyperparams": {"lr": 1}}), str(run_dir)],
        )
    )
    supervisor = studio.supervisor
    assert call(client, document, "GET", "/jobs", 200) == {"jobs": jsonable_encoder(supervisor.jobs())}
    info = supervisor.job(77)
    assert call(client, document, "GET", "/jobs/{job_id}", 200, job_id=77) == jsonable_encoder(
        {**info, "progress": supervisor.progress(info), "log_tail": supervisor.log_tail(77)}
    )
    call(client, document, "GET", "/jobs/{job_id}", 404, job_id=78)
    call(client, document, "GET", "/jobs/{job_id}", 422, job_id="x")
    dry = call(client, document, "POST", "/jobs", 201, {"algorithm": "dpo", "dry_run": True})
    job = JobRequest("dpo", "base", {}, job_filters({}), None, LaunchConfig.from_dict({}))
    assert dry == {"dry_run": supervisor.dry_run(job).to_dict()}
    call(client, document, "POST", "/jobs", 422, {"algorithm": "dpo"})  # one label: too few
    call(client, document, "POST", "/jobs", 404, {"algorithm": "dpo", "parent": "v404"})
    monkeypatch.setattr(supervisor, "submit", lambda *_: 78)  # the queued form, without a trainer
    assert call(client, document, "POST", "/jobs", 201, {"algorithm": "dpo"}) == {"id": 78, "status": "queued"}
    monkeypatch.undo()
    call(client, document, "POST", "/jobs/{job_id}/{action}", 409, job_id=77, action="pause")
    call(client, document, "POST", "/jobs/{job_id}/{action}", 404, job_id=77, action="explode")
    assert call(client, document, "POST", "/jobs/{job_id}/{action}", 200, job_id=77, action="cancel") == {
        "id": 77,
        "status": "cancelled",
        "requested": "cancel",
    }

    register_policy(db, "v2", v1, "tiny", "dpo", str(tmp_path / "adapter2"))
    assert call(client, document, "PATCH", "/policies/{name}", 200, {"name": "v1b"}, name="v1") == {
        "status": "renamed",
        "name": "v1b",
    }
    call(client, document, "PATCH", "/policies/{name}", 409, {"name": "v2"}, name="v1b")
    call(client, document, "PATCH", "/policies/{name}", 422, {"name": "base"}, name="v1b")
    call(client, document, "PATCH", "/policies/{name}", 404, {"name": "zz"}, name="nosuch")
    assert call(client, document, "DELETE", "/policies/{name}", 200, name="v1b") == {"status": "deleted", "name": "v1b"}
    call(client, document, "DELETE", "/policies/{name}", 404, name="v1b")
    call(client, document, "DELETE", "/policies/{name}", 422, name="base")


def test_oversized_bodies_answer_413_as_documented(api, document):
    client, _ = api
    call(
        client,
        document,
        "POST",
        "/votes",
        413,
        {"prompt": "x" * MAX_BODY * 2, "answer_a": "a", "answer_b": "b", "outcome": "a"},
    )


def test_team_mode_refusals_answer_as_documented(tmp_path, document):
    """401 without an account, 403 for a labeler on an admin route, 429 once an account is locked."""
    users = users_file(tmp_path / "users.txt", "ada:pw-ada:admin", "bob:pw-bob:labeler")
    client, studio = _client(tmp_path / "data", auth_mode="team", users_file=str(users))
    try:
        assert call(client, document, "GET", "/health", 200) == {"status": "ok"}  # no role-hidden field as null
        assert call(client, document, "GET", "/jobs", 401)["error"]["code"] == "unauthorized"
        client.auth = ("bob", "pw-bob")
        assert set(call(client, document, "GET", "/health", 200)) == {
            "status",
            "version",
            "model_status",
            "chat_dtype",
            "storage_ephemeral",
        }
        assert (
            call(client, document, "POST", "/jobs", 403, {"algorithm": "dpo", "dry_run": True})["error"]["code"]
            == "forbidden"
        )
        client.auth = ("ada", "wrong")
        for _ in range(5):
            call(client, document, "GET", "/health", 401)
        assert call(client, document, "GET", "/health", 429)["error"]["code"] == "too_many_attempts"
        assert int(client.get("/api/health").headers["retry-after"]) > 0
    finally:
        studio.close()


def test_the_schema_is_valid_openapi(document):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)
