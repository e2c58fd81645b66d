"""The "Arena" tab of the labeling app: a blind A/B battle between two policy versions.

Thin: pairing, storage and ratings live in core.compare.arena (ratings: core.compare.leaderboard); this module
only wires widgets. A battle: the labeler types a prompt -> core.compare.arena picks two versions (few battles
and close ratings first) and randomises the sides -> both answer in ONE batched generate call (each row with
its own adapter) -> the labeler votes A / B / tie / both bad -> the vote is committed as a battle and as a
preference record (source 'arena') -> only then are the two names revealed. Until the vote the names exist only
in server-side session state; no output of the tab carries them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app.auth import label_user
from app.forms import (
    GENERATION_CONCURRENCY,
    build_config,
    components_for,
    config_names,
    gradio_errors,
    name_inputs,
    screen_pace,
    waiting_notice,
)
from core.compare import arena, blind
from core.errors import StudioError
from core.labeling.votes import OUTCOME_LABELS
from core.serving.generate import SamplingParams
from core.studio import Studio

HIDDEN = "The names stay hidden until you vote."


def create_arena_tab(get_studio: Callable[[], Studio]) -> tuple[Callable, list[Any]]:
    """Arena tab: the blind check of the newest version, a prompt box, two anonymous answers, four vote buttons,
    the reveal after the vote. Returns the page-load refresh of the blind-check offer and its outputs."""
    state = gr.State(None)  # the PendingBattle (server-side only), None when there is nothing to vote on
    gr.Markdown(
        "Two anonymous versions answer the same prompt. Vote for the better answer; you learn "
        "which versions they were after your vote. Every vote trains the leaderboard and the next "
        "version."
    )
    with gr.Row(equal_height=True):
        blind_md = gr.Markdown("", elem_id="blind-check")
        blind_btn = gr.Button(
            "Next blind-check pair  [n]", visible=False, size="sm", scale=0, elem_id="blind-check-start"
        )
    with gr.Row():
        prompt = gr.Textbox(
            placeholder="Ask both versions something… (Enter to start)", show_label=False, scale=6, max_lines=8
        )
        ask_btn = gr.Button("Start battle", variant="primary", scale=1)
    with gr.Row(equal_height=True):
        with gr.Column():
            gr.Markdown("**Assistant A**")
            answer_a = gr.Markdown(value="", container=True, elem_id="arena-a", elem_classes="candidate")
        with gr.Column():
            gr.Markdown("**Assistant B**")
            answer_b = gr.Markdown(value="", container=True, elem_id="arena-b", elem_classes="candidate")
    with gr.Row():
        vote_buttons = {
            o: gr.Button(
                f"{label}  [{i}]", elem_id=f"arena-vote-{o}", variant="primary" if o in ("a", "b") else "secondary"
            )
            for i, (o, label) in enumerate(OUTCOME_LABELS.items(), 1)
        }
    gr.Markdown(
        "Keys: **1**–**4** vote · **n** next blind-check pair (when the cursor is not in a text box)",
        elem_classes="key-hint",
    )
    status = gr.Markdown("", elem_id="arena-status")
    reveal = gr.Markdown("", elem_id="arena-reveal")
    with gr.Accordion("Sampling settings (the same for both versions)", open=False):
        sampling_inputs = components_for(SamplingParams)

    def ask(text: str, _pending: Any, request: gr.Request, *sampling_values: Any) -> Iterator[tuple]:
        with gradio_errors():  # an unvoted battle is simply dropped: nothing was stored for it
            s = get_studio()
            label_user(s, request, "arena_ask")
            text = arena.clean_prompt(text or "")
            name_a, name_b = arena.next_pair(s.db)
        yield from battle(s, text, name_a, name_b, sampling_values)

    def blind_pair(_pending: Any, request: gr.Request, *sampling_values: Any) -> Iterator[tuple]:
        """The next blind-check pair: the newest version against its parent on a held-out prompt, sides at
        random; the prompt shows in the prompt box, the names after the vote."""
        with gradio_errors():
            s = get_studio()
            text, name_a, name_b, _ = blind.next_blind_pair(s.db, label_user(s, request, "blind_check_next"))
        for answer_a_text, answer_b_text, notice, shown, pending in battle(s, text, name_a, name_b, sampling_values):
            yield text, answer_a_text, answer_b_text, notice, shown, pending

    def blind_offer(request: gr.Request) -> tuple:
        """On page load: how far the newest version's blind check is, and the button while it still asks (after a
        vote on a blind-check pair the reveal says where it stands; a click once it is decided says so)."""
        try:
            label_user(get_studio(), request, "blind_offer")
            status = blind.blind_status(get_studio().db)
        except StudioError:
            return "", gr.update(visible=False)
        if status is None:
            return "", gr.update(visible=False)
        return status.text(), gr.update(visible=status.open)

    def battle(s: Studio, text: str, name_a: str, name_b: str, sampling_values: tuple) -> Iterator[tuple]:
        with gradio_errors():
            sampling = build_config(SamplingParams, sampling_values).validate()
            updates, (id_a, id_b) = s.pair_stream(
                [{"role": "user", "content": text}], sampling, name_a, name_b, interval=screen_pace(s)
            )
            yield "", "", "Both versions are answering…", HIDDEN, None
            final = None
            for final in updates:
                notice = waiting_notice(final.ahead) if final.ahead is not None else gr.update()
                yield final.text_a, final.text_b, notice, gr.update(), None
        assert final is not None  # a pair stream always ends with the finished pair
        pending = arena.PendingBattle(
            text,
            name_a,
            name_b,
            id_a,
            id_b,
            final.text_a,
            final.text_b,
            sampling.to_dict(),
            final.latency_ms,
            (final.new_tokens_a, final.new_tokens_b),
            final.cut,
        )
        notice = "Which answer is better? Vote to reveal the versions."
        if final.truncated_tokens:
            notice += (
                f" Note: the prompt was longer than the model's context: its first {final.truncated_tokens} "
                "tokens were left out."
            )
        notice += final.cut_note(sampling.max_new_tokens)
        yield final.text_a, final.text_b, notice, HIDDEN, pending

    def make_vote(outcome: str) -> Callable:
        def vote(pending: Any, request: gr.Request) -> tuple:
            if pending is None:
                raise gr.Error("There is no battle to vote on: type a prompt and start one.")
            with gradio_errors():
                s = get_studio()
                receipt = arena.record_battle(s.db, label_user(s, request, f"arena_vote_{outcome}"), pending, outcome)
            saved = f"✓ Saved: **{OUTCOME_LABELS[outcome]}** (battle #{receipt.battle_id})" + (
                "" if receipt.created else " — already saved, not counted twice"
            )
            names = f"Revealed: **A** was **{receipt.model_a}** · **B** was **{receipt.model_b}**"
            try:
                status = blind.blind_status(s.db)
            except StudioError:
                status = None
            if status is not None and {receipt.model_a, receipt.model_b} == {status.version, status.against}:
                names += f"\n\n{status.text()}"
            return saved + ". Type a new prompt for the next battle.", names, None

        return vote

    ask_inputs = [prompt, state, *sampling_inputs]
    ask_outputs = [answer_a, answer_b, status, reveal, state]
    name_inputs(ask, config_names(SamplingParams))
    ask_btn.click(ask, ask_inputs, ask_outputs, api_name="arena_ask", **GENERATION_CONCURRENCY)
    prompt.submit(
        ask, ask_inputs, ask_outputs, api_name="arena_ask_on_enter", api_visibility="private", **GENERATION_CONCURRENCY
    )
    for outcome, button in vote_buttons.items():
        button.click(make_vote(outcome), [state], [status, reveal, state], api_name=f"arena_vote_{outcome}")
    name_inputs(blind_pair, config_names(SamplingParams))
    blind_btn.click(
        blind_pair,
        [state, *sampling_inputs],
        [prompt, *ask_outputs],
        api_name="blind_check_next",
        **GENERATION_CONCURRENCY,
    )
    return blind_offer, [blind_md, blind_btn]
