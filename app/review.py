"""The "Review" tab of the labeling app: people check the pairs an AI labeled (core.labeling.review).

Thin: choosing the next pair and storing the vote live in core.labeling.review. The AI's verdict is revealed after the
vote unless the reviewer asks to see it first (seeing it first anchors people to it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from app.auth import label_user
from app.forms import gradio_errors
from core.labeling import review
from core.labeling.votes import OUTCOME_LABELS
from core.studio import Studio

EMPTY = "Nothing to review: every pair an AI labeled has your vote. AI judges add pairs from the console's Data page."


def _conversation(prompt: list[dict[str, str]]) -> str:
    return "\n\n".join(f"**{m['role']}**: {m['content']}" for m in prompt) or "_(no prompt)_"


def _verdict(item: review.ReviewItem) -> str:
    said = OUTCOME_LABELS.get(item.ai_outcome, item.ai_outcome)
    confidence = "" if item.ai_confidence is None else f" (confidence {item.ai_confidence:.2f})"
    text = f"The AI judge **{item.judge}** said: **{said}**{confidence}"
    if item.critique:
        text += f"\n\nThe critique that led to answer B: _{item.critique}_"
    return text


def create_review_tab(get_studio: Callable[[], Studio]) -> None:
    """Review tab: the pair, four vote buttons, the AI's verdict after the vote (or before, if asked)."""
    state = gr.State(None)  # the ReviewItem being shown, None when there is nothing to vote on
    gr.Markdown(
        "Pairs an AI judge labeled. Vote as you would in the chat: your vote is stored as yours and "
        "measures how far the judge can be trusted."
    )
    with gr.Row():
        next_btn = gr.Button("Next pair  [n]", variant="primary", scale=1, elem_id="review-next")
        show_first = gr.Checkbox(False, label="Show the AI's verdict before I vote", scale=3)
    conversation = gr.Markdown("", container=True, elem_id="review-prompt")
    with gr.Row(equal_height=True):
        with gr.Column():
            gr.Markdown("**Answer A**")
            answer_a = gr.Markdown("", container=True, elem_id="review-a", elem_classes="candidate")
        with gr.Column():
            gr.Markdown("**Answer B**")
            answer_b = gr.Markdown("", container=True, elem_id="review-b", elem_classes="candidate")
    with gr.Row():
        buttons = {
            o: gr.Button(
                f"{label}  [{i}]", elem_id=f"review-vote-{o}", variant="primary" if o in ("a", "b") else "secondary"
            )
            for i, (o, label) in enumerate(OUTCOME_LABELS.items(), 1)
        }
    gr.Markdown(
        "Keys: **1**–**4** vote · **n** next pair (when the cursor is not in a text box)", elem_classes="key-hint"
    )
    status = gr.Markdown("", elem_id="review-status")
    verdict = gr.Markdown("", elem_id="review-verdict")

    def take_next(reveal: bool, request: gr.Request) -> tuple:
        with gradio_errors():
            s = get_studio()
            item = review.next_item(s.db, label_user(s, request, "review_next"))
        if item is None:
            return "", "", "", EMPTY, "", None
        seen = (
            f"{item.human_votes} person(s) reviewed it before you." if item.human_votes else "Nobody reviewed it yet."
        )
        return (
            _conversation(item.prompt),
            item.text_a,
            item.text_b,
            f"Which answer is better? {seen}",
            _verdict(item) if reveal else "The AI's verdict shows after your vote.",
            item,
        )

    def make_vote(outcome: str) -> Callable:
        def vote(item: Any, reveal: bool, request: gr.Request) -> tuple:
            if item is None:
                raise gr.Error("There is no pair to vote on: press Next pair.")
            with gradio_errors():
                s = get_studio()
                user = label_user(s, request, f"review_vote_{outcome}")
                review.record_review(s.db, user, item.candidate_a, item.candidate_b, outcome, saw_ai_first=reveal)
            agreed = "you agree" if item.ai_outcome == outcome else "you disagree"
            return (
                f"✓ Saved: **{OUTCOME_LABELS[outcome]}** ({agreed} with the AI). Press Next pair.",
                _verdict(item),
                None,
            )

        return vote

    next_btn.click(
        take_next, [show_first], [conversation, answer_a, answer_b, status, verdict, state], api_name="review_next"
    )
    for outcome, button in buttons.items():
        button.click(
            make_vote(outcome), [state, show_first], [status, verdict, state], api_name=f"review_vote_{outcome}"
        )
