"""REST routes of the backup (admins only, see app.access): its state and snapshots, a snapshot now, and
rewriting its history after a redaction. One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from app.schemas import BackupInfo, BackupSnapshot, answers

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def backup_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.get("/backup", **answers(BackupInfo))
    def backup_info() -> dict[str, Any]:
        """The backup's state and snapshots (admins); without a configured target, the local ones in the data dir."""
        studio = get_studio()
        service = studio.backup_service()
        return {
            "configured": studio.backup is not None,
            "status": service.status(),
            "snapshots": [vars(s) for s in service.target.snapshots()],
        }

    @router.post(
        "/backup",
        **answers(
            BackupSnapshot,
            404,
            409,
            502,
            503,
            why={
                404: "The backup repo is out of the token's reach (code hub_not_found)",
                409: "Someone else changed the backup repo at the same time (code hub_conflict): try again",
                503: "The Hub could not be reached (code hub_unreachable); the background backup retries",
            },
        ),
    )
    def backup_now(request: Request) -> dict[str, Any]:
        """Take a snapshot now (admins): every table, adapters and run files, to the configured target."""
        snapshot = get_studio().backup_service().backup_now(f"asked by {request.state.user.name}")
        return vars(snapshot)

    @router.post(
        "/backup/rewrite-history",
        **answers(
            BackupSnapshot,
            404,
            409,
            502,
            503,
            why={
                404: "The backup repo is out of the token's reach (code hub_not_found)",
                409: "Someone else changed the backup repo at the same time (code hub_conflict): try again",
                503: "The Hub could not be reached (code hub_unreachable)",
            },
        ),
    )
    def rewrite_backup_history() -> dict[str, Any]:
        """Drop every older snapshot (admins): after a redaction, older snapshots still hold the text."""
        service = get_studio().backup_service()
        service.rewrite_history()
        return vars(service.target.snapshots()[0])

    return router
