"""The "Chat & label" tab of the labeling app, built section by section.

Each section builder of :mod:`app.label_sections` lays out one part of the tab and returns its widgets; each
``_wire`` function here connects one part's events to core. The widgets are collected in
:class:`app.label_sections.ChatTab`, the one thing the wiring functions share. Thin: every rule lives in core
(labeling, queue, identity, generate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app import label_sections as sections
from app.auth import label_user
from app.forms import (
    GENERATION_CONCURRENCY,
    build_config,
    config_names,
    gradio_errors,
    name_inputs,
    screen_pace,
    waiting_notice,
)
from app.label_sections import (
    FREE_CHAT,
    SAME_VERSION,
    THUMBS,
    ChatTab,
    StudioGetter,
    empty_state,
    policy_choices,
)
from core.chain import views as chain_views
from core.chain.wallet import linked_address
from core.compare.blind import blind_status
from core.compare.report import badges as report_badges
from core.errors import StudioError
from core.labeling import queue as prompt_queue
from core.labeling.identity import User
from core.labeling.votes import (
    OUTCOME_LABELS,
    CandidateIn,
    Vote,
    active_aspects,
    add_user_message,
    candidate_texts,
    history,
    new_conversation,
    record_vote,
    save_pair,
    undo_last_vote,
)
from core.serving.generate import SamplingParams
from core.serving.policies import newest_version
from core.studio import Studio


def create_label_tab(get_studio: StudioGetter) -> tuple[Callable, list[Any], tuple[Any, Callable]]:
    """Chat-and-label tab: the sections, then their events. Returns the page-load refresh with its outputs, and the
    blind-check button with its handler (the app shell wires it to the tabs)."""
    studio = get_studio()
    aspects = [a["name"] for a in active_aspects(studio.db)]
    state = gr.State(empty_state())
    with gr.Row():
        with gr.Column(scale=4):
            parts = {
                **sections.prompt_source(studio),
                **sections.versions(studio),
                **sections.pair_and_vote(),
                **sections.feedback(aspects),
                **sections.message_box(),
            }
        with gr.Column(scale=2):
            parts |= sections.side_panel(studio)
    tab = ChatTab(state=state, aspects=aspects, **parts)
    _wire_chat(tab, get_studio)
    _wire_votes(tab, get_studio)
    _wire_queue(tab, get_studio)
    rewards = _wire_rewards(tab, get_studio)
    return (
        _page_load(tab, get_studio, rewards),
        [
            tab.queue_pick,
            tab.guidelines_md,
            tab.policy_a,
            tab.policy_b,
            tab.newest_md,
            tab.against_parent_btn,
            tab.rewards_md,
        ],
        (tab.against_parent_btn, _label_newest(get_studio)),
    )


# --- events ------------------------------------------------------------------------------------------------------


def _wire_chat(tab: ChatTab, get_studio: StudioGetter) -> None:
    """Send a message (button or Enter) and regenerate: a fresh pair streams in and is stored."""

    def generate(st: dict[str, Any], name_a: str, name_b: str, *sampling_values: Any) -> Iterator[tuple]:
        """Stream a fresh pair for the open user turn and store it."""
        s = get_studio()
        sampling = build_config(SamplingParams, sampling_values).validate()
        messages = history(s.db, st["conversation_id"])
        updates, (id_a, id_b) = s.pair_stream(
            messages, sampling, name_a, name_a if name_b in (SAME_VERSION, None) else name_b, interval=screen_pace(s)
        )
        final = None
        for update in updates:
            final = update
            notice = waiting_notice(update.ahead) if update.ahead is not None else gr.update()
            yield update.text_a, update.text_b, notice
        assert final is not None  # a pair stream always ends with the finished pair
        ids = save_pair(
            s.db,
            st["conversation_id"],
            st["turn"],
            st["prompt_id"],
            CandidateIn(final.text_a, id_a, final.latency_ms, final.new_tokens_a, final.cut[0]),
            CandidateIn(final.text_b, id_b, final.latency_ms, final.new_tokens_b, final.cut[1]),
            sampling.to_dict(),
            final.truncated_tokens,
        )
        st["candidates"] = list(ids)
        notice = "Pick the better answer (keys 1-4)." + (
            f" Note: your message was longer than the model's context: the oldest {final.truncated_tokens} "
            "tokens were left out of what the model saw."
            if final.truncated_tokens
            else ""
        )
        notice += final.cut_note(sampling.max_new_tokens)
        yield final.text_a, final.text_b, notice

    def send(
        text: str, st: dict[str, Any], name_a: str, name_b: str, request: gr.Request, *sampling_values: Any
    ) -> Iterator[tuple]:
        if not text or not text.strip():
            raise gr.Error("Type a message first: empty messages are not sent.")
        if st["candidates"]:
            raise gr.Error("Vote on the two answers first (or undo), then write the next message.")
        with gradio_errors():
            s = get_studio()
            user = label_user(s, request, "send")
            if st["conversation_id"] is None:
                st["conversation_id"] = new_conversation(s.db, user, s.base_policy_id, st["prompt_id"])
            st["turn"] = add_user_message(s.db, user, st["conversation_id"], text)
            yield "", tab.chat_view(get_studio, st), "", "", "Generating two answers…", st
            for a, b, note_text in generate(st, name_a, name_b, *sampling_values):
                yield gr.update(), gr.update(), a, b, note_text, st

    def regenerate(
        st: dict[str, Any], name_a: str, name_b: str, request: gr.Request, *sampling_values: Any
    ) -> Iterator[tuple]:
        if st["conversation_id"] is None or st["turn"] is None:
            raise gr.Error("Nothing to regenerate: send a message first.")
        with gradio_errors():
            label_user(get_studio(), request, "regenerate")
            st["candidates"] = None
            for a, b, note_text in generate(st, name_a, name_b, *sampling_values):
                yield a, b, note_text, st

    sampling_and_state = [tab.state, tab.policy_a, tab.policy_b, *tab.sampling_inputs]
    send_outputs = [tab.message, tab.chatbot, tab.cand_a, tab.cand_b, tab.status, tab.state]
    name_inputs(send, config_names(SamplingParams))
    name_inputs(regenerate, config_names(SamplingParams))
    for trigger in (tab.send_btn.click, tab.message.submit):
        enter = trigger == tab.message.submit
        trigger(
            send,
            [tab.message, *sampling_and_state],
            send_outputs,
            api_name="send_on_enter" if enter else "send",
            api_visibility="private" if enter else "public",
            **GENERATION_CONCURRENCY,
        )
    tab.regen_btn.click(
        regenerate,
        sampling_and_state,
        [tab.cand_a, tab.cand_b, tab.status, tab.state],
        api_name="regenerate",
        **GENERATION_CONCURRENCY,
    )


def _wire_votes(tab: ChatTab, get_studio: StudioGetter) -> None:
    """The four vote buttons (with the optional feedback), undo, and starting a gold answer from A or B."""
    aspects = tab.aspects
    clear_feedback: list[Any] = [gr.update(value=None)] * (len(tab.rating_inputs) + 2) + [[], "", "", None]
    feedback_names = [(f"{aspect}_{side}", None) for aspect in aspects for side in ("a", "b")] + [
        ("thumbs_a", None),
        ("thumbs_b", None),
        ("flags", None),
        ("note", None),
        ("gold_answer", None),
        ("gold_side", None),
    ]

    def make_vote(outcome: str) -> Callable:
        def vote(st: dict[str, Any], request: gr.Request, *values: Any) -> tuple:
            if not st["candidates"]:
                raise gr.Error("There is no pair to vote on yet: send a message first.")
            *ratings, t_a, t_b, flag_values, note_text, gold_text, side = values
            scores: dict[str, dict[str, int]] = {"a": {}, "b": {}}
            for i, aspect in enumerate(aspects):
                for j, s_name in enumerate(("a", "b")):
                    if ratings[2 * i + j] is not None:
                        scores[s_name][aspect] = int(ratings[2 * i + j])
            thumbs = {k: v == THUMBS[0] for k, v in (("a", t_a), ("b", t_b)) if v}
            with gradio_errors():
                s = get_studio()
                user = label_user(s, request, f"vote_{outcome}")
                receipt = record_vote(
                    s.db,
                    user,
                    Vote(
                        candidate_a=st["candidates"][0],
                        candidate_b=st["candidates"][1],
                        outcome=outcome,
                        ratings={k: v for k, v in scores.items() if v},
                        thumbs=thumbs,
                        gold_text=gold_text or None,
                        gold_side=side,
                        note=note_text or None,
                        flags=tuple(flag_values or ()),
                    ),
                )
            saved = f"✓ Saved: **{OUTCOME_LABELS[outcome]}** (vote #{receipt.preference_id})" + (
                "" if receipt.created else " — already saved, not counted twice"
            )
            if receipt.continuation is None:
                saved += ". Both bad and no gold answer: regenerate the pair or write a gold answer."
            elif st["prompt_id"] is not None:
                saved += " Press **Next prompt** for the next one."
            st["candidates"] = None
            return (tab.chat_view(get_studio, st), "", "", saved, st, *clear_feedback)

        return vote

    def undo(st: dict[str, Any], request: gr.Request) -> tuple:
        with gradio_errors():
            s = get_studio()
            undone = undo_last_vote(s.db, label_user(s, request, "undo"))
            texts = candidate_texts(s.db, [undone.candidate_a, undone.candidate_b])
        st.update(
            conversation_id=undone.conversation_id,
            turn=undone.turn,
            candidates=[undone.candidate_a, undone.candidate_b],
        )
        return (
            tab.chat_view(get_studio, st),
            texts.get(undone.candidate_a, ""),
            texts.get(undone.candidate_b, ""),
            f"Vote #{undone.preference_id} undone: vote again.",
            st,
        )

    def gold_from(side: str) -> Callable:
        def edit(st: dict[str, Any], request: gr.Request) -> tuple[str, str]:
            """Start the gold answer from answer A or B of the current pair."""
            with gradio_errors():
                s = get_studio()
                label_user(s, request, f"gold_from_{side}")
            return _candidate_text(s, st, "ab".index(side)), side

        return edit

    for outcome, button in tab.vote_buttons.items():
        button.click(
            name_inputs(make_vote(outcome), feedback_names),
            [tab.state, *tab.feedback_inputs],
            [tab.chatbot, tab.cand_a, tab.cand_b, tab.status, tab.state, *tab.feedback_inputs],
            api_name=f"vote_{outcome}",
        )
    tab.undo_btn.click(undo, [tab.state], [tab.chatbot, tab.cand_a, tab.cand_b, tab.status, tab.state], api_name="undo")
    # widget helpers, not API endpoints: hidden from API clients
    tab.edit_a.click(
        gold_from("a"), [tab.state], [tab.gold, tab.gold_side], api_name="gold_from_a", api_visibility="private"
    )
    tab.edit_b.click(
        gold_from("b"), [tab.state], [tab.gold, tab.gold_side], api_name="gold_from_b", api_visibility="private"
    )


def _wire_queue(tab: ChatTab, get_studio: StudioGetter) -> None:
    """Prompts from a queue (next, skip, with the labeler's progress) and a new free chat."""

    def queue_id(name: str) -> int:
        for q in prompt_queue.list_queues(get_studio().db):
            if q["name"] == name:
                return q["id"]
        raise gr.Error("Pick a prompt queue first (Free chat has no queue).")

    def progress_text(s: Studio, user: User, qid: int) -> str:
        p = prompt_queue.progress(s.db, user, qid)
        return (
            f"**{p['today']} / {p['daily_goal']} today** · {p['done']} of {p['prompts']} prompts "
            f"in this queue done by you"
        )

    def next_item(name: str, st: dict[str, Any], request: gr.Request) -> tuple:
        if st["candidates"]:
            raise gr.Error("Vote on the current pair first (or skip it).")
        with gradio_errors():
            s = get_studio()
            user = label_user(s, request, "next_prompt")
            qid = queue_id(name)
            item = prompt_queue.next_prompt(s.db, user, qid)
            if item is None:
                return "", empty_state(), [], "Nothing left for you in this queue.", progress_text(s, user, qid)
            st = empty_state() | {"prompt_id": item["id"]}
            return item["text"], st, [], "Press **Send** to get two answers.", progress_text(s, user, qid)

    def skip(name: str, st: dict[str, Any], request: gr.Request) -> tuple:
        if st["prompt_id"] is None:
            raise gr.Error("Nothing to skip: take a prompt from a queue first.")
        with gradio_errors():
            s = get_studio()
            prompt_queue.skip_prompt(s.db, label_user(s, request, "skip"), st["prompt_id"])
        return next_item(name, empty_state(), request)

    def new_chat(request: gr.Request) -> tuple:
        with gradio_errors():
            label_user(get_studio(), request, "new_chat")
        return empty_state(), [], "", "", "", ""

    queue_outputs = [tab.message, tab.state, tab.chatbot, tab.status, tab.progress_md]
    tab.next_btn.click(next_item, [tab.queue_pick, tab.state], queue_outputs, api_name="next_prompt")
    tab.skip_btn.click(skip, [tab.queue_pick, tab.state], queue_outputs, api_name="skip")
    tab.new_chat_btn.click(
        new_chat, None, [tab.state, tab.chatbot, tab.cand_a, tab.cand_b, tab.status, tab.message], api_name="new_chat"
    )


def _wire_rewards(tab: ChatTab, get_studio: StudioGetter) -> Callable[[gr.Request], str]:
    """The labeler's side of proof-of-contribution: what is recorded, anchored and claimable."""

    def rewards(request: gr.Request) -> str:
        try:
            s = get_studio()
            return rewards_text(s, label_user(s, request, "my_rewards"))
        except StudioError as exc:
            return f"Could not load your rewards: {exc}"

    tab.rewards_btn.click(rewards, None, tab.rewards_md, api_name="my_rewards")
    return rewards


def _page_load(tab: ChatTab, get_studio: StudioGetter, rewards: Callable[[gr.Request], str]) -> Callable:
    """The tab's part of the page load: queues, guidelines and versions added since the app was built (with their
    "what changed" badge), the offer of the newest version's blind check, and the labeler's rewards."""

    def refresh() -> tuple:
        s = get_studio()
        names = [FREE_CHAT] + [q["name"] for q in prompt_queue.list_queues(s.db)]
        policies = policy_choices(s)
        newest = newest_version(s.db)
        status = blind_status(s.db) if newest else None
        offer = (
            gr.update(
                visible=True,
                value=f"Blind check: {newest['name']} against {newest['parent']} "
                f"({status.votes} of {status.target} votes)",
            )
            if newest is not None and status is not None and status.open
            else gr.update(visible=False)
        )
        text = ""
        if newest:
            badge = report_badges(s.db).get(newest["name"])
            text = f"Newest version: **{newest['name']}** (from {newest['parent']})" + (
                f" · {badge}" if badge else " · report not ready yet"
            )
        return (
            gr.update(choices=names),
            prompt_queue.guidelines(s.db),
            gr.update(choices=policies),
            gr.update(choices=[(SAME_VERSION, SAME_VERSION)] + policies),
            text,
            offer,
        )

    def refresh_all(request: gr.Request) -> tuple:
        """Nothing for a visitor who has not signed in yet (a Space with Hugging Face sign-in)."""
        try:
            label_user(get_studio(), request, "page_load")
        except StudioError:
            return (
                gr.update(),
                "",
                gr.update(),
                gr.update(),
                "**Sign in to label** (the button above).",
                gr.update(visible=False),
                "",
            )
        return (*refresh(), rewards(request))

    return refresh_all


def _label_newest(get_studio: StudioGetter) -> Callable:
    def label_newest(request: gr.Request) -> Any:
        """One click to the newest version's blind check (the Arena tab): the new version against its parent on
        held-out prompts, sides at random and names hidden until the vote."""
        with gradio_errors():
            label_user(get_studio(), request, "label_newest")
        if newest_version(get_studio().db) is None:
            raise gr.Error("No trained version yet: train one on the console's Train page.")
        return gr.Tabs(selected="arena")

    return label_newest


def rewards_text(studio: Studio, user: User) -> str:
    """Counts by status and token amounts; contributions appear a few seconds after the vote (chain worker)."""
    counts = chain_views.status_counts(studio.db, user.id)
    amounts = chain_views.amounts_of(studio.db, user.id)
    address = linked_address(studio.db, user.id)
    wallet = (
        f"Wallet `{address[:6]}…{address[-4:]}`"
        if address
        else "No wallet linked yet: link one on the [Wallet page](/wallet) to claim."
    )
    total = sum(counts.values())
    return (
        f"**{total} contribution{'' if total == 1 else 's'}** · {counts['pending']} waiting for a batch · "
        f"{counts['batched']} batched · {counts['anchored']} anchored on chain\n\n"
        f"Tokens: **{chain_views.tokens(amounts['claimable'])} claimable** · "
        f"{chain_views.tokens(amounts['claimed'])} claimed · "
        f"{chain_views.tokens(amounts['pending'] + amounts['batched'])} on the way\n\n"
        f"{wallet} Proofs and claims: [Wallet page](/wallet)."
    )


def _candidate_text(studio: Studio, st: dict[str, Any], index: int) -> str:
    if not st["candidates"]:
        raise gr.Error("There is no candidate to edit yet.")
    candidate_id = st["candidates"][index]
    return candidate_texts(studio.db, [candidate_id]).get(candidate_id) or ""
