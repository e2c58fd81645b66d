"""Export page."""
import streamlit as st

from pages.common import admin_only, not_yet_available

st.title("Export")
if not admin_only():
    st.stop()
not_yet_available("Dataset import/export and pushing adapters and datasets to the Hugging Face Hub", "data and export issue")
