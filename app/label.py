"""The Gradio app mounted at ``/label``: chat with a policy, see two candidates, vote, rate, edit.

Thin: every rule lives in core (labeling, queue, identity, generate); this module only wires widgets.
A turn: the labeler sends a message -> two candidates stream side by side from ONE batched generate
call -> the labeler picks A / B / tie / both bad (keys 1-4), optionally with ratings, thumbs, a gold
edit, flags and a note -> the vote is committed -> the picked (or edited) answer continues the chat.
"""
import html
import json
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app.arena import create_arena_tab
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
from app.review import create_review_tab
from core.chain import views as chain_views
from core.chain.wallet import linked_address
from core.compare.blind import blind_status
from core.compare.report import badges as report_badges
from core.errors import StudioError
from core.labeling import queue as prompt_queue
from core.labeling.identity import User, oauth_configured
from core.labeling.votes import (
    FLAGS,
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
from core.serving.policies import BASE_POLICY, newest_version, servable_policies
from core.studio import Studio

FREE_CHAT = "Free chat"
SAME_VERSION = "(same version: two samples)"
THUMBS = ["👍", "👎"]   # the values the API takes and returns; the radio shows words (see THUMB_CHOICES)
# Words, not emoji, on screen: emoji render as boxes where the viewer has no emoji font.
THUMB_CHOICES = [("Up", THUMBS[0]), ("Down", THUMBS[1])]
SCORES = ["1", "2", "3", "4", "5"]
CSS = """
.studio-header {margin-bottom: 0.25rem}
.candidate {min-height: 8rem}
#vote-row button {font-weight: 600}
.key-hint {opacity: 0.75; font-size: 0.9em}
.whoami {text-align: right}
"""
# Gradio's default theme declares Source Sans Pro at weights 400 and 600, but the 600 file Gradio 6.31 ships is a
# 55-glyph subset without most letters: the bold "A"/"B" of the vote buttons fell back to another font. Its 400 and
# 700 files are complete (1615 glyphs, arrows and the check mark included); IBM Plex Sans after it draws the few
# symbols Gradio's own widgets use that Source Sans lacks (the sliders' reset arrow). Both come from Gradio's own
# static folder: every text of the app renders in fonts the studio serves, on any machine, with no font host.
THEME = gr.themes.Default(
    font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)),
          gr.themes.LocalFont("IBM Plex Sans", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif"),
    font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace", "Consolas", "monospace"))
# The same keys in every tab: 1-4 vote (A, B, tie, both bad), n takes the next item (prompt, blind-check pair,
# review pair), u undoes the chat tab's last vote. Each key lists its button in every tab; only the visible one
# (the open tab's) is pressed, and never while the focus is in a text field or with a modifier held.
SHORTCUTS = {"1": ["vote-a", "arena-vote-a", "review-vote-a"], "2": ["vote-b", "arena-vote-b", "review-vote-b"],
             "3": ["vote-tie", "arena-vote-tie", "review-vote-tie"],
             "4": ["vote-both_bad", "arena-vote-both_bad", "review-vote-both_bad"],
             "n": ["next-prompt", "blind-check-start", "review-next"], "u": ["undo-vote"]}
HEAD = """<script>
const STUDIO_SHORTCUTS = %s;
document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const t = e.target;
  if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.isContentEditable)) return;
  const root = document.querySelector('gradio-app') || document;
  for (const id of STUDIO_SHORTCUTS[e.key] || []) {
    const el = (root.shadowRoot || root).querySelector('#' + id) || document.getElementById(id);
    if (el && !el.disabled && el.getClientRects().length) { e.preventDefault(); el.click(); return; }
  }
});
</script>""" % json.dumps(SHORTCUTS)  # noqa: UP031 (a script full of braces: % keeps it unescaped)


def empty_state() -> dict[str, Any]:
    return {"conversation_id": None, "turn": None, "candidates": None, "prompt_id": None}


def create_label_tab(get_studio: Callable[[], Studio]) -> tuple[Callable, list[Any], tuple[Any, Callable]]:
    """Chat-and-label tab: one function builds the widgets and wires them to core."""
    studio = get_studio()
    aspects = [a["name"] for a in active_aspects(studio.db)]
    state = gr.State(empty_state())

    with gr.Row():
        with gr.Column(scale=4):
            with gr.Row():
                queue_pick = gr.Dropdown(label="Prompt source", value=FREE_CHAT, scale=2, choices=[FREE_CHAT] + [
                    q["name"] for q in prompt_queue.list_queues(studio.db)])
                next_btn = gr.Button("Next prompt  [n]", scale=1, elem_id="next-prompt")
                skip_btn = gr.Button("Skip", scale=1)
                new_chat_btn = gr.Button("New chat", scale=1)
            policy_names = policy_choices(studio)
            with gr.Row():
                newest_md = gr.Markdown("", elem_id="newest-version")
                against_parent_btn = gr.Button("Blind check of the newest version", visible=False,
                                               size="sm", elem_id="label-newest")
            with gr.Row():
                # custom values allowed: versions trained after the page was built are valid (checked in core)
                policy_a = gr.Dropdown(policy_names, value=BASE_POLICY, label="Version", allow_custom_value=True,
                                       info="the version that answers (both candidates are its samples)")
                policy_b = gr.Dropdown([(SAME_VERSION, SAME_VERSION)] + policy_names, value=SAME_VERSION,
                                       label="Compare with", allow_custom_value=True,
                                       info="pick another version to get one answer from each")
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
                vote_buttons = {o: gr.Button(f"{OUTCOME_LABELS[o]}  [{i}]", elem_id=f"vote-{o}",
                                             variant="primary" if o in ("a", "b") else "secondary")
                                for i, o in enumerate(OUTCOME_LABELS, 1)}
                undo_btn = gr.Button("Undo last vote  [u]", elem_id="undo-vote", variant="secondary", size="sm")
            gr.Markdown("Keys: **1**–**4** vote · **n** next prompt · **u** undo the last vote (when the cursor is "
                        "not in a text box)", elem_classes="key-hint")
            status = gr.Markdown("", elem_id="save-status")
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
            with gr.Row():
                message = gr.Textbox(placeholder="Write a message… (Enter to send)", show_label=False,
                                     scale=6, max_lines=8)
                send_btn = gr.Button("Send", variant="primary", scale=1)
                regen_btn = gr.Button("Regenerate pair", scale=1)
            with gr.Accordion("Sampling settings", open=False):
                sampling_inputs = components_for(SamplingParams)
        with gr.Column(scale=2):
            with gr.Accordion("Guidelines", open=True):
                guidelines_md = gr.Markdown(prompt_queue.guidelines(studio.db))
            with gr.Accordion("My contributions and rewards", open=False):
                rewards_md = gr.Markdown("", elem_id="my-rewards")
                rewards_btn = gr.Button("Refresh", size="sm")

    feedback_inputs = [*rating_inputs, thumbs_a, thumbs_b, flags, note, gold, gold_side]
    clear_feedback: list[Any] = [gr.update(value=None)] * (len(rating_inputs) + 2) + [[], "", "", None]

    def chat_view(st: dict[str, Any]) -> list[dict[str, str]]:
        return history(get_studio().db, st["conversation_id"]) if st["conversation_id"] else []

    def generate(st: dict[str, Any], name_a: str, name_b: str, *sampling_values: Any) -> Iterator[tuple]:
        """Stream a fresh pair for the open user turn and store it."""
        s = get_studio()
        sampling = build_config(SamplingParams, sampling_values).validate()
        messages = history(s.db, st["conversation_id"])
        updates, (id_a, id_b) = s.pair_stream(messages, sampling, name_a,
                                              name_a if name_b in (SAME_VERSION, None) else name_b,
                                              interval=screen_pace(s))
        final = None
        for update in updates:
            final = update
            notice = waiting_notice(update.ahead) if update.ahead is not None else gr.update()
            yield update.text_a, update.text_b, notice
        assert final is not None  # a pair stream always ends with the finished pair
        ids = save_pair(s.db, st["conversation_id"], st["turn"], st["prompt_id"],
                        CandidateIn(final.text_a, id_a, final.latency_ms, final.new_tokens_a),
                        CandidateIn(final.text_b, id_b, final.latency_ms, final.new_tokens_b),
                        sampling.to_dict(), final.truncated_tokens)
        st["candidates"] = list(ids)
        notice = "Pick the better answer (keys 1-4)." + (
            f" Note: your message was longer than the model's context: the oldest {final.truncated_tokens} "
            "tokens were left out of what the model saw." if final.truncated_tokens else "")
        yield final.text_a, final.text_b, notice

    def send(text: str, st: dict[str, Any], name_a: str, name_b: str, request: gr.Request,
             *sampling_values: Any) -> Iterator[tuple]:
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
            yield "", chat_view(st), "", "", "Generating two answers…", st
            for a, b, note_text in generate(st, name_a, name_b, *sampling_values):
                yield gr.update(), gr.update(), a, b, note_text, st

    def regenerate(st: dict[str, Any], name_a: str, name_b: str, request: gr.Request,
                   *sampling_values: Any) -> Iterator[tuple]:
        if st["conversation_id"] is None or st["turn"] is None:
            raise gr.Error("Nothing to regenerate: send a message first.")
        with gradio_errors():
            label_user(get_studio(), request, "regenerate")
            st["candidates"] = None
            for a, b, note_text in generate(st, name_a, name_b, *sampling_values):
                yield a, b, note_text, st

    feedback_names = [(f"{aspect}_{side}", None) for aspect in aspects for side in ("a", "b")] + [
        ("thumbs_a", None), ("thumbs_b", None), ("flags", None), ("note", None), ("gold_answer", None),
        ("gold_side", None)]

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
                receipt = record_vote(s.db, user, Vote(
                    candidate_a=st["candidates"][0], candidate_b=st["candidates"][1], outcome=outcome,
                    ratings={k: v for k, v in scores.items() if v}, thumbs=thumbs, gold_text=gold_text or None,
                    gold_side=side, note=note_text or None, flags=tuple(flag_values or ())))
            saved = f"✓ Saved: **{OUTCOME_LABELS[outcome]}** (vote #{receipt.preference_id})" + \
                ("" if receipt.created else " — already saved, not counted twice")
            if receipt.continuation is None:
                saved += ". Both bad and no gold answer: regenerate the pair or write a gold answer."
                st["candidates"] = None
                return (chat_view(st), "", "", saved, st, *clear_feedback)
            st["candidates"] = None
            if st["prompt_id"] is not None:
                saved += " Press **Next prompt** for the next one."
            return (chat_view(st), "", "", saved, st, *clear_feedback)
        return vote

    def undo(st: dict[str, Any], request: gr.Request) -> tuple:
        with gradio_errors():
            s = get_studio()
            info = undo_last_vote(s.db, label_user(s, request, "undo"))
            texts = candidate_texts(s.db, [info["candidate_a"], info["candidate_b"]])
        st.update(conversation_id=info["conversation_id"], turn=info["turn"],
                  candidates=[info["candidate_a"], info["candidate_b"]])
        return (chat_view(st), texts.get(info["candidate_a"], ""), texts.get(info["candidate_b"], ""),
                f"Vote #{info['preference_id']} undone: vote again.", st)

    def refresh() -> tuple:
        """On page load: queues, guidelines and policy versions added since the app was built (with their
        "what changed" badge), and the one-click offer to label the newest version against its parent."""
        s = get_studio()
        names = [FREE_CHAT] + [q["name"] for q in prompt_queue.list_queues(s.db)]
        policies = policy_choices(s)
        newest = newest_version(s.db)
        status = blind_status(s.db) if newest else None
        offer = (gr.update(visible=True, value=f"Blind check: {newest['name']} against {newest['parent']} "
                           f"({status.votes} of {status.target} votes)")
                 if newest is not None and status is not None and status.open else gr.update(visible=False))
        text = ""
        if newest:
            badge = report_badges(s.db).get(newest["name"])
            text = (f"Newest version: **{newest['name']}** (from {newest['parent']})"
                    + (f" · {badge}" if badge else " · report not ready yet"))
        return (gr.update(choices=names), prompt_queue.guidelines(s.db), gr.update(choices=policies),
                gr.update(choices=[(SAME_VERSION, SAME_VERSION)] + policies), text, offer)

    def label_newest(request: gr.Request) -> Any:
        """One click to the newest version's blind check (the Arena tab): the new version against its parent on
        held-out prompts, sides at random and names hidden until the vote."""
        with gradio_errors():
            label_user(get_studio(), request, "label_newest")
        if newest_version(get_studio().db) is None:
            raise gr.Error("No trained version yet: train one on the console's Train page.")
        return gr.Tabs(selected="arena")

    def queue_id(name: str) -> int:
        for q in prompt_queue.list_queues(get_studio().db):
            if q["name"] == name:
                return q["id"]
        raise gr.Error("Pick a prompt queue first (Free chat has no queue).")

    def progress_text(s: Studio, user, qid: int) -> str:
        p = prompt_queue.progress(s.db, user, qid)
        return (f"**{p['today']} / {p['daily_goal']} today** · {p['done']} of {p['prompts']} prompts "
                f"in this queue done by you")

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

    def rewards(request: gr.Request) -> str:
        """The labeler's side of proof-of-contribute: what is recorded, anchored and claimable."""
        try:
            s = get_studio()
            return rewards_text(s, label_user(s, request, "my_rewards"))
        except StudioError as exc:
            return f"Could not load your rewards: {exc}"

    def new_chat(request: gr.Request) -> tuple:
        with gradio_errors():
            label_user(get_studio(), request, "new_chat")
        return empty_state(), [], "", "", "", ""

    sampling_and_state = [state, policy_a, policy_b, *sampling_inputs]
    send_outputs = [message, chatbot, cand_a, cand_b, status, state]
    name_inputs(send, config_names(SamplingParams))
    name_inputs(regenerate, config_names(SamplingParams))
    for trigger in (send_btn.click, message.submit):
        enter = trigger == message.submit
        trigger(send, [message, *sampling_and_state], send_outputs, api_name="send_on_enter" if enter else "send",
                api_visibility="private" if enter else "public", **GENERATION_CONCURRENCY)
    regen_btn.click(regenerate, sampling_and_state, [cand_a, cand_b, status, state], api_name="regenerate",
                    **GENERATION_CONCURRENCY)
    for outcome, button in vote_buttons.items():
        button.click(name_inputs(make_vote(outcome), feedback_names), [state, *feedback_inputs],
                     [chatbot, cand_a, cand_b, status, state, *feedback_inputs], api_name=f"vote_{outcome}")
    undo_btn.click(undo, [state], [chatbot, cand_a, cand_b, status, state], api_name="undo")
    def gold_from(side: str) -> Callable:
        def edit(st: dict[str, Any], request: gr.Request) -> tuple[str, str]:
            """Start the gold answer from answer A or B of the current pair."""
            with gradio_errors():
                s = get_studio()
                label_user(s, request, f"gold_from_{side}")
            return _candidate_text(s, st, "ab".index(side)), side
        return edit

    # widget helpers, not API endpoints: hidden from API clients
    edit_a.click(gold_from("a"), [state], [gold, gold_side], api_name="gold_from_a", api_visibility="private")
    edit_b.click(gold_from("b"), [state], [gold, gold_side], api_name="gold_from_b", api_visibility="private")
    next_btn.click(next_item, [queue_pick, state], [message, state, chatbot, status, progress_md],
                   api_name="next_prompt")
    skip_btn.click(skip, [queue_pick, state], [message, state, chatbot, status, progress_md], api_name="skip")
    new_chat_btn.click(new_chat, None, [state, chatbot, cand_a, cand_b, status, message], api_name="new_chat")
    rewards_btn.click(rewards, None, rewards_md, api_name="my_rewards")

    def refresh_all(request: gr.Request) -> tuple:
        """The page load: nothing for a visitor who has not signed in yet (a Space with Hugging Face sign-in)."""
        try:
            label_user(get_studio(), request, "page_load")
        except StudioError:
            return (gr.update(), "", gr.update(), gr.update(), "**Sign in to label** (the button above).",
                    gr.update(visible=False), "")
        return (*refresh(), rewards(request))
    return (refresh_all, [queue_pick, guidelines_md, policy_a, policy_b, newest_md, against_parent_btn, rewards_md],
            (against_parent_btn, label_newest))


def policy_choices(studio: Studio) -> list[tuple[str, str]]:
    """(label, name) for the version pickers: each trained version with its "what changed" badge."""
    marks = report_badges(studio.db)
    return [(f"{p['name']} · {marks[p['name']]}" if p["name"] in marks else p["name"], p["name"])
            for p in servable_policies(studio.db)]


def rewards_text(studio: Studio, user: User) -> str:
    """Counts by status and token amounts; contributions appear a few seconds after the vote (chain worker)."""
    counts = chain_views.status_counts(studio.db, user.id)
    amounts = chain_views.amounts_of(studio.db, user.id)
    address = linked_address(studio.db, user.id)
    wallet = (f"Wallet `{address[:6]}…{address[-4:]}`" if address
              else "No wallet linked yet: link one on the [Wallet page](/wallet) to claim.")
    total = sum(counts.values())
    return (f"**{total} contribution{'' if total == 1 else 's'}** · {counts['pending']} waiting for a batch · "
            f"{counts['batched']} batched · {counts['anchored']} anchored on chain\n\n"
            f"Tokens: **{chain_views.tokens(amounts['claimable'])} claimable** · "
            f"{chain_views.tokens(amounts['claimed'])} claimed · "
            f"{chain_views.tokens(amounts['pending'] + amounts['batched'])} on the way\n\n"
            f"{wallet} Proofs and claims: [Wallet page](/wallet).")


def _candidate_text(studio: Studio, st: dict[str, Any], index: int) -> str:
    if not st["candidates"]:
        raise gr.Error("There is no candidate to edit yet.")
    candidate_id = st["candidates"][index]
    return candidate_texts(studio.db, [candidate_id]).get(candidate_id) or ""


def signed_in_text(studio: Studio, request: gr.Request | None) -> str:
    """Who the app labels as, and how to leave (HTML): people sharing a machine, or holding two accounts, must see
    whose votes they cast. Local mode has one local admin and no login; a password login ends at Gradio's
    /label/logout (it drops the session, then shows the login page again); a Hugging Face sign-in ends with its own
    Logout button. HTML, not Markdown: Gradio's Markdown opens every link in a new tab."""
    if not studio.directory.team_mode:
        return "Local mode, no login: you label as <strong>local</strong> (admin)."
    try:
        user = label_user(studio, request, "page_load")
    except StudioError:
        return "Not signed in."
    who = f"Signed in as <strong>{html.escape(user.name)}</strong> ({html.escape(user.role)})"
    if oauth_configured():
        return who + "."
    return who + ' · <a href="/label/logout" target="_self">Sign out</a>'


def create_label_app(get_studio: Callable[[], Studio]) -> gr.Blocks:
    with gr.Blocks(title="RLHF Studio · Label") as blocks:
        with gr.Row(equal_height=True):
            gr.Markdown("## RLHF Studio — label\nChat, compare two answers, pick the better one. "
                        "[Open the console](/) for data, training and settings.", elem_classes="studio-header")
            whoami = gr.HTML("", elem_id="whoami", elem_classes="whoami")
        if get_studio().directory.team_mode and oauth_configured():
            gr.LoginButton()  # Hugging Face OAuth on a Space: the sign-in becomes the labeler's identity
        with gr.Tabs() as tabs:
            with gr.Tab("Chat & label", id="label"):
                refresh, refreshed, (blind_button, open_blind_check) = create_label_tab(get_studio)
            with gr.Tab("Arena", id="arena"):
                blind_offer, offered = create_arena_tab(get_studio)
            with gr.Tab("Review", id="review"):
                create_review_tab(get_studio)
        blind_button.click(open_blind_check, None, tabs, api_name="label_newest")

        def page_load(request: gr.Request) -> tuple:
            """The chat tab's refresh and the signed-in line in one event (each event is a rule in core's access
            table: one page load, one rule)."""
            return (*refresh(request), signed_in_text(get_studio(), request))

        blocks.load(page_load, None, [*refreshed, whoami], api_name="page_load", api_visibility="private")
        blocks.load(blind_offer, None, offered, api_name="blind_offer", api_visibility="private")
    return blocks
