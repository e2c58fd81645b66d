"""REST routes of versions (``/policies``: the stored name): list, rename, delete, and each version's report,
safety evaluation, release gate and lineage. One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import access
from app.api_errors import error_response
from app.schemas import (
    WRITES,
    Deleted,
    Gate,
    Lineage,
    Policies,
    Renamed,
    RenameIn,
    ReportAnswer,
    ReportState,
    SafetyAnswer,
    answers,
)
from core.compare import safety
from core.compare.evaluation import check_pair
from core.compare.gate import evaluate_gate
from core.compare.report import ReportSettings, latest_report, public_view
from core.errors import NotFound
from core.serving.policies import comparable_policy, default_against, delete_policy, list_policies, rename_policy
from core.share.lineage import lineage

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def version_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.get("/policies", **answers(Policies))
    def policies(request: Request) -> dict[str, Any]:
        return {
            "policies": [access.policy_view(policy, request.state.scope) for policy in list_policies(get_studio().db)]
        }

    @router.patch(
        "/policies/{name}",
        **answers(
            Renamed,
            404,
            409,
            413,
            422,
            *WRITES,
            why={
                404: "No such live version (code not_found)",
                409: "The new name is taken (code conflict)",
                422: (
                    "The base cannot be renamed, or the new name is not letters, digits, '.', '_', '-' (code"
                    " invalid_input)"
                ),
            },
        ),
    )
    def rename(name: str, body: RenameIn, request: Request) -> dict[str, Any]:
        rename_policy(get_studio().db, request.state.user, name, body.name)
        return {"status": "renamed", "name": body.name}

    @router.delete(
        "/policies/{name}",
        **answers(
            Deleted,
            404,
            422,
            *WRITES,
            why={404: "No such live version (code not_found)", 422: "The base cannot be deleted (code invalid_input)"},
        ),
    )
    def delete(name: str, request: Request) -> dict[str, Any]:
        delete_policy(get_studio().db, request.state.user, name)
        return {"status": "deleted", "name": name}

    @router.get(
        "/policies/{name}/report",
        **answers(
            ReportAnswer,
            404,
            409,
            422,
            why={
                404: "No such version, or no report of it was asked for (code not_found)",
                409: "Computing the report failed: the error says why (its own code)",
                422: (
                    "The versions cannot be compared: the base, a reward model, a version with itself (code"
                    " invalid_input)"
                ),
            },
            also={202: {"model": ReportState, "description": "The report is queued or being computed: poll again"}},
        ),
    )
    def version_report(name: str, request: Request, against: str | None = None) -> Any:
        """What changed in a version vs its parent (or ``against``): 200 with the report once computed, 202 while
        it is computed, 404 when none was asked for. Labelers get the figures without other people's text."""
        studio = get_studio()
        report = latest_report(studio.db, name, against)
        if report is not None:
            return {"report": report if request.state.scope == access.ALL else public_view(report)}
        state = studio.reports.state(name, against)
        if state["status"] in ("queued", "computing"):
            return JSONResponse(state, 202)
        if state["status"] == "failed":
            error = state["error"]
            return error_response(409, error["code"], error["message"], error["hint"])
        raise NotFound(
            f"No report of {name} against {against or 'its parent'} yet",
            hint=f"an admin can compute one: POST /api/policies/{name}/report",
        )

    @router.post(
        "/policies/{name}/report",
        status_code=202,
        **answers(
            ReportState,
            404,
            409,
            422,
            why={
                404: "No such version (code not_found)",
                409: "A run of this version with other settings is computing: wait for it or cancel it (code conflict)",
                422: (
                    "The versions cannot be compared (the base, a reward model, a version with itself), or a report"
                    " setting is out of range (code invalid_input)"
                ),
            },
        ),
    )
    def request_report(
        name: str,
        request: Request,
        against: str | None = None,
        prompts: int | None = None,
        max_new_tokens: int | None = None,
        max_pairs: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Compute a report now, in the background (admins): poll GET for it. ``prompts``, ``max_new_tokens``,
        ``max_pairs`` and ``seed`` override the report's defaults (core.compare.report.ReportSettings: more prompts
        decide smaller changes, where answers are cheap)."""

        user = request.state.user
        studio = get_studio()
        settings = ReportSettings.chosen(prompts=prompts, max_new_tokens=max_new_tokens, max_pairs=max_pairs, seed=seed)
        check_pair(studio.db, name, against or default_against(studio.db, name))
        asked = None if settings == ReportSettings() else settings  # the defaults: the same ask as the runs after jobs
        status = studio.reports.request(name, against, user, settings=asked)
        return {**studio.reports.state(name, against), "status": status}

    @router.get(
        "/policies/{name}/safety",
        **answers(
            SafetyAnswer,
            404,
            409,
            422,
            also={202: {"model": ReportState, "description": "An evaluation is being computed: poll again"}},
            why={
                404: "No such version, or no safety evaluation of it yet (code not_found)",
                409: "The last evaluation failed: its error code and message",
                422: "invalid input (code invalid_input)",
            },
        ),
    )
    def safety_of(name: str, request: Request, against: str | None = None) -> Any:
        """A version's latest safety evaluation (labelers get it without the quoted requests and answers) and how
        it changed against its parent or ``against``; 202 while one is computed."""
        studio = get_studio()
        run = safety.latest_safety(studio.db, name)
        state = studio.safety.state(name)
        if state["status"] in ("queued", "computing"):
            return JSONResponse(state, 202)
        if run is None:
            if state["status"] == "failed":
                error = state["error"]
                return error_response(409, error["code"], error["message"], error["hint"])
            raise NotFound(
                f"{name} has no safety evaluation yet", hint=f"an admin can run one: POST /api/policies/{name}/safety"
            )
        shown = run if request.state.scope == access.ALL else safety.public_view(run)
        return {"safety": shown, "change": safety.safety_change(studio.db, name, against)}

    @router.post(
        "/policies/{name}/safety",
        status_code=202,
        **answers(
            ReportState,
            404,
            409,
            422,
            why={
                404: "No such version (code not_found)",
                409: "A run of this version with other settings is computing: wait for it or cancel it (code conflict)",
                422: "An unusable judge or max_new_tokens (code invalid_input)",
            },
        ),
    )
    def request_safety(
        name: str, request: Request, judge: str | None = None, max_new_tokens: int = safety.MAX_NEW_TOKENS
    ) -> dict[str, Any]:
        """Evaluate a version on the red-team prompts in the background (admins): poll GET for it."""

        studio = get_studio()
        comparable_policy(studio.db, name)
        if judge:
            safety.harm_judge(studio, judge)  # refuse reward models and bad specs now, not later
        status = studio.safety.request(name, None, request.state.user, judge=judge, max_new_tokens=max_new_tokens)
        return {**studio.safety.state(name), "status": status}

    @router.get(
        "/policies/{name}/gate",
        **answers(
            Gate,
            404,
            422,
            why={404: "No such version (code not_found)", 422: "The base has no gate (code invalid_input)"},
        ),
    )
    def release_gate(name: str, against: str | None = None) -> dict[str, Any]:
        """The release gate of a version (learned, human check, safety, benchmarks, KL): what a Hub push checks."""
        return evaluate_gate(get_studio().db, name, against).to_dict()

    @router.get(
        "/policies/{name}/lineage",
        **answers(
            Lineage,
            404,
            422,
            why={404: "No such version (code not_found)", 422: "The base has no lineage (code invalid_input)"},
        ),
    )
    def version_lineage(name: str) -> dict[str, Any]:
        """The chain behind a version: labels snapshot, job, report, blind check, safety, gate, pushes."""
        return lineage(get_studio().db, name)

    return router
