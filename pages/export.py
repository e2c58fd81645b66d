"""Export page (admins): adapters, merged models and datasets -> folders, zips and the Hugging Face Hub.

Thin: every action is one call into core.share (exports, hub). The Hub token comes from HF_TOKEN or a password
field used for one push; it is kept in this browser session's memory at most (for a retry), never in DuckDB or files.
"""

import json
import os
import threading

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from core.compare import safety
from core.compare.gate import evaluate_gate
from core.data.kinds import EXPORTABLE, KINDS
from core.errors import StudioError
from core.share.cards import LICENSES, CardOptions
from core.share.exports import (
    DATASET_FORMATS,
    DTYPES,
    MODEL_KINDS,
    QUANTIZED_BITS,
    export_adapter,
    export_dataset,
    export_files,
    export_gguf,
    export_merged,
    export_quantized,
    export_training_data,
    exportable_versions,
    human_size,
    list_exports,
    ollama_usage,
    zip_export,
)
from core.share.gguf_export import GGUF_HELP, GGUF_TYPES
from core.share.hub import PushOptions, adapter_manifest, push_export, resolve_token, suggest_repo_id
from core.share.versions import base_hub_id
from core.studio import current
from pages.common import dataclass_form, filter_form, require_page, show_error, show_gate, shown_errors

st.title("Export")
user, _ = require_page("export")
studio = current()
db, data_dir = studio.db, studio.settings.data_dir

NO_CUDA_NOTE = (
    "bitsandbytes 4/8-bit exports are not offered here: bitsandbytes quantizes on a CUDA GPU and "
    "this machine has none. For a smaller model on a CPU, export GGUF q8_0 or q4_0."
)


def show_export_files(export_id: int) -> None:
    """What an export wrote, names and sizes; for a GGUF export also the Modelfile and the command that hands the
    file to Ollama, so the next step is a copy and paste rather than a read of the model card."""
    try:
        files = export_files(db, export_id)
        ollama = ollama_usage(db, export_id)
    except StudioError as exc:
        show_error(exc)
        return
    total = sum(f["bytes"] for f in files)
    st.markdown(f"**Files written** ({len(files)}, {human_size(total)})")
    st.dataframe(files, hide_index=True, column_order=("file", "size"), placeholder="")
    if ollama:
        st.markdown("**Run it with Ollama**")
        st.code(ollama["command"] + f" && ollama run {ollama['name']}", language="bash")
        with st.expander("Modelfile"):
            st.code(ollama["modelfile"], language="text")


tab_model, tab_data, tab_hub = st.tabs(["Adapter / merged model", "Dataset", "Exports and Hub"])

