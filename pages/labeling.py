"""Labeling setup (admins): prompt queues, imports, progress, guidelines, rating aspects and the constitution."""

import pandas as pd
import streamlit as st

from core.judging import constitution
from core.labeling import queue as prompt_queue
from core.labeling.votes import active_aspects, save_aspects
from core.serving.generate import SamplingParams
from core.serving.policies import comparable_policies
from core.studio import current
from pages.common import require_page, shown_errors

studio = current()
st.title("Labeling setup")
admin, _ = require_page("labeling")

st.subheader("Prompt queues")
queues = prompt_queue.list_queues(studio.db)
if queues:
    table = pd.DataFrame(queues)
    table["progress"] = (table["labels_done"] / table["labels_needed"].clip(lower=1)).round(3)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        placeholder="",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)},
    )
else:
    st.caption("No queues yet: create one below or load the seed prompts.")

left, right = st.columns(2)
with left, st.form("new-queue"):
    st.markdown("**Create a queue or import prompts into one**")
    name = st.text_input("Queue name", value="main")
    overlap = st.number_input(
        "Labelers per prompt (overlap k)",
        min_value=1,
        max_value=20,
        value=1,
        help="Each prompt is served to k different labelers, never twice to the same one. "
        "k ≥ 2 gives the overlap needed for agreement statistics.",
    )
    goal = st.number_input("Daily goal per labeler", min_value=1, max_value=10_000, value=50)
    upload = st.file_uploader(
        "Prompts file (.txt one per line, .jsonl / .json with 'prompt', .csv with a 'prompt' column)",
        type=["txt", "jsonl", "json", "csv"],
    )
    if st.form_submit_button("Save queue / import", type="primary"):
        with shown_errors():
            qid = prompt_queue.create_queue(studio.db, admin, name, int(overlap), int(goal))
            added = 0
            if upload is not None:
                prompts = prompt_queue.parse_prompts(upload.getvalue(), upload.name)
                added = prompt_queue.import_prompts(studio.db, admin, qid, prompts, f"import:{upload.name}")
            st.success(f"Queue **{name}** saved; {added} new prompts imported.")
with right:
    st.markdown("**Seed prompts**")
    st.caption(
        f"{sum(1 for _ in open(prompt_queue.SEED_PROMPTS))} varied prompts shipped with the studio "
        "(facts, how-tos, creative writing, and a few that should be refused)."
    )
    if st.button("Load the seed set as queue 'seed'"):
        qid = prompt_queue.load_seed_queue(studio.db, admin)
        st.success("Seed queue ready: labelers can pick it in the labeling app under 'Prompt source'.")

if queues:
    st.subheader("Progress per labeler")
    chosen = st.selectbox("Queue", [q["name"] for q in queues])
    qid = next(q["id"] for q in queues if q["name"] == chosen)
    rows = prompt_queue.labeler_progress(studio.db, qid)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", placeholder="")
    else:
        st.caption("Nobody has labeled this queue yet.")

st.subheader("Rating aspects")
st.caption(
    "Labelers rate each answer 1-5 on these aspects; the weights mix them into one reward later. "
    "Changes apply to labeling pages opened afterwards."
)
edited = st.data_editor(
    pd.DataFrame(active_aspects(studio.db)), num_rows="dynamic", width="stretch", hide_index=True, key="aspects-editor"
)
if st.button("Save aspects"):
    with shown_errors():
        save_aspects(studio.db, admin, edited.dropna(subset=["name"]).to_dict("records"))
        st.success("Aspects saved.")

st.subheader("Guidelines")
text = st.text_area("Shown to labelers in the side panel (Markdown)", prompt_queue.guidelines(studio.db), height=300)
if st.button("Save guidelines"):
    with shown_errors():
        prompt_queue.save_guidelines(studio.db, admin, text)
        st.success("Guidelines saved.")

st.subheader("Constitution (AI self-critique)")
st.caption(
    "Principles a version critiques its own answers against, then revises them; each original vs "
    "revision becomes a pair labeled 'B is better' by `ai:constitution`, which people check in the labeling "
    "app's Review tab. Such pairs train only when a training set asks for AI labels. One principle per line."
)
principles_text = st.text_area(
    "Principles", constitution.principles_text(studio.db), height=260, key="constitution-text"
)
save_col, reset_col = st.columns(2)
if save_col.button("Save principles"):
    with shown_errors():
        saved = constitution.save_principles(studio.db, admin, principles_text)
        st.success(f"{len(saved)} principles saved.")
if reset_col.button("Restore the default principles"):
    constitution.reset_principles(studio.db, admin)
    st.session_state.pop("constitution-text", None)
    st.rerun()
if queues:
    with st.form("constitution-run"):
        st.markdown("**Critique and revise a queue's prompts**")
        version = st.selectbox("Version", comparable_policies(studio.db))
        queue_name = st.selectbox("Queue", [q["name"] for q in queues], key="constitution-queue")
        limit = st.number_input("At most this many prompts", min_value=1, max_value=10_000, value=20)
        max_new_tokens = st.number_input(
            "Longest answer, critique and revision (tokens)", min_value=8, max_value=1024, value=192
        )
        run = st.form_submit_button("Run", type="primary")
    if run:
        bar = st.progress(0.0, text="Critiquing the first answer (three generations per prompt)")
        with shown_errors():
            rows = constitution.queue_prompt_rows(studio.db, queue_name, int(limit))
            result = constitution.run_constitution(
                studio,
                admin,
                version,
                [text for _, text in rows],
                prompt_ids=[i for i, _ in rows],
                sampling=SamplingParams(max_new_tokens=int(max_new_tokens)),
                progress=lambda fraction, text: bar.progress(min(1.0, fraction), text=text),
            )
            st.success(
                f"{result['pairs']} pairs stored for review ({result['skipped_identical']} revisions identical "
                f"to the answer and {result['skipped_empty']} empty were skipped) in {result['seconds']:.0f} s.",
                icon=":material/check_circle:",
            )
