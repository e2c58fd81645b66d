"""REST API mounted at ``/api``: health, feedback, policies.

Thin: request parsing and error mapping only; rules live in core. Every error is JSON of the shape
``{"error": {"code": ..., "message": ..., "hint": ...}}`` (:class:`ErrorBody`) with a 4xx status for bad input.
Every route declares its answer model and each error status it can give (app/schemas.py), so
``/api/openapi.json`` is what clients really get (tests/test_openapi.py checks real answers against it).
"""
from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

import duckdb
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api_backup import backup_routes
from app.api_benchmarks import benchmark_routes
from app.auth import request_user

# ruff's isort would wrap this one name per line, pushing the module past the layout's 500 lines
# isort: off
from app.schemas import (WRITES, ContributionProof, Contributions, Deleted, FeedbackIn, Gate, Health, Job, JobAction,
                         JobDryRun, JobIn, JobQueued, Jobs, JudgeAgreement, JudgeEstimate, JudgeRun, JudgeRunIn,
                         JudgeRuns, JudgeStarted, Lineage, Policies, Renamed, RenameIn, ReportAnswer, ReportState,
                         SafetyAnswer, Saved, VoteIn, answers, errors)
# isort: on
from app import access
from core import __version__
from core.errors import NotFound, PayloadTooLarge, PermissionDenied, StudioError
from core.labeling.feedback import Feedback, record_feedback
from core.labeling.identity import User
from core.labeling.votes import Vote, labeled_pair, write_labeled_pairs
from core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Latencies, render as render_metrics
from core.serving.policies import delete_policy, list_policies, rename_policy
from core.studio import Studio
from core.training.distributed import LaunchConfig
from core.training.request import JobRequest, job_filters


def _printable(value: Any) -> Any:
    """Echoed input may hold lone surrogates, which no UTF-8 response can carry: spelled out as \\udxxx."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


def _error(status: int, code: str, message: str, hint: str = "", **extra: Any) -> JSONResponse:
    return JSONResponse(_printable({"error": {"code": code, "message": message, "hint": hint, **extra}}), status)


class TimedRequests:
    """Record every request's duration by route template, method and status (``/metrics``). Unmatched paths share
    one label, so scanners cannot grow the series without bound."""

    def __init__(self, app: ASGIApp, latencies: Latencies) -> None:
        self.app, self.latencies = app, latencies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.latencies.observe(route, scope["method"], status[0], time.perf_counter() - started)


class BodyLimit:
    """Refuse request bodies above ``max_bytes`` before the app reads them (413, nothing stored)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # chunked: read it all here (it is small by definition) so an overflow is a 413, not a parse error
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    return await self._refuse(scope, receive, send)
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def replayed() -> Message:
                return replay.pop() if replay else await receive()

            return await self.app(scope, replayed, send)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise PayloadTooLarge("body too large")
            return message

        try:
            await self.app(scope, counting_receive, send)
        except PayloadTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(413, PayloadTooLarge.code, f"Request body is larger than {self.max_bytes} bytes",
                          "send a smaller body or raise STUDIO_MAX_BODY_BYTES")
        await response(scope, receive, send)


