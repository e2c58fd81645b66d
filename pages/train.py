"""Train page (admins): algorithm, parent version, data filters and a hyperparameter form generated from
the algorithm's config dataclass; dry run first, then launch a background job."""
import pandas as pd
import streamlit as st

from core import trainsets
from core.errors import StudioError
from core.hardware import training_defaults
from core.jobs import JobRequest, unit
from core.policies import servable_policies
from core.studio import current
from core.training import ALGORITHMS
from pages.common import admin_only, current_user, dataclass_form

studio = current()
st.title("Train")
if not admin_only():
    st.stop()

names = list(ALGORITHMS)
algorithm = st.selectbox("Algorithm", names, index=names.index("dpo"), format_func=lambda n: ALGORITHMS[n].label)
spec = ALGORITHMS[algorithm]
st.caption(spec.description)
left, right = st.columns(2)
parents = [p["name"] for p in servable_policies(studio.db)]
parent = left.selectbox("Start from (and compare against)", parents, index=len(parents) - 1,
                        help="The new version starts from this one, which is also the reference model "
                             "for DPO, KTO, ORPO and online RL.")
reward_model = None
if spec.needs_reward_model:
    reward_models = [r["name"] for r in studio.db.query(
        "SELECT name FROM policies WHERE algorithm = 'reward' AND deleted_at IS NULL ORDER BY id")]
    if not reward_models:
        st.warning("Online RL scores its answers with a reward model: train one first (algorithm "
                   "“Reward model”).", icon=":material/info:")
    reward_model = right.selectbox("Reward model", reward_models) if reward_models else None

with st.expander("Data filters", expanded=False):
    options = {
        "labelers": [r["name"] for r in studio.db.query("SELECT name FROM users ORDER BY name")],
        "policies": [r["name"] for r in studio.db.query("SELECT name FROM policies WHERE deleted_at IS NULL")],
        "exclude_flags": list(trainsets.FLAGS),
        "aspects": [r["name"] for r in studio.db.query("SELECT name FROM aspects ORDER BY position")],
    }
    filter_values = dataclass_form(trainsets.Filters, f"filters-{algorithm}", options)

with st.expander("Hyperparameters", expanded=True):
    model_params = None
    if studio.model_status() == "ready":
        model_params = sum(p.numel() for p in studio.model()[0].parameters())
        hw = training_defaults(studio.hardware, model_params)
        st.caption(f"Precision and memory follow the detected hardware: {hw['reason']}")
    order = ["algorithm", "training", "lora", "model", "run"]
    groups = sorted(dict.fromkeys(f.metadata.get("group", "training")
                                  for f in spec.config_class.__dataclass_fields__.values()),
                    key=lambda g: order.index(g) if g in order else len(order))
    hyperparams = {}
    for tab, group in zip(st.tabs([g.capitalize() for g in groups]), groups):
        with tab:
            hyperparams |= dataclass_form(spec.config_class, f"hp-{algorithm}", group=group)

request = JobRequest(algorithm, parent, hyperparams, trainsets.Filters(**filter_values), reward_model)
dry_col, launch_col = st.columns([1, 1])
if dry_col.button("Dry run", icon=":material/fact_check:", use_container_width=True):
    try:
        report = studio.supervisor.dry_run(request)
        st.session_state["dry-run"] = (algorithm, report)
    except StudioError as exc:
        st.error(f"{exc.message}. {exc.hint}")
if "dry-run" in st.session_state and st.session_state["dry-run"][0] == algorithm:
    report = st.session_state["dry-run"][1]
    cols = st.columns(4)
    cols[0].metric(f"Usable {unit(spec)}", report.examples, help=f"minimum {report.min_examples}")
    cols[1].metric("Estimated steps", report.estimate.get("steps", 0))
    cols[2].metric("Estimated time", f"{report.estimate.get('seconds', 0) / 60:.1f} min")
    cols[3].metric("Estimated peak memory", f"{report.estimate.get('peak_memory_bytes', 0) / 2**30:.2f} GiB")
    if report.ok:
        st.success(f"Ready: {report.examples} {unit(spec)}. Estimates are rough (model size × tokens).")
    else:
        st.error(f"Refused: {report.reason}")
    details = {**report.data_stats, **{f"skipped: {k}": v for k, v in report.skipped.items()}}
    st.dataframe(pd.DataFrame([details]), hide_index=True, use_container_width=True)
if launch_col.button("Launch", type="primary", icon=":material/rocket_launch:", use_container_width=True):
    try:
        job_id = studio.supervisor.submit(request, current_user())
        st.success(f"Job #{job_id} queued: its data is frozen in runs/{job_id}/. Follow it on the Runs page.")
        st.page_link("runs.py", label="Open Runs", icon=":material/monitoring:")
    except StudioError as exc:
        st.error(f"{exc.message}. {exc.hint}")
