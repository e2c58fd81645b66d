"""Compare page."""
import streamlit as st

from pages.common import not_yet_available

st.title("Compare")
not_yet_available("Side-by-side comparison, the blind arena and the Bradley-Terry leaderboard", "compare issue")
