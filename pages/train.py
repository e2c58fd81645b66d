"""Train page."""
import streamlit as st

from pages.common import admin_only, not_yet_available

st.title("Train")
if not admin_only():
    st.stop()
not_yet_available("Launching SFT, reward-model, DPO-family, KTO, ORPO and online-RL jobs", "training issue")
