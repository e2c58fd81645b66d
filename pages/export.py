"""Export page."""
import streamlit as st

from pages.common import not_yet_available

st.title("Export")
not_yet_available("Dataset import/export and pushing adapters and datasets to the Hugging Face Hub", "data and export issue")
