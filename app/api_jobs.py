"""REST routes of training jobs: list, submit (or dry-run), one job with its log, cancel / pause / resume.
One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder

from app import access
from app.schemas import WRITES, Job, JobAction, JobDryRun, JobIn, JobQueued, Jobs, answers
from core.errors import NotFound
from core.training.distributed import LaunchConfig
from core.training.request import JobRequest, job_filters

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def job_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.get("/jobs", **answers(Jobs))
    def jobs(request: Request) -> dict[str, Any]:
        return {
            "jobs": jsonable_encoder(
                [access.job_view(job, request.state.scope) for job in get_studio().supervisor.jobs()]
            )
        }

    @router.post(
        "/jobs",
        status_code=201,
        **answers(
            JobQueued | JobDryRun,
            404,
            413,
            422,
            *WRITES,
            why={
                404: "No such parent version or reward model (code not_found)",
                422: "Invalid job: unknown algorithm, hyperparameters, filters or launch settings, or too few labels "
                "(code invalid_input)",
            },
        ),
    )
    def submit_job(body: JobIn, request: Request) -> dict[str, Any]:
        user = request.state.user
        supervisor = get_studio().supervisor
        job = JobRequest(
            body.algorithm,
            body.parent,
            body.hyperparams,
            job_filters(body.filters),
            body.reward_model,
            LaunchConfig.from_dict(body.launch),
        )
        if body.dry_run:
            return {"dry_run": supervisor.dry_run(job).to_dict()}
        return {"id": supervisor.submit(job, user), "status": "queued"}

    @router.get(
        "/jobs/{job_id}",
        **answers(
            Job,
            404,
            422,
            why={404: "No such job (code not_found)", 422: "job_id is not an integer (code invalid_input)"},
        ),
    )
    def job(job_id: int, request: Request) -> dict[str, Any]:
        supervisor = get_studio().supervisor
        info = supervisor.job(job_id)
        return jsonable_encoder(
            access.job_view(
                {**info, "progress": supervisor.progress(info), "log_tail": supervisor.log_tail(job_id)},
                request.state.scope,
            )
        )

    @router.post(
        "/jobs/{job_id}/{action}",
        **answers(
            JobAction,
            404,
            409,
            422,
            *WRITES,
            why={
                404: "No such job, or an action other than cancel, pause, resume (code not_found)",
                409: "The job's status does not allow it, or it has no checkpoint to resume from (code conflict)",
                422: "job_id is not an integer (code invalid_input)",
            },
        ),
    )
    def job_action(job_id: int, action: str) -> dict[str, Any]:
        supervisor = get_studio().supervisor
        actions = {"cancel": supervisor.cancel, "pause": supervisor.pause, "resume": supervisor.resume}
        if action not in actions:
            raise NotFound(f"Unknown job action {action!r}", hint="use cancel, pause or resume")
        actions[action](job_id)
        return {"id": job_id, "status": supervisor.job(job_id)["status"], "requested": action}

    return router
