"""REST API mounted at ``/api``: health, feedback, policies.

Thin: request parsing and error mapping only; rules live in core. Every error is JSON of the shape
``{"error": {"code": ..., "message": ..., "hint": ...}}`` with a 4xx status for bad input.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import basic_credentials
from core import __version__
from core.errors import NotFound, PayloadTooLarge, PermissionDenied, StudioError, Unauthenticated
from core.feedback import Feedback, record_feedback
from core.identity import User
from core.labeling import Vote, labeled_pair, write_labeled_pairs
from core.jobs import JobRequest, job_filters
from core.policies import delete_policy, list_policies, rename_policy
from core.studio import Studio


class FeedbackIn(BaseModel):
    """Body of POST /api/feedback. Types only; ranges and lengths are checked in core.feedback."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str
    score: float = Field(description="0 = bad answer, 1 = good answer")
    run_id: str | None = None
    notes: str | None = None


class VoteIn(BaseModel):
    """Body of POST /api/votes: a prompt, two answers and the labeler's choice, stored in one go."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    answer_a: str
    answer_b: str
    outcome: str = Field(description="a | b | tie | both_bad")
    labeler: str | None = Field(default=None, description="local mode only; team mode uses the login")
    idempotency_key: str | None = Field(default=None, max_length=200,
                                        description="repeat a request with the same key: stored once")
    ratings: dict[str, dict[str, int]] = Field(default_factory=dict, description="side -> aspect -> 1..5")
    flags: list[str] = Field(default_factory=list)
    note: str | None = None


class JobIn(BaseModel):
    """Body of POST /api/jobs: what to train, from which version, on which labels."""

    model_config = ConfigDict(extra="forbid")
    algorithm: str
    parent: str = "base"
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    filters: dict[str, Any] = Field(default_factory=dict)
    reward_model: str | None = None
    dry_run: bool = False


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def _error(status: int, code: str, message: str, hint: str = "", **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "hint": hint, **extra}}, status)


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
    api = FastAPI(title="RLHF Studio API", version=__version__, docs_url="/docs", openapi_url="/openapi.json")

    @api.exception_handler(StudioError)
    async def studio_error(_: Request, exc: StudioError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message, exc.hint)

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

    @api.get("/health")
    def health() -> dict[str, Any]:
        return get_studio().health()

    @api.post("/feedback", status_code=201)
    def post_feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
        api_user(request, None)   # team mode: only accounts write
        feedback = Feedback(prompt=body.prompt, response=body.response, score=body.score,
                            run_id=body.run_id, notes=body.notes, source="api")
        return {"id": record_feedback(get_studio().db, feedback), "status": "saved"}

    def api_user(request: Request, labeler: str | None) -> User:
        """Team mode: HTTP Basic credentials of an account. Local mode: the named labeler or the local user."""
        studio = get_studio()
        directory = studio.directory
        if directory.team_mode:
            name, password = basic_credentials(request.headers.get("authorization", ""))
            if name is None or not directory.authenticate(name, password or ""):
                raise Unauthenticated("Team mode: send your account with HTTP Basic auth",
                                      hint="curl -u name:password ...")
            return directory.user(name)
        if labeler:
            return directory.api_labeler(labeler)
        return directory.user(None)

    @api.post("/votes", status_code=201)
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

        # known users and vote checks without ratings need no I/O; password checks and aspect reads may
        slow = get_studio().directory.team_mode or bool(body.ratings)
        pair = await run_in_threadpool(prepare) if slow else prepare()
        receipt = await asyncio.wrap_future(db.submit_batched(write_labeled_pairs, pair))
        return {"id": receipt.preference_id, "status": "saved", "created": receipt.created}

    def own_or_admin(request: Request, name: str) -> User:
        """Team mode: a labeler reads only their own contributions; admins read anyone's."""
        user = api_user(request, None)
        if get_studio().directory.team_mode and not user.is_admin and user.name != name:
            raise PermissionDenied("You can only see your own contributions", hint=f"ask for /api/contributions/{user.name}")
        return user

    @api.get("/contributions/{name}")
    def contributions(name: str, request: Request) -> dict[str, Any]:
        from core.chain.public import contributions_report

        own_or_admin(request, name)
        return contributions_report(get_studio().db, name)

    @api.get("/contributions/{name}/proof/{contribution_id}")
    def contribution_proof(name: str, contribution_id: int, request: Request) -> dict[str, Any]:
        """Everything needed to verify one contribution against the root on the chain, without the studio."""
        from core.chain.public import proof_report

        user = own_or_admin(request, name)
        return proof_report(get_studio().db, name, contribution_id, with_secret=user.is_admin or user.name == name)

    @api.get("/policies")
    def policies() -> dict[str, Any]:
        return {"policies": list_policies(get_studio().db)}

    def api_admin(request: Request) -> User:
        user = api_user(request, None)
        if not user.is_admin:
            raise PermissionDenied("Only admins can do this", hint="use an admin account")
        return user

    @api.patch("/policies/{name}")
    def rename(name: str, body: RenameIn, request: Request) -> dict[str, Any]:
        rename_policy(get_studio().db, api_admin(request), name, body.name)
        return {"status": "renamed", "name": body.name}

    @api.delete("/policies/{name}")
    def delete(name: str, request: Request) -> dict[str, Any]:
        delete_policy(get_studio().db, api_admin(request), name)
        return {"status": "deleted", "name": name}

    @api.get("/policies/{name}/report")
    def version_report(name: str, request: Request, against: str | None = None) -> Any:
        """What changed in a version vs its parent (or ``against``): 200 with the report once computed, 202 while
        it is computed, 404 when none was asked for. Labelers get the figures without other people's text."""
        from core.report import latest_report, public_view

        user = api_user(request, None)
        studio = get_studio()
        report = latest_report(studio.db, name, against)
        if report is not None:
            return {"report": report if user.is_admin else public_view(report)}
        state = studio.reports.state(name, against)
        if state["status"] in ("queued", "computing"):
            return JSONResponse(state, 202)
        if state["status"] == "failed":
            error = state["error"]
            return _error(409, error["code"], error["message"], error["hint"])
        raise NotFound(f"No report of {name} against {against or 'its parent'} yet",
                       hint=f"an admin can compute one: POST /api/policies/{name}/report")

    @api.post("/policies/{name}/report", status_code=202)
    def request_report(name: str, request: Request, against: str | None = None) -> dict[str, Any]:
        """Compute a report now, in the background (admins): poll GET for it."""
        from core.report import default_against
        from core.evaluation import check_pair

        user = api_admin(request)
        studio = get_studio()
        check_pair(studio.db, name, against or default_against(studio.db, name))
        return {**studio.reports.state(name, against), "status": studio.reports.request(name, against, user)}

    @api.get("/jobs")
    def jobs() -> dict[str, Any]:
        return {"jobs": jsonable_encoder(get_studio().supervisor.jobs())}

    @api.post("/jobs", status_code=201)
    def submit_job(body: JobIn, request: Request) -> dict[str, Any]:
        user = api_admin(request)
        supervisor = get_studio().supervisor
        job = JobRequest(body.algorithm, body.parent, body.hyperparams, job_filters(body.filters),
                         body.reward_model)
        if body.dry_run:
            return {"dry_run": supervisor.dry_run(job).to_dict()}
        return {"id": supervisor.submit(job, user), "status": "queued"}

    @api.get("/jobs/{job_id}")
    def job(job_id: int) -> dict[str, Any]:
        supervisor = get_studio().supervisor
        info = supervisor.job(job_id)
        return jsonable_encoder({**info, "progress": supervisor.progress(info),
                                 "log_tail": supervisor.log_tail(job_id)})

    @api.post("/jobs/{job_id}/{action}")
    def job_action(job_id: int, action: str, request: Request) -> dict[str, Any]:
        api_admin(request)
        supervisor = get_studio().supervisor
        actions = {"cancel": supervisor.cancel, "pause": supervisor.pause, "resume": supervisor.resume}
        if action not in actions:
            raise NotFound(f"Unknown job action {action!r}", hint="use cancel, pause or resume")
        actions[action](job_id)
        return {"id": job_id, "status": supervisor.job(job_id)["status"], "requested": action}

    return BodyLimit(api, max_body_bytes)
