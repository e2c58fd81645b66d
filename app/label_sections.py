"""The "Chat & label" tab's layout: its sections' widgets, the :class:`ChatTab` that collects them, and its words.

Each ``_section`` builder lays out one part of the tab and returns its widgets by name; :mod:`app.label_chat`
builds the tab from them and wires their events to core. Split from the wiring so each reads on one screen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.forms import components_for
from core.compare.report import badges as report_badges
from core.labeling import queue as prompt_queue
from core.labeling.votes import FLAGS, OUTCOME_LABELS, history
from core.serving.generate import SamplingParams
from core.serving.policies import BASE_POLICY, servable_policies
from core.studio import Studio

FREE_CHAT = "Free chat"
SAME_VERSION = "(same version: two samples)"
THUMBS = ["👍", "👎"]  # the values the API takes and returns; the radio shows words (see THUMB_CHOICES)
# Words, not emoji, on screen: emoji render as boxes where the viewer has no emoji font.
THUMB_CHOICES = [("Up", THUMBS[0]), ("Down", THUMBS[1])]
SCORES = ["1", "2", "3", "4", "5"]
StudioGetter = Callable[[], Studio]


def empty_state() -> dict[str, Any]:
    return {"conversation_id": None, "turn": None, "candidates": None, "prompt_id": None}


@dataclass
class ChatTab:
    """Every widget of the tab (by section), and its session state."""

    state: Any
    aspects: list[str]
    # prompt source
    queue_pick: Any
    next_btn: Any
    skip_btn: Any
    new_chat_btn: Any
    # versions
    newest_md: Any
    against_parent_btn: Any
    policy_a: Any
    policy_b: Any
    # the pair and the vote
    progress_md: Any
    chatbot: Any
    cand_a: Any
    cand_b: Any
    vote_buttons: dict[str, Any]
    undo_btn: Any
    status: Any
    # optional feedback
    rating_inputs: list[Any]
    thumbs_a: Any
    thumbs_b: Any
    flags: Any
    note: Any
    edit_a: Any
    edit_b: Any
    gold_side: Any
    gold: Any
    # the message box
    message: Any
    send_btn: Any
    regen_btn: Any
    sampling_inputs: list[Any]
    # the side panel
    guidelines_md: Any
    rewards_md: Any
    rewards_btn: Any

    @property
    def feedback_inputs(self) -> list[Any]:
        return [*self.rating_inputs, self.thumbs_a, self.thumbs_b, self.flags, self.note, self.gold, self.gold_side]

    def chat_view(self, get_studio: StudioGetter, st: dict[str, Any]) -> list[dict[str, str]]:
        return history(get_studio().db, st["conversation_id"]) if st["conversation_id"] else []


def prompt_source(studio: Studio) -> dict[str, Any]:
    with gr.Row():
        queue_pick = gr.Dropdown(
            label="Prompt source",
            value=FREE_CHAT,
            scale=2,
            choices=[FREE_CHAT] + [q["name"] for q in prompt_queue.list_queues(studio.db)],
        )
        next_btn = gr.Button("Next prompt  [n]", scale=1, elem_id="next-prompt")
        skip_btn = gr.Button("Skip", scale=1)
        new_chat_btn = gr.Button("New chat", scale=1)
    return dict(queue_pick=queue_pick, next_btn=next_btn, skip_btn=skip_btn, new_chat_btn=new_chat_btn)


def versions(studio: Studio) -> dict[str, Any]:
    policy_names = policy_choices(studio)
    with gr.Row():
        newest_md = gr.Markdown("", elem_id="newest-version")
        against_parent_btn = gr.Button(
            "Blind check of the newest version", visible=False, size="sm", elem_id="label-newest"
        )
    with gr.Row():
        # custom values allowed: versions trained after the page was built are valid (checked in core)
        policy_a = gr.Dropdown(
            policy_names,
            value=BASE_POLICY,
            label="Version",
            allow_custom_value=True,
            info="the version that answers (both candidates are its samples)",
        )
        policy_b = gr.Dropdown(
            [(SAME_VERSION, SAME_VERSION)] + policy_names,
            value=SAME_VERSION,
            label="Compare with",
            allow_custom_value=True,
            info="pick another version to get one answer from each",
        )
    return dict(newest_md=newest_md, against_parent_btn=against_parent_btn, policy_a=policy_a, policy_b=policy_b)


def pair_and_vote() -> dict[str, Any]:
    progress_md = gr.Markdown("")
    chatbot = gr.Chatbot(label="Conversation", height=320, elem_id="conversation")
    with gr.Row(equal_height=True):
        with gr.Column():
            gr.Markdown("**Answer A**")
            cand_a = gr.Markdown(value="", elem_classes="candidate", container=True, elem_id="cand-a")
        with gr.Column():
            gr.Markdown("**Answer B**")
            cand_b = gr.Markdown(value="", elem_classes="candidate", container=True, elem_id="cand-b")
    with gr.Row(elem_id="vote-row"):
        vote_buttons = {
            o: gr.Button(
                f"{OUTCOME_LABELS[o]}  [{i}]",
                elem_id=f"vote-{o}",
                variant="primary" if o in ("a", "b") else "secondary",
            )
            for i, o in enumerate(OUTCOME_LABELS, 1)
        }
        undo_btn = gr.Button("Undo last vote  [u]", elem_id="undo-vote", variant="secondary", size="sm")
    gr.Markdown(
        "Keys: **1**–**4** vote · **n** next prompt · **u** undo the last vote (when the cursor is not in a text box)",
        elem_classes="key-hint",
    )
    status = gr.Markdown("", elem_id="save-status")
    return dict(
        progress_md=progress_md,
        chatbot=chatbot,
        cand_a=cand_a,
        cand_b=cand_b,
        vote_buttons=vote_buttons,
        undo_btn=undo_btn,
        status=status,
    )


def feedback(aspects: list[str]) -> dict[str, Any]:
    with gr.Accordion("Ratings, thumbs, flags, note and gold edit (optional)", open=False):
        rating_inputs = []
        for aspect in aspects:
            with gr.Row():
                rating_inputs.append(gr.Radio(SCORES, label=f"{aspect} · A"))
                rating_inputs.append(gr.Radio(SCORES, label=f"{aspect} · B"))
        with gr.Row():
            thumbs_a = gr.Radio(THUMB_CHOICES, label="Thumbs · A")
            thumbs_b = gr.Radio(THUMB_CHOICES, label="Thumbs · B")
        flags = gr.CheckboxGroup(list(FLAGS), label="Flags")
        note = gr.Textbox(label="Note", lines=1)
        with gr.Row():
            edit_a = gr.Button("Edit A into gold")
            edit_b = gr.Button("Edit B into gold")
        gold_side = gr.State(None)
        gold = gr.Textbox(label="Gold answer (continues the conversation)", lines=4)
    return dict(
        rating_inputs=rating_inputs,
        thumbs_a=thumbs_a,
        thumbs_b=thumbs_b,
        flags=flags,
        note=note,
        edit_a=edit_a,
        edit_b=edit_b,
        gold_side=gold_side,
        gold=gold,
    )


def message_box() -> dict[str, Any]:
    with gr.Row():
        message = gr.Textbox(placeholder="Write a message… (Enter to send)", show_label=False, scale=6, max_lines=8)
        send_btn = gr.Button("Send", variant="primary", scale=1)
        regen_btn = gr.Button("Regenerate pair", scale=1)
    with gr.Accordion("Sampling settings", open=False):
        sampling_inputs = components_for(SamplingParams)
    return dict(message=message, send_btn=send_btn, regen_btn=regen_btn, sampling_inputs=sampling_inputs)


def side_panel(studio: Studio) -> dict[str, Any]:
    with gr.Accordion("Guidelines", open=True):
        guidelines_md = gr.Markdown(prompt_queue.guidelines(studio.db))
    with gr.Accordion("My contributions and rewards", open=False):
        rewards_md = gr.Markdown("", elem_id="my-rewards")
        rewards_btn = gr.Button("Refresh", size="sm")
    return dict(guidelines_md=guidelines_md, rewards_md=rewards_md, rewards_btn=rewards_btn)


def policy_choices(studio: Studio) -> list[tuple[str, str]]:
    """(label, name) for the version pickers: each trained version with its "what changed" badge."""
    marks = report_badges(studio.db)
    return [
        (f"{p['name']} · {marks[p['name']]}" if p["name"] in marks else p["name"], p["name"])
        for p in servable_policies(studio.db)
    ]
