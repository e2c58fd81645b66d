"""Settings page: the detected hardware, the training defaults it implies, and the active settings."""
import pandas as pd
import streamlit as st

from core.errors import StudioError
from core.hardware import training_defaults
from core.studio import current

studio = current()
st.title("Settings")

if studio.settings.storage_is_ephemeral:
    st.error("Storage is ephemeral (no persistent volume at /data).")

left, right = st.columns(2)
with left:
    st.subheader("Hardware")
    st.table(pd.DataFrame(studio.hardware.as_rows(), columns=["", "detected"]).set_index(""))
with right:
    st.subheader("Training defaults")
    status = studio.model_status()
    if status == "ready":
        model, _ = studio.model()
        n_params = sum(p.numel() for p in model.parameters())
        defaults = training_defaults(studio.hardware, n_params)
        st.write(f"For the base model ({n_params / 1e6:.0f} M parameters):")
        st.table(pd.DataFrame([(k, str(v)) for k, v in defaults.items() if k != "reason"],
                              columns=["setting", "value"]).set_index("setting"))
        st.caption(defaults["reason"])
    else:
        st.info(f"Base model: {status}. Defaults appear once it is loaded.")

st.subheader("Studio")
info = studio.health()
st.table(pd.DataFrame(
    [("Data dir", info["data_dir"]), ("Database", str(studio.settings.db_path.resolve())),
     ("Schema version", info["schema_version"]), ("Model", info["model"]),
     ("Model path", info["model_path"]), ("Model status", info["model_status"]),
     ("Chat precision", info["chat_dtype"]),
     ("Version", info["version"])] +
    [(f"setting: {k}", "" if v is None else str(v)) for k, v in studio.settings.public_dict().items()],
    columns=["", "value"]).set_index(""))

st.subheader("Backup")
st.caption("A consistent copy of every table while the studio runs (DuckDB EXPORT DATABASE: parquet files plus "
           "the schema). Restore it into an empty data dir with `launch.py restore FOLDER --data-dir NEW`. "
           "Copying studio.duckdb also works, but only while the studio is stopped.")
from pages.common import current_user  # noqa: E402

if current_user().is_admin:
    if st.button("Back up now", icon=":material/backup:"):
        from storage.db import default_backup_dir

        try:
            with st.spinner("Writing the backup..."):
                folder = studio.db.backup(default_backup_dir(studio.settings.data_dir))
            size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            st.success(f"Backup written to `{folder}` ({size:.1f} MB).", icon=":material/check_circle:")
        except StudioError as exc:
            st.error(exc.message + (f" — {exc.hint}" if exc.hint else ""), icon=":material/error:")
else:
    st.caption("Admins can back up from here.")
