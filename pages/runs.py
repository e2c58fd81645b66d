"""Runs page."""
import streamlit as st

from pages.common import not_yet_available

st.title("Runs")
not_yet_available("Live loss, reward and KL curves of training runs", "training issue")