# --- adapters and merged models ------------------------------------------------------------------------------
with tab_model:
    versions = exportable_versions(db)
    if not versions:
        st.info("No trained versions yet. Train one on the Train page; its adapter can then be exported here.")
    else:
        names = [v["name"] for v in versions]
        version = st.selectbox(
            "Version",
            names,
            index=len(names) - 1,
            format_func=lambda n: next(
                f"{v['name']} — {v['algorithm']}" + ("" if v["has_adapter"] else " (full weights)")
                for v in versions
                if v["name"] == n
            ),
        )
        chosen = next(v for v in versions if v["name"] == version)
        if chosen["algorithm"] != "reward":
            with st.expander("Release gate", expanded=True):
                show_gate(evaluate_gate(db, version).to_dict(), studio.settings.release_gate)
        change = safety.safety_change(db, version)
        if change and change["worse"]:
            st.warning(
                f"{version} is less safe than {change['against']}: {'; '.join(change['reasons'])}. Its card "
                "says so too.",
                icon=":material/gpp_bad:",
            )
        elif safety.latest_safety(db, version) is None:
            st.info(
                f"{version} has no safety evaluation yet (one runs after every job; or on the Compare page, or "
                f"`launch.py safety-eval {version}`).",
                icon=":material/shield:",
            )
        if not base_hub_id(chosen["base_model"]):
            st.warning(
                f"The base model of {version} (`{chosen['base_model']}`) has no Hub id: an export would name it "
                "by its local path, which exists only on this machine. Give its Hub id below "
                "(`base_model_id`) so the adapter and the card's usage snippet work elsewhere.",
                icon=":material/warning:",
            )
        kinds = {
            "adapter": "LoRA adapter (PEFT layout)",
            "merged": "Merged model (adapter folded into the base)",
            "gguf": "GGUF file for llama.cpp / Ollama / LM Studio (merged, with a Modelfile)",
            "quantized": "bitsandbytes 4/8-bit (merged; needs a CUDA GPU)",
        }
        if not studio.hardware.cuda_available:
            del kinds["quantized"]  # it would only fail: bitsandbytes quantizes on CUDA
        # outside the form, so that picking a kind reruns the page and shows only that kind's options
        kind = st.radio(
            "Export",
            list(kinds),
            format_func=kinds.get,
            key="export-kind",
            help="The adapter is small and loads onto the base with PeftModel.from_pretrained; "
            "the merged model is a standalone checkpoint; GGUF runs in local runtimes.",
        )
        if "quantized" not in kinds:
            st.caption(NO_CUDA_NOTE)
        with st.form("export-model"):
            dtype, quant, bits = "float32", "q8_0", "nf4"
            if kind == "merged":
                dtype = st.selectbox("Merged precision", DTYPES, help="float16 / bfloat16 halve the size.")
            elif kind == "gguf":
                quant = st.selectbox(
                    "GGUF type",
                    GGUF_TYPES,
                    index=GGUF_TYPES.index("q8_0"),
                    format_func=lambda q: f"{q} — {GGUF_HELP[q]}",
                )
            elif kind == "quantized":
                bits = st.selectbox(
                    "bitsandbytes type", QUANTIZED_BITS, help="nf4: 4-bit NormalFloat (QLoRA's type); int8: LLM.int8()."
                )
            card = CardOptions(**dataclass_form(CardOptions, "model-card"))
            go = st.form_submit_button("Export", type="primary")
        if go:
            with shown_errors():
                if kind == "gguf":
                    bar, context = st.progress(0.0, text="Merging the adapter"), get_script_run_ctx()

                    def show(done: int, total: int, name: str) -> None:
                        """Called from the export's worker thread: it needs this page's context to draw."""
                        add_script_run_ctx(threading.current_thread(), context)
                        bar.progress(done / total, text=f"Writing {name} ({done}/{total})")

                    result = export_gguf(db, data_dir, version, user, quant, card, progress=show)
                else:
                    with st.spinner("Writing the export (a merge loads the base model once)..."):
                        result = {
                            "adapter": lambda: export_adapter(db, data_dir, version, user, card),
                            "merged": lambda: export_merged(db, data_dir, version, user, dtype, card),
                            "quantized": lambda: export_quantized(db, data_dir, version, user, bits, card),
                        }[kind]()
                st.session_state["export-selected"] = result.id
                st.success(
                    f"Export {result.id} written to `{result.path}` ({len(result.files)} files). "
                    "Download or push it under *Exports and Hub*.",
                    icon=":material/check_circle:",
                )
                show_export_files(result.id)

# --- datasets ------------------------------------------------------------------------------------------------
with tab_data:
    with st.form("export-dataset"):
        dataset_kind = st.radio("Dataset", EXPORTABLE, format_func=lambda name: KINDS[name].label)
        formats = st.multiselect("Formats", DATASET_FORMATS, default=list(DATASET_FORMATS))
        name = st.text_input("Name", help="Title of the dataset card and part of the folder name (optional).")
        filters = filter_form(db, "export-filters")
        license_ = st.selectbox("License", LICENSES, key="dataset-license")
        go_data = st.form_submit_button("Export dataset", type="primary")
    if go_data:
        with shown_errors():
            result = export_dataset(
                db, data_dir, dataset_kind, user, filters, formats, CardOptions(license=license_), name.strip() or None
            )
            st.session_state["export-selected"] = result.id
            st.success(f"Export {result.id} written to `{result.path}`.", icon=":material/check_circle:")
            show_export_files(result.id)

    trained = [v["name"] for v in exportable_versions(db)]
    if trained:
        st.markdown(
            "**Or the exact rows a version was trained on.** Once pushed, that version's model cards name "
            "the dataset repo by themselves."
        )
        with st.form("export-training-data"):
            data_version = st.selectbox("Version", trained, index=len(trained) - 1, key="training-data-version")
            go_training = st.form_submit_button("Export its training data")
        if go_training:
            with shown_errors():
                result = export_training_data(db, data_dir, data_version, user, CardOptions(license=license_))
                st.session_state["export-selected"] = result.id
                st.success(f"Export {result.id} written to `{result.path}`.", icon=":material/check_circle:")
                show_export_files(result.id)

