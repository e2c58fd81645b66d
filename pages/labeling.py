"""Labeling setup (admins): prompt queues, imports, progress, guidelines and rating aspects."""
import pandas as pd
import streamlit as st

from core import queue as prompt_queue
from core.errors import StudioError
from core.labeling import active_aspects, save_aspects
from core.studio import current
from pages.common import require_page

studio = current()
st.title("Labeling setup")
admin, _ = require_page("labeling")

st.subheader("Prompt queues")
queues = prompt_queue.list_queues(studio.db)
if queues:
    table = pd.DataFrame(queues)
    table["progress"] = (table["labels_done"] / table["labels_needed"].clip(lower=1)).round(3)
    st.dataframe(table, hide_index=True, use_container_width=True,
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
else:
    st.caption("No queues yet: create one below or load the seed prompts.")

left, right = st.columns(2)
with left, st.form("new-queue"):
    st.markdown("**Create a queue or import prompts into one**")
    name = st.text_input("Queue name", value="main")
    overlap = st.number_input("Labelers per prompt (overlap k)", min_value=1, max_value=20, value=1,
                              help="Each prompt is served to k different labelers, never twice to the same one. "
                                   "k ≥ 2 gives the overlap needed for agreement statistics.")
    goal = st.number_input("Daily goal per labeler", min_value=1, max_value=10_000, value=50)
    upload = st.file_uploader("Prompts file (.txt one per line, .jsonl / .json with 'prompt', .csv with a "
                              "'prompt' column)", type=["txt", "jsonl", "json", "csv"])
    if st.form_submit_button("Save queue / import", type="primary"):
        try:
            qid = prompt_queue.create_queue(studio.db, admin, name, int(overlap), int(goal))
            added = 0
            if upload is not None:
                prompts = prompt_queue.parse_prompts(upload.getvalue(), upload.name)
                added = prompt_queue.import_prompts(studio.db, admin, qid, prompts, f"import:{upload.name}")
            st.success(f"Queue **{name}** saved; {added} new prompts imported.")
        except StudioError as exc:
            st.error(f"{exc.message}. {exc.hint}")
with right:
    st.markdown("**Seed prompts**")
    st.caption(f"{sum(1 for _ in open(prompt_queue.SEED_PROMPTS))} varied prompts shipped with the studio "
               "(facts, how-tos, creative writing, and a few that should be refused).")
    if st.button("Load the seed set as queue 'seed'"):
        qid = prompt_queue.load_seed_queue(studio.db, admin)
        st.success("Seed queue ready: labelers can pick it in the labeling app under 'Prompt source'.")

if queues:
    st.subheader("Progress per labeler")
    chosen = st.selectbox("Queue", [q["name"] for q in queues])
    qid = next(q["id"] for q in queues if q["name"] == chosen)
    rows = prompt_queue.labeler_progress(studio.db, qid)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, use_container_width=True)
    else:
        st.caption("Nobody has labeled this queue yet.")

st.subheader("Rating aspects")
st.caption("Labelers rate each answer 1-5 on these aspects; the weights mix them into one reward later. "
           "Changes apply to labeling pages opened afterwards.")
edited = st.data_editor(pd.DataFrame(active_aspects(studio.db)), num_rows="dynamic", use_container_width=True,
                        hide_index=True, key="aspects-editor")
if st.button("Save aspects"):
    try:
        save_aspects(studio.db, admin, edited.dropna(subset=["name"]).to_dict("records"))
        st.success("Aspects saved.")
    except StudioError as exc:
        st.error(f"{exc.message}. {exc.hint}")

st.subheader("Guidelines")
text = st.text_area("Shown to labelers in the side panel (Markdown)", prompt_queue.guidelines(studio.db), height=300)
if st.button("Save guidelines"):
    try:
        prompt_queue.save_guidelines(studio.db, admin, text)
        st.success("Guidelines saved.")
    except StudioError as exc:
        st.error(f"{exc.message}. {exc.hint}")
