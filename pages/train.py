"""Train page."""
import streamlit as st

from pages.common import not_yet_available

st.title("Train")
not_yet_available("Launching SFT, reward-model, DPO-family, KTO, ORPO and online-RL jobs", "training issue")