# --- every export: zip download and Hub push -----------------------------------------------------------------
with tab_hub:
    exports = list_exports(db)
    if not exports:
        st.info("Nothing exported yet. Export an adapter, a merged model or a dataset first.")
    else:
        st.dataframe(
            [
                {
                    "id": e["id"],
                    "kind": e["kind"],
                    "what": e["version"] or e["dataset_kind"],
                    "precision": e["dtype"],
                    "rows": e["rows"],
                    "created": e["created_at"][:16].replace("T", " "),
                    "on the Hub": e["repo_id"],
                    "commit": e["commit_url"],
                }
                for e in exports
            ],
            hide_index=True,
            placeholder="",
            column_config={"commit": st.column_config.LinkColumn("commit")},
        )
        ids = [e["id"] for e in exports]
        selected = st.session_state.get("export-selected")
        export_id = st.selectbox(
            "Export",
            ids,
            index=ids.index(selected) if selected in ids else 0,
            format_func=lambda i: next(
                f"#{e['id']} {e['kind']} {e['version'] or e['dataset_kind']}" for e in exports if e["id"] == i
            ),
        )
        show_export_files(export_id)
        st.download_button(
            "Download as zip",
            data=lambda: zip_export(db, export_id)[1],
            file_name=f"export-{export_id}.zip",
            mime="application/zip",
            icon=":material/download:",
            on_click="ignore",
        )

        st.subheader("Push to the Hugging Face Hub")
        if "push-done" in st.session_state:
            st.success(st.session_state.pop("push-done"), icon=":material/cloud_done:")
        env_token = bool(os.environ.get("HF_TOKEN", "").strip())

        def take_token() -> None:
            """Before the run: move the typed token out of the widget, so the field is empty again."""
            st.session_state["push-one-off"] = st.session_state.get("push-token", "")
            st.session_state["push-token"] = ""

        picked = next(e for e in exports if e["id"] == export_id)
        gate = None
        if picked["kind"] in MODEL_KINDS and picked["version"] and studio.settings.release_gate != "off":
            with shown_errors():
                gate = evaluate_gate(db, picked["version"]).to_dict()
                show_gate(gate, studio.settings.release_gate)
        with st.form("push"):
            push = PushOptions(
                **dataclass_form(PushOptions, f"push-{export_id}", defaults={"repo_id": suggest_repo_id(db, export_id)})
            )
            override = ""
            if gate is not None and not gate["passed"] and studio.settings.release_gate == "enforce":
                override = st.text_input(
                    "Override the release gate: reason",
                    key=f"push-override-{export_id}",
                    help="Push although the gate failed. The reason and your name go into the "
                    "audit log and the model card on the Hub.",
                )
            st.text_input(
                "One-off token" + (" (optional: HF_TOKEN is set)" if env_token else ""),
                type="password",
                key="push-token",
                help="A write token from huggingface.co/settings/tokens, used for this push "
                "only and never stored." + (" Empty: HF_TOKEN is used." if env_token else ""),
            )
            go_push = st.form_submit_button("Push", type="primary", on_click=take_token)

        def run_push(token: str, repo_id: str, private: bool, message: str | None, override: str = "") -> None:
            bar = st.progress(0.0, text="Starting")
            try:
                result = push_export(
                    db,
                    export_id,
                    user,
                    token,
                    repo_id,
                    private,
                    message,
                    progress=lambda fraction, text: bar.progress(min(1.0, fraction), text=text),
                    gate_mode=studio.settings.release_gate,
                    override=override or None,
                )
                st.session_state.pop("push-retry", None)
                # shown after a rerun, so the exports table and the manifest above already list the push
                st.session_state["push-done"] = (
                    f"Pushed to **{result.repo_id}**: [{result.commit_oid[:10]}]({result.commit_url})"
                )
                st.rerun()
            except StudioError as exc:
                show_error(exc)
                if getattr(exc, "retryable", False):  # kept in this session's memory only, for the retry button
                    st.session_state["push-retry"] = (export_id, token, repo_id, private, message, override)
                else:
                    st.session_state.pop("push-retry", None)

        if go_push:
            with shown_errors():
                run_push(
                    resolve_token(st.session_state.pop("push-one-off", "")),
                    push.repo_id,
                    push.private,
                    push.commit_message,
                    override,
                )
        elif st.session_state.get("push-retry") and st.session_state["push-retry"][0] == export_id:
            if st.button("Retry the push", icon=":material/refresh:"):
                _, token, repo_id, private, message, override = st.session_state["push-retry"]
                run_push(token, repo_id, private, message, override)

    st.subheader("Adapter manifest")
    manifest = adapter_manifest(db)
    if manifest:
        st.caption("Every adapter and merged model pushed to the Hub; a new push of a version suggests its repo.")
        st.dataframe(
            manifest,
            hide_index=True,
            placeholder="",
            column_config={"commit_url": st.column_config.LinkColumn("commit")},
        )
        st.download_button(
            "Download manifest.json",
            json.dumps(manifest, indent=2),
            file_name="manifest.json",
            mime="application/json",
            on_click="ignore",
        )
    else:
        st.caption("No adapter pushed yet.")
