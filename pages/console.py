"""Streamlit console entry point: navigation and the warnings every page must show."""
import streamlit as st

from pathlib import Path

from core.studio import current

LOGO = Path(__file__).resolve().parent.parent / "assets" / "logo.svg"

st.set_page_config(page_title="RLHF Studio", page_icon=":material/science:", layout="wide")

st.logo(str(LOGO), size="large")
studio = current()
if studio.settings.storage_is_ephemeral:
    st.warning("Storage is ephemeral: this Space has no persistent volume mounted at /data, so every "
               "label and model is lost when it restarts. Enable persistent storage in the Space settings.",
               icon=":material/warning:")

navigation = st.navigation({
    "Loop": [
        st.Page("data.py", title="Data", icon=":material/dataset:", default=True),
        st.Page("labeling.py", title="Labeling setup", icon=":material/playlist_add_check:"),
        st.Page("train.py", title="Train", icon=":material/model_training:"),
        st.Page("runs.py", title="Runs", icon=":material/monitoring:"),
        st.Page("compare.py", title="Compare", icon=":material/compare:"),
        st.Page("leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
    ],
    "Share": [
        st.Page("export.py", title="Export", icon=":material/upload:"),
        st.Page("wallet.py", title="Wallet", icon=":material/account_balance_wallet:"),
    ],
    "Studio": [st.Page("settings.py", title="Settings", icon=":material/settings:")],
})
with st.sidebar:
    st.link_button("Open the labeling app", "/label/", use_container_width=True)
navigation.run()
