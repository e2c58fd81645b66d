"""REST routes of AI judges: their runs (start, estimate, follow, cancel) and their agreement with people.
One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from app.schemas import WRITES, JudgeAgreement, JudgeEstimate, JudgeRun, JudgeRunIn, JudgeRuns, JudgeStarted, answers
from core.judging.runs import estimate, judge_agreement as agreement_with_people, judges_overview

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def judge_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.get("/judge-runs", **answers(JudgeRuns))
    def judge_runs() -> dict[str, Any]:
        studio = get_studio()
        return {"runs": studio.judge_runs.list(), "judges": judges_overview(studio.db)}

    @router.post(
        "/judge-runs",
        status_code=202,
        **answers(
            JudgeStarted | JudgeEstimate,
            404,
            413,
            422,
            503,
            *WRITES,
            why={
                404: "No such reward model or policy version (code not_found)",
                422: "Unknown judge spec or source (code invalid_input)",
                503: (
                    "The judge endpoint cannot be reached (code judge_unavailable), or the database could not store"
                    " this"
                ),
            },
        ),
    )
    def start_judge_run(body: JudgeRunIn, request: Request) -> dict[str, Any]:
        """Start an AI judge in the background (poll GET /api/judge-runs/{id}), or with ``estimate`` only say
        what it would cost (pairs, requests, seconds measured on one pair, tokens for endpoints)."""
        studio = get_studio()
        if body.estimate:
            return estimate(studio, body.judge, body.source, body.api_key)
        return {
            "id": studio.judge_runs.start(body.judge, body.source, request.state.user, body.api_key),
            "status": "running",
        }

    @router.get(
        "/judge-runs/{run_id}",
        **answers(
            JudgeRun,
            404,
            422,
            why={404: "No such judge run (code not_found)", 422: "run_id is not an integer (code invalid_input)"},
        ),
    )
    def judge_run(run_id: int) -> dict[str, Any]:
        return dict(get_studio().judge_runs.get(run_id))

    @router.post(
        "/judge-runs/{run_id}/cancel",
        **answers(
            JudgeRun,
            404,
            422,
            *WRITES,
            why={404: "No such judge run (code not_found)", 422: "run_id is not an integer (code invalid_input)"},
        ),
    )
    def cancel_judge_run(run_id: int) -> dict[str, Any]:
        """Ask a running judge to stop after the pair it is on (the pairs it judged stay saved)."""
        runs = get_studio().judge_runs
        runs.cancel(run_id)
        return dict(runs.get(run_id))

    @router.get("/judges/agreement", **answers(JudgeAgreement, 422, why={422: "judge is missing (code invalid_input)"}))
    def judge_agreement(judge: str) -> dict[str, Any]:
        """A judge against people on the pairs both labeled (query ``judge=ai:...``), with the disagreements."""
        return agreement_with_people(get_studio().db, judge)

    return router
