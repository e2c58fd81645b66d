"""Data page: what has been collected so far."""
import pandas as pd
import streamlit as st

from core.studio import current
from pages.common import not_yet_available

studio = current()
st.title("Data")

TABLES = {"Preferences": "preferences", "Ratings": "ratings", "Scored feedback (API)": "feedback",
          "Conversations": "conversations", "Prompts": "prompts"}
columns = st.columns(len(TABLES))
for column, (label, table) in zip(columns, TABLES.items()):
    column.metric(label, studio.db.scalar(f"SELECT count(*) FROM {table}"))

st.subheader("Recent scored feedback")
recent = studio.db.query("SELECT id, created_at, score, prompt, response, run_id, notes, source"
                         " FROM feedback ORDER BY id DESC LIMIT 50")
if recent:
    st.dataframe(pd.DataFrame(recent), hide_index=True, use_container_width=True)
else:
    st.caption("No feedback yet. Send some with `POST /api/feedback` "
               '(`{"prompt": ..., "response": ..., "score": 0.8}`).')

not_yet_available("Labeling analytics (counts over time, per-labeler progress, agreement, redaction)",
                  "labeling issue")
