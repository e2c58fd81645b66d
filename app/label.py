"""The Gradio app mounted at ``/label``: the shell around its three tabs, its theme and its keyboard shortcuts.

Thin: every rule lives in core (labeling, queue, identity, generate); the tabs are app.label_chat (chat with a
version, see two candidates, vote, rate, edit), app.arena (blind battles and blind checks) and app.review (people
check AI labels). A turn: the labeler sends a message -> two candidates stream side by side from ONE batched
generate call -> the labeler picks A / B / tie / both bad (keys 1-4), optionally with ratings, thumbs, a gold
edit, flags and a note -> the vote is committed -> the picked (or edited) answer continues the chat.
"""

import html
import json
from collections.abc import Callable

import gradio as gr

from app.arena import create_arena_tab
from app.auth import label_user
from app.label_chat import create_label_tab
from app.review import create_review_tab
from core.errors import StudioError
from core.labeling.identity import oauth_configured
from core.studio import Studio

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
    font=(
        gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)),
        gr.themes.LocalFont("IBM Plex Sans", weights=(400, 700)),
        "ui-sans-serif",
        "system-ui",
        "sans-serif",
    ),
    font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace", "Consolas", "monospace"),
)
# The same keys in every tab: 1-4 vote (A, B, tie, both bad), n takes the next item (prompt, blind-check pair,
# review pair), u undoes the chat tab's last vote. Each key lists its button in every tab; only the visible one
# (the open tab's) is pressed, and never while the focus is in a text field or with a modifier held.
SHORTCUTS = {
    "1": ["vote-a", "arena-vote-a", "review-vote-a"],
    "2": ["vote-b", "arena-vote-b", "review-vote-b"],
    "3": ["vote-tie", "arena-vote-tie", "review-vote-tie"],
    "4": ["vote-both_bad", "arena-vote-both_bad", "review-vote-both_bad"],
    "n": ["next-prompt", "blind-check-start", "review-next"],
    "u": ["undo-vote"],
}
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
            gr.Markdown(
                "## RLHF Studio — label\nChat, compare two answers, pick the better one. "
                "[Open the console](/) for data, training and settings.",
                elem_classes="studio-header",
            )
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
