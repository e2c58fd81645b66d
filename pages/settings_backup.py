"""The Settings page's Backup section (admins): where snapshots go, the last good one, the last error, the list of
snapshots with the command that restores one, "Back up now", and "Rewrite backup history" after a redaction."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.errors import StudioError
from pages.common import show_error, shown_errors


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.1f} h ago"


def show_backup(studio: Any, viewer: Any) -> None:
    service = studio.backup_service()
    status = service.status()
    flag = "--repo" if status["kind"] == "hub" else "--dir"
    if studio.backup is None:
        st.info(
            f"No backup target is configured: **Back up now** writes a snapshot to `{service.target.describe()}`, "
            "on this same disk. For backups that survive the disk (a Space restart, a lost machine), set "
            "`STUDIO_BACKUP_REPO` (a Hub dataset repo, with `HF_TOKEN`) or `STUDIO_BACKUP_DIR` (another disk) "
            "and restart: the studio then backs up every few minutes and restores on an empty disk.",
            icon=":material/backup:",
        )
        flag = "--dir"
    elif status["failures"]:
        st.error(
            f"The last {status['failures']} backup tries failed: {status['last_error']} (retried with backoff; "
            "nothing saved in the studio is lost meanwhile).",
            icon=":material/cloud_off:",
        )
    else:
        st.success(
            f"Backed up to `{status['target']}` every {status['every_s']:.0f} s when something changed; last "
            f"good backup {_ago(status['seconds_since_last_good'])}"
            + (" (changes are waiting for the next one)." if status["pending"] else "."),
            icon=":material/cloud_done:",
        )
    if studio.backup is not None:
        st.table(
            pd.DataFrame(
                [
                    ("Target", status["target"]),
                    ("Every", f"{status['every_s']:.0f} s"),
                    ("Last good backup", status["last_good_at"] or "never"),
                    ("Snapshot", status["last_ref"] or ""),
                    ("Changes waiting", "yes" if status["pending"] else "no"),
                    ("Last error", status["last_error"] or ""),
                    ("Failed tries", str(status["failures"])),
                ],
                columns=["", "value"],
            ).set_index("")
        )
    if st.button("Back up now", icon=":material/backup:"):
        with shown_errors():
            with st.spinner("Writing the snapshot (tables, adapters, run files)..."):
                snap = service.backup_now(f"asked by {viewer.name} on the Settings page")
            st.success(f"{snap.title} → `{service.target.describe()}` ({snap.ref}).", icon=":material/check_circle:")
    if status["history_holds_redacted"]:
        st.warning(
            "Text was redacted after the oldest snapshot was taken: the newest snapshot no longer holds it, "
            "but older snapshots still do. Rewriting the backup history keeps only a fresh snapshot.",
            icon=":material/delete_history:",
        )
        if st.button("Rewrite backup history", icon=":material/delete_sweep:"):
            with shown_errors():
                with st.spinner("Taking a fresh snapshot and dropping the older ones..."):
                    service.rewrite_history()
                st.success(
                    "The backup history now holds one snapshot, without the redacted text.",
                    icon=":material/check_circle:",
                )
    try:
        snaps = service.target.snapshots()
    except StudioError as exc:
        show_error(exc)
        return
    if snaps:
        st.caption(
            f"{len(snaps)} snapshots, newest first. Restore one into an empty data dir with "
            f"`python launch.py restore {flag} {service.target.describe()} --revision REF --data-dir NEW`."
        )
        st.dataframe(
            pd.DataFrame([(s.ref, s.created_at, s.title) for s in snaps], columns=["ref", "taken", "what"]),
            hide_index=True,
        )
