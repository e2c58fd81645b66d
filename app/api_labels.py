"""REST routes of labels sent by clients: scored feedback on one answer and preference votes (the hot path).
One router, included by :func:`app.api.create_api`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.schemas import WRITES, FeedbackIn, Saved, VoteIn, answers
from core.errors import PermissionDenied
from core.labeling.feedback import Feedback, record_feedback
from core.labeling.identity import User
from core.labeling.votes import Vote, labeled_pair, write_labeled_pairs

if TYPE_CHECKING:  # a type only: core.studio imports torch
    from core.studio import Studio


def label_routes(get_studio: Callable[[], Studio]) -> APIRouter:
    router = APIRouter()

    @router.post("/feedback", status_code=201, **answers(Saved, 413, 422, *WRITES))
    def post_feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
        feedback = Feedback(
            prompt=body.prompt,
            response=body.response,
            score=body.score,
            run_id=body.run_id,
            notes=body.notes,
            source="api",
        )
        feedback_id, created = record_feedback(
            get_studio().db, feedback, api_user(request, body.labeler).id, body.idempotency_key
        )
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
            raise PermissionDenied(
                f"You are logged in as {user.name!r}: you cannot send labels as {labeler!r}",
                hint=f"leave out 'labeler' (or set it to {user.name!r}); labels are stored "
                "as the account that sends them",
            )
        return user

    @router.post("/votes", status_code=201, **answers(Saved, 413, 422, *WRITES))
    async def post_vote(body: VoteIn, request: Request) -> dict[str, Any]:
        """The hot path of a labeling session, so it stays on the event loop: no thread hand-off per
        vote, only an await on the group-commit future (acknowledged after the commit)."""
        db = get_studio().db
        vote = Vote(
            candidate_a=0,
            candidate_b=0,
            outcome=body.outcome,
            ratings=body.ratings,
            flags=tuple(body.flags),
            note=body.note,
            idempotency_key=body.idempotency_key,
            source="api",
        )

        def prepare() -> Any:
            user = api_user(request, body.labeler)
            return labeled_pair(db, user, body.prompt, body.answer_a, body.answer_b, vote, cut=(body.cut_a, body.cut_b))

        # vote checks without ratings need no I/O; aspect reads and a new labeler's row do
        slow = bool(body.ratings) or (body.labeler is not None and not get_studio().directory.team_mode)
        pair = await run_in_threadpool(prepare) if slow else prepare()
        receipt = await asyncio.wrap_future(db.submit_batched(write_labeled_pairs, pair))
        return {"id": receipt.preference_id, "status": "saved", "created": receipt.created}

    return router
