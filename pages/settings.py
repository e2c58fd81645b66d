"""Settings page: the detected hardware, the training defaults it implies, and the active settings."""

import pandas as pd
import streamlit as st

from app import access
from core.serving.hardware import training_defaults
from core.studio import current
from core.training.estimate import base_parameter_count
from pages.common import can, require_page

studio = current()
st.title("Settings")
viewer, _ = require_page("settings")

if studio.settings.storage_is_ephemeral and studio.backup is None:
    st.error(
        "Storage is ephemeral (no persistent volume at /data) and no backup is configured: set "
        "STUDIO_BACKUP_REPO and an HF_TOKEN secret (see Backup below)."
    )

left, right = st.columns(2)
with left:
    st.subheader("Hardware")
    st.table(pd.DataFrame(studio.hardware.as_rows(), columns=["", "detected"]).set_index(""))
with right:
    st.subheader("Training defaults")
    status = studio.model_status()
    if status == "ready":
        model, _ = studio.model()
        n_params = base_parameter_count(model)  # the base alone, as the Train page counts
        defaults = training_defaults(studio.hardware, n_params)
        st.write(f"For the base model ({n_params / 1e6:.0f} M parameters):")
        st.table(
            pd.DataFrame(
                [(k, str(v)) for k, v in defaults.items() if k != "reason"], columns=["setting", "value"]
            ).set_index("setting")
        )
        st.caption(defaults["reason"])
    else:
        st.info(f"Base model: {status}. Defaults appear once it is loaded.")

st.subheader("Studio")
info = access.health_view(studio.health(), viewer)
everything = access.scope(viewer, "settings.values") == access.ALL
rows = [
    ("Data dir", info.get("data_dir")),
    ("Database", str(studio.settings.db_path.resolve()) if everything else None),
    ("Schema version", info.get("schema_version")),
    ("Model", info.get("model")),
    ("Model path", info.get("model_path")),
    ("Model status", info["model_status"]),
    ("Chat precision", info["chat_dtype"]),
    ("Version", info["version"]),
]
engine = info.get("engine")  # admins only (health_view)
if engine:
    rows += [
        ("Inference engine", engine["url"]),
        ("Engine model", engine["model"]),
        ("Engine status", engine["status"]),
        ("Engine latency", None if engine["latency_ms"] is None else f"{engine['latency_ms']:.0f} ms"),
        ("Engine serves versions (LoRA)", {None: "not tried yet", True: "yes", False: "no"}[engine["lora"]]),
    ]
st.table(
    pd.DataFrame(
        [(k, str(v)) for k, v in rows if v is not None]  # one type per column: Arrow refuses a mixed column
        + [(f"setting: {k}", "" if v is None else str(v)) for k, v in studio.settings.public_dict(everything).items()],
        columns=["", "value"],
    ).set_index("")
)
if not everything:
    st.caption("Paths, endpoints and files are shown to admins only.")

st.subheader("Backup")
if not can(viewer, "settings.backup"):
    st.caption("Admins see the backup's state and can back up from here.")
else:
    from pages.settings_backup import show_backup

    show_backup(studio, viewer)