def create_api(get_studio: Callable[[], Studio], max_body_bytes: int) -> ASGIApp:
    async def authorize(request: Request) -> None:
        """Every route: who is calling (None: anonymous) and what app.access grants them on this route; the
        handler reads ``request.state.user`` and ``request.state.scope``. Routes without a rule are refused."""
        route = request.scope.get("route")
        studio = get_studio()
        # password checks may hash (~0.3 s): off the event loop in team mode; local mode needs no I/O
        user = (await run_in_threadpool(request_user, studio, request) if studio.directory.team_mode
                else request_user(studio, request))
        request.state.user = user
        request.state.scope = access.require(user, f"api {request.method} {getattr(route, 'path', request.url.path)}")

    api = FastAPI(title="RLHF Studio API", version=__version__, docs_url=None, openapi_url=None,
                  dependencies=[Depends(authorize)])

    @api.exception_handler(StudioError)
    async def studio_error(_: Request, exc: StudioError) -> JSONResponse:
        response = _error(exc.http_status, exc.code, exc.message, exc.hint)
        if retry_after := getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(retry_after)
        return response

    @api.exception_handler(duckdb.Error)
    async def storage_error(_: Request, exc: duckdb.Error) -> JSONResponse:
        """The database refused (disk full, locked, read-only): nothing was stored, say so with a code."""
        traceback.print_exception(exc)
        if "No space left" in str(exc):
            return _error(507, "storage_full", "The studio's disk is full: nothing was stored",
                          "free some space in the data dir (old runs, exports) and send it again")
        return _error(503, "storage_unavailable", "The database could not store this: nothing was stored",
                      "send it again in a moment; if it persists an admin should read the server log")

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """Anything else: the JSON error shape with a code, never a bare 500 page; the details go to the log."""
        traceback.print_exception(exc)
        return _error(500, "internal_error", "Something went wrong on the server: nothing was stored",
                      "send it again; if it persists an admin should read the server log")

    @api.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]}
                    for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return _error(422, "invalid_input", f"Invalid request: {summary}", "fix the listed fields",
                      details=problems)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @api.get("/health", **answers(Health))
    def health(request: Request) -> dict[str, Any]:
        return access.health_view(get_studio().health(), request.state.user)

    api.include_router(backup_routes(get_studio))
    api.include_router(benchmark_routes(get_studio))

    latencies = Latencies()

    # response_class=Response: a PlainTextResponse class would document the JSON errors as text/plain too
    @api.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors()})
    def metrics() -> PlainTextResponse:
        """Operator metrics in the Prometheus text format (also served at ``/metrics``)."""
        return PlainTextResponse(render_metrics(get_studio(), latencies), media_type=METRICS_CONTENT_TYPE)

    def schema() -> dict[str, Any]:
        """FastAPI's schema less its built-in 422 answer (HTTPValidationError): our handler answers every 422 with
        ErrorBody, and routes list 422 themselves where it can happen."""
        if api.openapi_schema is None:
            document = FastAPI.openapi(api)
            for operation in (op for item in document["paths"].values() for op in item.values()):
                if "HTTPValidationError" in json.dumps(operation["responses"].get("422", {})):
                    del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                document["components"]["schemas"].pop(name, None)
        return cast("dict[str, Any]", api.openapi_schema)  # FastAPI.openapi() stored it

    api.openapi = schema  # type: ignore[method-assign]

    @api.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> dict[str, Any]:
        """With the mount point as server, so generated clients and the docs' "try it out" call /api/..."""
        return {**api.openapi(), "servers": [{"url": request.scope.get("root_path", "") or "/"}]}

    @api.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Any:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=request.scope.get("root_path", "") + "/openapi.json",
                                   title="RLHF Studio API")

    @api.post("/feedback", status_code=201, **answers(Saved, 413, 422, *WRITES))
    def post_feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
        feedback = Feedback(prompt=body.prompt, response=body.response, score=body.score,
                            run_id=body.run_id, notes=body.notes, source="api")
        feedback_id, created = record_feedback(get_studio().db, feedback, api_user(request, body.labeler).id,
                                               body.idempotency_key)
        return {"id": feedback_id, "status": "saved", "created": created}

    def api_user(request: Request, labeler: str | None) -> User:
        """Team mode: the logged-in account. Local mode: the labeler a client names, or the local user.

        In team mode a ``labeler`` naming someone else is refused rather than ignored: the item would be stored
        as the caller while the client believes it went in under the other name."""
        directory = get_studio().directory
        if labeler and not directory.team_mode:
            return directory.api_labeler(labeler)
        user: User = request.state.user
        if labeler and labeler.strip() != user.name:
            raise PermissionDenied(f"You are logged in as {user.name!r}: you cannot send labels as {labeler!r}",
                                   hint=f"leave out 'labeler' (or set it to {user.name!r}); labels are stored "
                                        "as the account that sends them")
        return user

    @api.post("/votes", status_code=201, **answers(Saved, 413, 422, *WRITES))
    async def post_vote(body: VoteIn, request: Request) -> dict[str, Any]:
        """The hot path of a labeling session, so it stays on the event loop: no thread hand-off per
        vote, only an await on the group-commit future (acknowledged after the commit)."""
        db = get_studio().db
        vote = Vote(candidate_a=0, candidate_b=0, outcome=body.outcome, ratings=body.ratings,
                    flags=tuple(body.flags), note=body.note, idempotency_key=body.idempotency_key,
                    source="api")

        def prepare() -> Any:
            user = api_user(request, body.labeler)
            return labeled_pair(db, user, body.prompt, body.answer_a, body.answer_b, vote)

        # vote checks without ratings need no I/O; aspect reads and a new labeler's row do
        slow = bool(body.ratings) or (body.labeler is not None and not get_studio().directory.team_mode)
        pair = await run_in_threadpool(prepare) if slow else prepare()
        receipt = await asyncio.wrap_future(db.submit_batched(write_labeled_pairs, pair))
        return {"id": receipt.preference_id, "status": "saved", "created": receipt.created}

    def own_or_admin(request: Request, name: str) -> User:
        """A labeler reads only their own contributions; admins read anyone's."""
        user = request.state.user
        if request.state.scope == access.OWN and user.name != name:
            raise PermissionDenied("You can only see your own contributions",
                                   hint=f"ask for /api/contributions/{user.name}")
        return user

    @api.get("/contributions/{name}", **answers(Contributions, 404, why={
        403: "A labeler asked for someone else's contributions (code forbidden)",
        404: "No such user (code not_found)"}))
    def contributions(name: str, request: Request) -> dict[str, Any]:
        from core.chain.public import contributions_report

        own_or_admin(request, name)
        return contributions_report(get_studio().db, name)

    @api.get("/contributions/{name}/proof/{contribution_id}", **answers(ContributionProof, 404, 409, 422, why={
        403: "A labeler asked for someone else's proof (code forbidden)",
        404: "No such user, or no such contribution of theirs (code not_found)",
        409: "The contribution is not in a batch yet, or its rows do not give the stored root (code proof_invalid)",
        422: "contribution_id is not an integer (code invalid_input)"}))
    def contribution_proof(name: str, contribution_id: int, request: Request) -> dict[str, Any]:
        """Everything needed to verify one contribution against the root on the chain, without the studio."""
        from core.chain.public import proof_report

        user = own_or_admin(request, name)
        return proof_report(get_studio().db, name, contribution_id, with_secret=user.is_admin or user.name == name)

    @api.get("/policies", **answers(Policies))
    def policies(request: Request) -> dict[str, Any]:
        return {"policies": [access.policy_view(policy, request.state.scope)
                             for policy in list_policies(get_studio().db)]}

    @api.patch("/policies/{name}", **answers(Renamed, 404, 409, 413, 422, *WRITES, why={
        404: "No such live version (code not_found)", 409: "The new name is taken (code conflict)",
        422: "The base cannot be renamed, or the new name is not letters, digits, '.', '_', '-' (code invalid_input)"}))
    def rename(name: str, body: RenameIn, request: Request) -> dict[str, Any]:
        rename_policy(get_studio().db, request.state.user, name, body.name)
        return {"status": "renamed", "name": body.name}

    @api.delete("/policies/{name}", **answers(Deleted, 404, 422, *WRITES, why={
        404: "No such live version (code not_found)", 422: "The base cannot be deleted (code invalid_input)"}))
    def delete(name: str, request: Request) -> dict[str, Any]:
        delete_policy(get_studio().db, request.state.user, name)
        return {"status": "deleted", "name": name}

    @api.get("/policies/{name}/report", **answers(ReportAnswer, 404, 409, 422, why={
        404: "No such version, or no report of it was asked for (code not_found)",
        409: "Computing the report failed: the error says why (its own code)",
        422: "The versions cannot be compared: the base, a reward model, a version with itself (code invalid_input)"},
        also={202: {"model": ReportState, "description": "The report is queued or being computed: poll again"}}))
    def version_report(name: str, request: Request, against: str | None = None) -> Any:
        """What changed in a version vs its parent (or ``against``): 200 with the report once computed, 202 while
        it is computed, 404 when none was asked for. Labelers get the figures without other people's text."""
        from core.compare.report import latest_report, public_view

        studio = get_studio()
        report = latest_report(studio.db, name, against)
        if report is not None:
            return {"report": report if request.state.scope == access.ALL else public_view(report)}
        state = studio.reports.state(name, against)
        if state["status"] in ("queued", "computing"):
            return JSONResponse(state, 202)
        if state["status"] == "failed":
            error = state["error"]
            return _error(409, error["code"], error["message"], error["hint"])
        raise NotFound(f"No report of {name} against {against or 'its parent'} yet",
                       hint=f"an admin can compute one: POST /api/policies/{name}/report")

    @api.post("/policies/{name}/report", status_code=202, **answers(ReportState, 404, 422, why={
        404: "No such version (code not_found)",
        422: "The versions cannot be compared: the base, a reward model, a version with itself (code invalid_input)"}))
    def request_report(name: str, request: Request, against: str | None = None) -> dict[str, Any]:
        """Compute a report now, in the background (admins): poll GET for it."""
        from core.compare.evaluation import check_pair
        from core.serving.policies import default_against

        user = request.state.user
        studio = get_studio()
        check_pair(studio.db, name, against or default_against(studio.db, name))
        return {**studio.reports.state(name, against), "status": studio.reports.request(name, against, user)}

    @api.get("/policies/{name}/safety", **answers(SafetyAnswer, 404, 409, 422, also={
        202: {"model": ReportState, "description": "An evaluation is being computed: poll again"}}, why={
        404: "No such version, or no safety evaluation of it yet (code not_found)",
        409: "The last evaluation failed: its error code and message", 422: "invalid input (code invalid_input)"}))
    def safety_of(name: str, request: Request, against: str | None = None) -> Any:
        """A version's latest safety evaluation (labelers get it without the quoted requests and answers) and how
        it changed against its parent or ``against``; 202 while one is computed."""
        from core.compare import safety

        studio = get_studio()
        run = safety.latest_safety(studio.db, name)
        state = studio.safety.state(name)
        if state["status"] in ("queued", "computing"):
            return JSONResponse(state, 202)
        if run is None:
            if state["status"] == "failed":
                error = state["error"]
                return _error(409, error["code"], error["message"], error["hint"])
            raise NotFound(f"{name} has no safety evaluation yet",
                           hint=f"an admin can run one: POST /api/policies/{name}/safety")
        shown = run if request.state.scope == access.ALL else safety.public_view(run)
        return {"safety": shown, "change": safety.safety_change(studio.db, name, against)}

    @api.post("/policies/{name}/safety", status_code=202, **answers(ReportState, 404, 422, why={
        404: "No such version (code not_found)", 422: "An unusable judge or max_new_tokens (code invalid_input)"}))
    def request_safety(name: str, request: Request, judge: str | None = None,
                       max_new_tokens: int = 96) -> dict[str, Any]:
        """Evaluate a version on the red-team prompts in the background (admins): poll GET for it."""
        from core.compare import safety
        from core.serving.policies import comparable_policy

        studio = get_studio()
        comparable_policy(studio.db, name)
        if judge:
            safety.harm_judge(studio, judge)               # refuse reward models and bad specs now, not later
        status = studio.safety.request(name, None, request.state.user, judge=judge, max_new_tokens=max_new_tokens)
        return {**studio.safety.state(name), "status": status}

    @api.get("/policies/{name}/gate", **answers(Gate, 404, 422, why={
        404: "No such version (code not_found)", 422: "The base has no gate (code invalid_input)"}))
    def release_gate(name: str, against: str | None = None) -> dict[str, Any]:
        """The release gate of a version (learned, human check, safety, benchmarks, KL): what a Hub push checks."""
        from core.compare.gate import evaluate_gate

        return evaluate_gate(get_studio().db, name, against).to_dict()

    @api.get("/policies/{name}/lineage", **answers(Lineage, 404, 422, why={
        404: "No such version (code not_found)", 422: "The base has no lineage (code invalid_input)"}))
    def version_lineage(name: str) -> dict[str, Any]:
        """The chain behind a version: labels snapshot, job, report, blind check, safety, gate, pushes."""
        from core.share.lineage import lineage

        return lineage(get_studio().db, name)

    @api.get("/jobs", **answers(Jobs))
    def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": jsonable_encoder([access.job_view(job, request.state.scope)
                                          for job in get_studio().supervisor.jobs()])}

    @api.post("/jobs", status_code=201, **answers(JobQueued | JobDryRun, 404, 413, 422, *WRITES, why={
        404: "No such parent version or reward model (code not_found)",
        422: "Invalid job: unknown algorithm, hyperparameters, filters or launch settings, or too few labels "
             "(code invalid_input)"}))
    def submit_job(body: JobIn, request: Request) -> dict[str, Any]:
        user = request.state.user
        supervisor = get_studio().supervisor
        job = JobRequest(body.algorithm, body.parent, body.hyperparams, job_filters(body.filters),
                         body.reward_model, LaunchConfig.from_dict(body.launch))
        if body.dry_run:
            return {"dry_run": supervisor.dry_run(job).to_dict()}
        return {"id": supervisor.submit(job, user), "status": "queued"}

    @api.get("/jobs/{job_id}", **answers(Job, 404, 422, why={
        404: "No such job (code not_found)", 422: "job_id is not an integer (code invalid_input)"}))
    def job(job_id: int, request: Request) -> dict[str, Any]:
        supervisor = get_studio().supervisor
        info = supervisor.job(job_id)
        return jsonable_encoder(access.job_view({**info, "progress": supervisor.progress(info),
                                                 "log_tail": supervisor.log_tail(job_id)}, request.state.scope))

    @api.post("/jobs/{job_id}/{action}", **answers(JobAction, 404, 409, 422, *WRITES, why={
        404: "No such job, or an action other than cancel, pause, resume (code not_found)",
        409: "The job's status does not allow it, or it has no checkpoint to resume from (code conflict)",
        422: "job_id is not an integer (code invalid_input)"}))
    def job_action(job_id: int, action: str) -> dict[str, Any]:
        supervisor = get_studio().supervisor
        actions = {"cancel": supervisor.cancel, "pause": supervisor.pause, "resume": supervisor.resume}
        if action not in actions:
            raise NotFound(f"Unknown job action {action!r}", hint="use cancel, pause or resume")
        actions[action](job_id)
        return {"id": job_id, "status": supervisor.job(job_id)["status"], "requested": action}

    @api.get("/judge-runs", **answers(JudgeRuns))
    def judge_runs() -> dict[str, Any]:
        from core.judging.runs import judges_overview

        studio = get_studio()
        return {"runs": studio.judge_runs.list(), "judges": judges_overview(studio.db)}

    @api.post("/judge-runs", status_code=202, **answers(JudgeStarted | JudgeEstimate, 404, 413, 422, 503, *WRITES,
                                                        why={
        404: "No such reward model or policy version (code not_found)",
        422: "Unknown judge spec or source (code invalid_input)",
        503: "The judge endpoint cannot be reached (code judge_unavailable), or the database could not store this"}))
    def start_judge_run(body: JudgeRunIn, request: Request) -> dict[str, Any]:
        """Start an AI judge in the background (poll GET /api/judge-runs/{id}), or with ``estimate`` only say
        what it would cost (pairs, requests, seconds measured on one pair, tokens for endpoints)."""
        from core.judging.runs import estimate

        studio = get_studio()
        if body.estimate:
            return estimate(studio, body.judge, body.source, body.api_key)
        return {"id": studio.judge_runs.start(body.judge, body.source, request.state.user, body.api_key),
                "status": "running"}

    @api.get("/judge-runs/{run_id}", **answers(JudgeRun, 404, 422, why={
        404: "No such judge run (code not_found)", 422: "run_id is not an integer (code invalid_input)"}))
    def judge_run(run_id: int) -> dict[str, Any]:
        return get_studio().judge_runs.get(run_id)

    @api.post("/judge-runs/{run_id}/cancel", **answers(JudgeRun, 404, 422, *WRITES, why={
        404: "No such judge run (code not_found)", 422: "run_id is not an integer (code invalid_input)"}))
    def cancel_judge_run(run_id: int) -> dict[str, Any]:
        """Ask a running judge to stop after the pair it is on (the pairs it judged stay saved)."""
        runs = get_studio().judge_runs
        runs.cancel(run_id)
        return runs.get(run_id)

    @api.get("/judges/agreement", **answers(JudgeAgreement, 422, why={
        422: "judge is missing (code invalid_input)"}))
    def judge_agreement(judge: str) -> dict[str, Any]:
        """A judge against people on the pairs both labeled (query ``judge=ai:...``), with the disagreements."""
        from core.judging.runs import judge_agreement

        return judge_agreement(get_studio().db, judge)

    return BodyLimit(TimedRequests(api, latencies), max_body_bytes)
