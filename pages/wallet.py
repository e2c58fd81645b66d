"""Wallet page."""
import streamlit as st

from pages.common import admin_only, not_yet_available

st.title("Wallet")
if not admin_only():
    st.stop()
not_yet_available("Contribution batches anchored on chain, reward tokens and proofs", "proof-of-contribute issue")
