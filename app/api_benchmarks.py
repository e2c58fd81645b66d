"""REST routes of the standard benchmarks (lm-evaluation-harness, core.compare.benchmarks): labelers read a
version's results; admins start a run in the background worker. One router, included by app.api.create_api."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.schemas import OpenModel, ReportState, answers

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


class BenchmarkTask(OpenModel):
    task: str
    metric: str
    value: float
    stderr: float | None = None
    against_value: float | None = None
    against_stderr: float | None = None
    change_points: float | None = None
    regressed: bool | None = Field(default=None, description="dropped beyond max(margin, 2 x stderr) in points")


class Benchmarks(OpenModel):
    """A version's latest standard benchmarks (lm-evaluation-harness) beside its parent's with the same settings."""

    version: str
    against: str | None = None
    adapter_applied: bool | None = Field(
        default=None,
        description="the adapter guard: the scored model differs "
        "from the base as the adapter's weights say (null: the base itself)",
    )
    settings: dict[str, Any] = Field(description="tasks, limit, num_fewshot, chat_template, seed, lm_eval_version")
    tasks: list[BenchmarkTask]
    regressions: list[BenchmarkTask]


class BenchmarksAnswer(BaseModel):
    benchmarks: Benchmarks | None = Field(description="null until the version is benchmarked")
    state: ReportState = Field(description="the background run, if one is queued or computing")


class BenchmarksIn(BaseModel):
    tasks: list[str] = Field(default=["studio-offline"], description="lm-eval task or group names")
    limit: int | None = Field(default=None, ge=1, description="at most this many examples per task")
    num_fewshot: int | None = Field(default=None, ge=0)
    chat_template: bool = True


def benchmark_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/policies/{name}/benchmarks",
        **answers(
            BenchmarksAnswer,
            404,
            422,
            why={404: "No such version (code not_found)", 422: "A reward model or full fine-tune (code invalid_input)"},
        ),
    )
    def benchmarks_of(name: str, against: str | None = None) -> dict[str, Any]:
        """The version's latest benchmark run beside its parent's (same settings), and the background run's state."""
        from core.compare.benchmarks import latest_comparison
        from core.serving.policies import comparable_policy

        studio = get_studio()
        comparable_policy(studio.db, name)
        return {
            "benchmarks": latest_comparison(studio.db, name, against),
            "state": studio.benchmarks.state(name, against),
        }

    @router.post(
        "/policies/{name}/benchmarks",
        status_code=202,
        **answers(
            ReportState,
            404,
            409,
            422,
            why={
                404: "No such version (code not_found)",
                409: "A run of this version with other settings is computing: wait for it or cancel it (code conflict)",
                422: "A reward model, full fine-tune or bad settings (code invalid_input)",
            },
        ),
    )
    def request_benchmarks(name: str, request: Request, body: BenchmarksIn | None = None) -> dict[str, Any]:
        """Benchmark a version and its parent in the background (admins): poll GET for the result."""
        from core.serving.policies import comparable_policy

        studio = get_studio()
        comparable_policy(studio.db, name)
        body = body or BenchmarksIn()
        status = studio.benchmarks.request(name, None, request.state.user, **body.model_dump())
        return {**studio.benchmarks.state(name), "status": status}

    return router
