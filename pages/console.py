"""Streamlit console entry point: navigation and the warnings every page must show."""
import streamlit as st

from pathlib import Path

from core.labeling import access
from core.studio import current
from pages.common import current_user

LOGO = Path(__file__).resolve().parent.parent / "assets" / "logo.svg"

st.set_page_config(page_title="RLHF Studio", page_icon=":material/science:", layout="wide")

st.logo(str(LOGO), size="large")
studio = current()
if studio.settings.storage_is_ephemeral and studio.backup is None:
    st.warning("Storage is ephemeral: this Space has no persistent volume at /data, so every label and model is "
               "lost when it restarts. Set the STUDIO_BACKUP_REPO variable (a dataset repo, owner/name) and an "
               "HF_TOKEN secret with write access: the studio then backs up continuously and restores at start.",
               icon=":material/warning:")
elif studio.settings.storage_is_ephemeral:
    backed = studio.backup.status()
    since = backed["seconds_since_last_good"]
    st.caption(f":material/cloud_done: Ephemeral disk, backed up every {backed['every_s']:.0f} s"
               + (f"; last good backup {since / 60:.0f} min ago" if since is not None else "; no backup yet")
               + (" — the last try failed (see Settings)" if backed["failures"] else "") + ".")

# (file, title, icon) per section; each page has a rule "page:<file stem>" in core.labeling.access, and the sidebar
# lists only the pages the viewer may open (each page checks again when it runs).
PAGES = {
    "Loop": [("data.py", "Data", ":material/dataset:"),
             ("labeling.py", "Labeling setup", ":material/playlist_add_check:"),
             ("train.py", "Train", ":material/model_training:"),
             ("runs.py", "Runs", ":material/monitoring:"),
             ("compare.py", "Compare", ":material/compare:"),
             ("leaderboard.py", "Leaderboard", ":material/leaderboard:")],
    "Share": [("export.py", "Export", ":material/upload:"),
              ("wallet.py", "Wallet", ":material/account_balance_wallet:")],
    "Studio": [("settings.py", "Settings", ":material/settings:"),
               ("account.py", "Account", ":material/key:")],
}
viewer = current_user()
allowed = {section: [st.Page(file, title=title, icon=icon, default=file == "data.py")
                      for file, title, icon in pages if access.can(viewer, "page:" + file.removesuffix(".py"))]
           for section, pages in PAGES.items()}
navigation = st.navigation({section: pages for section, pages in allowed.items() if pages})
with st.sidebar:
    st.link_button("Open the labeling app", "/label/", width="stretch")
navigation.run()
