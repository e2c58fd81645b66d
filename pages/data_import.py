"""The Data page's import section: upload -> what was detected -> explicit confirmation -> one transaction.

Not a page of its own (console.py lists the pages); pages/data.py calls :func:`render_import`. Thin:
reading, detection and writing all live in core.data (import_files, import_formats, datasets_io).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import streamlit as st

from core.data import datasets_io
from core.data.import_files import find_saved_dataset
from core.data.import_formats import Parsed, inspect_file
from core.errors import StudioError
from core.labeling.queue import list_queues
from pages.common import show_error
from storage.db import Database

FILE_TYPES = ["jsonl", "ndjson", "json", "csv", "tsv", "parquet", "txt", "zip", "gz"]
NO_QUEUE = "(no queue: just store the prompts)"
PREVIEW_ERRORS = 200


def _write_uploads(uploads: list[Any], root: Path) -> Path:
    """Write the uploaded file(s) under ``root``; a folder upload keeps its relative paths."""
    if len(uploads) == 1 and not uploads[0].name.count("/"):
        path = root / Path(uploads[0].name).name
        path.write_bytes(uploads[0].getvalue())
        return path
    for upload in uploads:
        parts = [part for part in PurePosixPath(upload.name).parts if part not in ("", "/", ".", "..")]
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upload.getvalue())
    return find_saved_dataset(root, "the uploaded folder")


def _inspect(uploads: list[Any]) -> dict[str, Any]:
    """Parse the upload once (kept in the session): the rerun after every click must not re-read it."""
    key = tuple(upload.file_id for upload in uploads)
    cached = st.session_state.get("import_parsed")
    if cached and cached["key"] == key:
        return cached
    digest = hashlib.sha256()
    for upload in sorted(uploads, key=lambda u: u.name):
        digest.update(upload.name.encode() + b"\0" + upload.getvalue())
    entry: dict[str, Any] = {
        "key": key,
        "filename": PurePosixPath(uploads[0].name).parts[0],
        "sha256": digest.hexdigest(),
        "parsed": None,
        "error": None,
    }
    with tempfile.TemporaryDirectory(prefix="studio-upload-") as tmp:
        try:
            path = _write_uploads(uploads, Path(tmp))
            entry["parsed"] = inspect_file(path, entry["filename"])
        except StudioError as exc:
            entry["error"] = exc
    st.session_state["import_parsed"] = entry
    return entry


def _preview(parsed: Parsed) -> list[dict[str, Any]]:
    if parsed.format == "prompts":
        return [{"row": row, "prompt": text} for row, text in parsed.prompts[:3]]
    out = []
    for item in parsed.items[:3]:
        row: dict[str, Any] = {"row": item.row, "prompt": item.prompt}
        if item.label is None:
            row["answers (best first)"] = item.answers
        else:
            row |= {"completion": item.answers[0], "label": item.label}
        out.append(row)
    return out


def render_import(db: Database, user: Any, on_imported: Callable[[], None] = lambda: None) -> None:
    """The import section; admins only. ``on_imported`` refreshes the page's cached figures."""
    st.subheader("Import a dataset")
    if user is None or not getattr(user, "is_admin", False):
        st.info("Admin only: ask an admin to import a dataset.", icon=":material/lock:")
        return
    done = st.session_state.pop("import_result", None)
    if done is not None:
        st.success(done, icon=":material/check_circle:")
    st.caption(
        "JSONL, JSON, CSV/TSV, parquet, a `.txt` prompt list, or a `datasets` folder saved with `save_to_disk` "
        "(as a folder or a zip). Detected shapes: TRL preference (`prompt`/`chosen`/`rejected`, standard or "
        "conversational), KTO (`prompt`/`completion`/`label`), Anthropic HH transcripts, UltraFeedback "
        "(`score_chosen`/`score_rejected`), OpenAssistant trees or oasst1 rows (ranked replies become "
        "pairs) and plain prompt lists. Pairs become votes with source `import:<name>`, so they feed every "
        "training set and can be filtered by source. Nothing is written until you confirm; the import is "
        "one transaction."
    )
    folder = (
        st.radio("Upload", ["a file", "a folder saved with save_to_disk"], horizontal=True, key="import_kind")
        != "a file"
    )
    uploads = (
        st.file_uploader("Dataset folder", accept_multiple_files="directory", key="import_folder")
        if folder
        else [f for f in [st.file_uploader("Dataset file", type=FILE_TYPES, key="import_file")] if f]
    )
    if not uploads:
        sources = datasets_io.imported_sources(db)
        if sources:
            st.caption("Imported so far (filter training data by these sources):")
            st.dataframe(
                pd.DataFrame(sources),
                hide_index=True,
                width="stretch",
                column_config={
                    "source": "Source",
                    "pairs": "Pairs",
                    "labeled": "Labeled answers (KTO)",
                    "prompts": "Prompts",
                },
                placeholder="",
            )
        return
    with st.spinner("Reading the file and detecting its shape…"):
        entry = _inspect(uploads)
    if entry["error"] is not None:
        exc = entry["error"]
        show_error(exc)
        return
    parsed: Parsed = entry["parsed"]
    (st.warning if parsed.errors else st.info)(parsed.describe(), icon=":material/fact_check:")
    if parsed.errors:
        st.dataframe(
            pd.DataFrame(parsed.errors[:PREVIEW_ERRORS]),
            hide_index=True,
            width="stretch",
            placeholder="",
            column_config={"row": st.column_config.NumberColumn("Row", format="%d"), "error": "Error"},
        )
        if len(parsed.errors) > PREVIEW_ERRORS:
            st.caption(f"… and {len(parsed.errors) - PREVIEW_ERRORS} more bad rows.")
    with st.expander("Preview (first records as they will be stored)"):
        st.json(_preview(parsed), expanded=2)

    try:
        default_name = datasets_io.source_name(None, entry["filename"]).removeprefix("import:")
    except StudioError:  # a file name with nothing usable in it
        default_name = "upload"
    with st.form("import_confirm"):
        name = st.text_input(
            "Source name",
            value=default_name,
            key="import_name",
            help="Stored as import:<name> on every record; used by the source filter.",
        )
        queue = None
        if parsed.format == "prompts":
            queues = [q["name"] for q in list_queues(db)]
            picked = st.selectbox("Add the prompts to a labeling queue", [NO_QUEUE, *queues], key="import_queue")
            new_queue = st.text_input("… or a new queue", key="import_new_queue", placeholder="queue name")
            queue = new_queue.strip() or (None if picked == NO_QUEUE else picked)
        skip_bad = st.checkbox(
            f"Skip the {len(parsed.errors)} bad row(s) and import the rest",
            key="import_skip_bad",
            disabled=not parsed.errors,
            help="Without this, a file with bad rows is not imported at all.",
        )
        confirmed = st.form_submit_button("Import", type="primary")
    if confirmed:
        try:
            with st.spinner(f"Importing {parsed.pairs or len(parsed.prompts)} records in one transaction…"):
                result = datasets_io.import_parsed(
                    db,
                    parsed,
                    source=datasets_io.source_name(name.strip(), entry["filename"]),
                    skip_bad=skip_bad,
                    user_id=getattr(user, "id", None),
                    queue=queue,
                    details={"file": entry["filename"], "sha256": entry["sha256"]},
                )
        except StudioError as exc:
            show_error(exc)
            return
        on_imported()
        st.session_state["import_result"] = (
            f"Imported {entry['filename']} as `{result.source}`: {result.pairs} pairs, {result.labeled} labeled "
            f"answers, {result.prompts} prompts"
            + (f" (into queue {queue})" if queue else "")
            + f"; {result.duplicates} already there; {len(result.skipped_rows)} bad rows skipped."
        )
        st.rerun()
