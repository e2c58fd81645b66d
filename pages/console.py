"""Streamlit console entry point: navigation and the warnings every page must show."""

from pathlib import Path

import streamlit as st

from app import access
from core.studio import current
from pages.common import current_user

LOGO = Path(__file__).resolve().parent.parent / "assets" / "logo.svg"

st.set_page_config(page_title="RLHF Studio", page_icon=str(LOGO), layout="wide")  # local: no font host

st.logo(str(LOGO), size="large")
studio = current()
if studio.settings.storage_is_ephemeral and studio.backup is None:
    st.warning(
        "Storage is ephemeral: this Space has no persistent volume at /data, so every label and model is "
        "lost when it restarts. Set the STUDIO_BACKUP_REPO variable (a dataset repo, owner/name) and an "
        "HF_TOKEN secret with write access: the studio then backs up continuously and restores at start.",
        icon=":material/warning:",
    )
elif studio.settings.storage_is_ephemeral:
    backed = studio.backup.status()
    since = backed["seconds_since_last_good"]
    st.caption(
        f":material/cloud_done: Ephemeral disk, backed up every {backed['every_s']:.0f} s"
        + (f"; last good backup {since / 60:.0f} min ago" if since is not None else "; no backup yet")
        + (" — the last try failed (see Settings)" if backed["failures"] else "")
        + "."
    )

# (file, title, icon) per section; each page has a rule "page:<file stem>" in app.access. The sidebar lists
# only the pages the viewer may open, but every page is registered (the others hidden): a labeler who opens /train
# directly then gets that page's own refusal ("This page is for admins", pages.common.require_page) instead of
# Streamlit silently showing the default page for an unknown address.
PAGES = {
    "Loop": [
        ("data.py", "Data", ":material/dataset:"),
        ("labeling.py", "Labeling setup", ":material/playlist_add_check:"),
        ("train.py", "Train", ":material/model_training:"),
        ("runs.py", "Runs", ":material/monitoring:"),
        ("compare.py", "Compare", ":material/compare:"),
        ("leaderboard.py", "Leaderboard", ":material/leaderboard:"),
    ],
    "Share": [
        ("export.py", "Export", ":material/upload:"),
        ("wallet.py", "Wallet", ":material/account_balance_wallet:"),
    ],
    "Studio": [("settings.py", "Settings", ":material/settings:"), ("account.py", "Account", ":material/key:")],
}
viewer = current_user()


def registered(section_pages: list[tuple[str, str, str]]) -> list:
    """A section's pages, those the viewer may not open hidden from the sidebar (reachable by address only)."""
    return [
        st.Page(
            file,
            title=title,
            icon=icon,
            default=file == "data.py",
            visibility="visible" if access.can(viewer, "page:" + file.removesuffix(".py")) else "hidden",
        )
        for file, title, icon in section_pages
    ]


navigation = st.navigation({section: registered(pages) for section, pages in PAGES.items()})
with st.sidebar:
    st.link_button("Open the labeling app", "/label/", width="stretch")
navigation.run()
