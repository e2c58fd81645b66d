"""REST routes of the standard benchmarks (lm-evaluation-harness, core.compare.benchmarks): labelers read a
version's results; admins start a run in the background worker. One router, included by app.api.create_api."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request

from app.schemas import BenchmarksAnswer, BenchmarksIn, ReportState, answers


def benchmark_routes(get_studio: Callable[[], Any]) -> APIRouter:
    router = APIRouter()

    @router.get("/policies/{name}/benchmarks", **answers(BenchmarksAnswer, 404, 422, why={
        404: "No such version (code not_found)", 422: "A reward model or full fine-tune (code invalid_input)"}))
    def benchmarks_of(name: str, against: str | None = None) -> dict[str, Any]:
        """The version's latest benchmark run beside its parent's (same settings), and the background run's state."""
        from core.compare.benchmarks import latest_comparison
        from core.serving.policies import comparable_policy

        studio = get_studio()
        comparable_policy(studio.db, name)
        return {"benchmarks": latest_comparison(studio.db, name, against),
                "state": studio.benchmarks.state(name, against)}

    @router.post("/policies/{name}/benchmarks", status_code=202, **answers(ReportState, 404, 422, why={
        404: "No such version (code not_found)", 422: "A reward model, full fine-tune or bad settings (code "
        "invalid_input)"}))
    def request_benchmarks(name: str, request: Request, body: BenchmarksIn | None = None) -> dict[str, Any]:
        """Benchmark a version and its parent in the background (admins): poll GET for the result."""
        from core.serving.policies import comparable_policy

        studio = get_studio()
        comparable_policy(studio.db, name)
        body = body or BenchmarksIn()
        status = studio.benchmarks.request(name, None, request.state.user, **body.model_dump())
        return {**studio.benchmarks.state(name), "status": status}

    return router
