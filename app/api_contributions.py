"""REST routes of a labeler's contributions and their Merkle proofs (a labeler reads their own, admins anyone's).
One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from app import access
from app.schemas import ContributionProof, Contributions, answers
from core.chain.public import contributions_report, proof_report
from core.errors import PermissionDenied
from core.labeling.identity import User

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def contribution_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    def own_or_admin(request: Request, name: str) -> User:
        """A labeler reads only their own contributions; admins read anyone's."""
        user = request.state.user
        if request.state.scope == access.OWN and user.name != name:
            raise PermissionDenied(
                "You can only see your own contributions", hint=f"ask for /api/contributions/{user.name}"
            )
        return user

    @router.get(
        "/contributions/{name}",
        **answers(
            Contributions,
            404,
            why={
                403: "A labeler asked for someone else's contributions (code forbidden)",
                404: "No such user (code not_found)",
            },
        ),
    )
    def contributions(name: str, request: Request) -> dict[str, Any]:
        own_or_admin(request, name)
        return contributions_report(get_studio().db, name)

    @router.get(
        "/contributions/{name}/proof/{contribution_id}",
        **answers(
            ContributionProof,
            404,
            409,
            422,
            why={
                403: "A labeler asked for someone else's proof (code forbidden)",
                404: "No such user, or no such contribution of theirs (code not_found)",
                409: (
                    "The contribution is not in a batch yet, or its rows do not give the stored root (code"
                    " proof_invalid)"
                ),
                422: "contribution_id is not an integer (code invalid_input)",
            },
        ),
    )
    def contribution_proof(name: str, contribution_id: int, request: Request) -> dict[str, Any]:
        """Everything needed to verify one contribution against the root on the chain, without the studio."""
        user = own_or_admin(request, name)
        return proof_report(get_studio().db, name, contribution_id, with_secret=user.is_admin or user.name == name)

    return router
