"""REST API mounted at ``/api``: the app, its error handling and health; one router per resource (``app/api_*.py``).

Thin: request parsing and error mapping only; rules live in core. Every error is JSON of the shape
``{"error": {"code": ..., "message": ..., "hint": ...}}`` (:class:`ErrorBody`) with a 4xx status for bad input.
Every route declares its answer model and each error status it can give (app/schemas.py), so
``/api/openapi.json`` is what clients really get (tests/app/test_openapi.py checks real answers against it).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

import duckdb
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import access
from app.api_backup import backup_routes
from app.api_benchmarks import benchmark_routes
from app.api_contributions import contribution_routes
from app.api_errors import error_response
from app.api_jobs import job_routes
from app.api_judges import judge_routes
from app.api_labels import label_routes
from app.api_versions import version_routes
from app.auth import request_user
from app.schemas import Health, answers, errors
from core import __version__
from core.errors import PayloadTooLarge, StudioError
from core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Latencies, render as render_metrics
from core.studio import Studio


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
        response = error_response(
            413,
            PayloadTooLarge.code,
            f"Request body is larger than {self.max_bytes} bytes",
            "send a smaller body or raise STUDIO_MAX_BODY_BYTES",
        )
        await response(scope, receive, send)


def create_api(get_studio: Callable[[], Studio], max_body_bytes: int) -> ASGIApp:
    async def authorize(request: Request) -> None:
        """Every route: who is calling (None: anonymous) and what app.access grants them on this route; the
        handler reads ``request.state.user`` and ``request.state.scope``. Routes without a rule are refused."""
        route = request.scope.get("route")
        studio = get_studio()
        # password checks may hash (~0.3 s): off the event loop in team mode; local mode needs no I/O
        user = (
            await run_in_threadpool(request_user, studio, request)
            if studio.directory.team_mode
            else request_user(studio, request)
        )
        request.state.user = user
        request.state.scope = access.require(user, f"api {request.method} {getattr(route, 'path', request.url.path)}")

    api = FastAPI(
        title="RLHF Studio API", version=__version__, docs_url=None, openapi_url=None, dependencies=[Depends(authorize)]
    )

    @api.exception_handler(StudioError)
    async def studioerror_response(_: Request, exc: StudioError) -> JSONResponse:
        response = error_response(exc.http_status, exc.code, exc.message, exc.hint)
        if retry_after := getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(retry_after)
        return response

    @api.exception_handler(duckdb.Error)
    async def storageerror_response(_: Request, exc: duckdb.Error) -> JSONResponse:
        """The database refused (disk full, locked, read-only): nothing was stored, say so with a code."""
        traceback.print_exception(exc)
        if "No space left" in str(exc):
            return error_response(
                507,
                "storage_full",
                "The studio's disk is full: nothing was stored",
                "free some space in the data dir (old runs, exports) and send it again",
            )
        return error_response(
            503,
            "storage_unavailable",
            "The database could not store this: nothing was stored",
            "send it again in a moment; if it persists an admin should read the server log",
        )

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """Anything else: the JSON error shape with a code, never a bare 500 page; the details go to the log."""
        traceback.print_exception(exc)
        return error_response(
            500,
            "internal_error",
            "Something went wrong on the server: nothing was stored",
            "send it again; if it persists an admin should read the server log",
        )

    @api.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error_response(
            422, "invalid_input", f"Invalid request: {summary}", "fix the listed fields", details=problems
        )

    @api.exception_handler(StarletteHTTPException)
    async def httperror_response(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @api.get("/health", **answers(Health))
    def health(request: Request) -> dict[str, Any]:
        return access.health_view(get_studio().health(), request.state.user)

    api.include_router(backup_routes(get_studio))
    api.include_router(benchmark_routes(get_studio))

    latencies = Latencies()

    # response_class=Response: a PlainTextResponse class would document the JSON errors as text/plain too
    @api.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **errors(),
        },
    )
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

        return get_swagger_ui_html(
            openapi_url=request.scope.get("root_path", "") + "/openapi.json", title="RLHF Studio API"
        )

    for routes in (label_routes, contribution_routes, version_routes, job_routes, judge_routes):
        api.include_router(routes(get_studio))

    return BodyLimit(TimedRequests(api, latencies), max_body_bytes)
