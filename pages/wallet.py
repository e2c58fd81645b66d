"""Wallet page."""
import streamlit as st

from pages.common import not_yet_available

st.title("Wallet")
not_yet_available("Contribution batches anchored on chain, reward tokens and proofs", "proof-of-contribute issue")
