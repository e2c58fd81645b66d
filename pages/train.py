"""Train page (admins): algorithm, parent version, data filters and a hyperparameter form generated from
the algorithm's config dataclass; dry run first, then launch a background job."""

import pandas as pd
import streamlit as st

from core.compare.evaluation import reward_models as live_reward_models
from core.data.job_data import build_training_data, unit
from core.data.split import HELD_OUT_PERCENT
from core.serving.hardware import training_defaults
from core.serving.policies import servable_policies
from core.studio import current
from core.training import ALGORITHMS
from core.training.distributed import LaunchConfig
from core.training.estimate import base_parameter_count
from core.training.request import JobRequest
from core.training.suggest import suggest_next_job
from pages.common import data_key, dataclass_form, filter_form, require_page, shown_errors


def setting_text(value: object) -> str:
    """One hyperparameter value as table text: floats short (5e-04), nothing for a missing value (not "None"). Text
    throughout, as a column of mixed ints, floats and names makes pyarrow refuse the frame."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table(settings: list[dict]) -> pd.DataFrame:
    """The dry run's hyperparameters: name, value, who chose it and why."""
    frame = pd.DataFrame([{**row, "value": setting_text(row["value"])} for row in settings])
    return frame.rename(columns={"source": "chosen by"}).fillna("")


studio = current()


# Both read every label (0.3-0.5 s per read at 10k votes, three reads per rerun): cached on the labels' fingerprint
# (pages.common.data_key), so they are computed once per change of the labels, not on every widget change.
@st.cache_data(max_entries=4, show_spinner=False)
def suggestion_for(db_path: str, version: str):
    return suggest_next_job(studio.db)


@st.cache_data(max_entries=32, show_spinner=False)
def example_count(db_path: str, algorithm: str, filters, version: str) -> int:
    """How many training examples ``filters`` select for ``algorithm`` (a StudioError is raised, never cached)."""
    return len(build_training_data(studio.db, ALGORITHMS[algorithm], filters).rows)


st.title("Train")
admin, _ = require_page("train")
version = data_key(studio.db)

suggestion = suggestion_for(str(studio.db.path), version)
with st.container(border=True):
    st.markdown(f"**Suggested next step.** {suggestion.text}")
    if suggestion.ready:
        st.caption(
            "Learning rate, epochs and batch are chosen from the data (the dry run below explains each); "
            "20% of prompts are held out, evaluated while training, and used for the 'what changed' "
            "report when the job ends."
        )
        if st.button(f"Launch DPO from {suggestion.parent}", icon=":material/rocket_launch:", key="suggested"):
            with shown_errors():
                job_id = studio.supervisor.submit(suggestion.request, admin)
                st.success(f"Job #{job_id} queued. Follow it on the Runs page.")
                st.page_link("runs.py", label="Open Runs", icon=":material/monitoring:")
    else:
        st.progress(
            suggestion.new_pairs / (suggestion.new_pairs + suggestion.needed),
            text=f"{suggestion.needed} more labels to go",
        )

names = list(ALGORITHMS)
algorithm = st.selectbox("Algorithm", names, index=names.index("dpo"), format_func=lambda n: ALGORITHMS[n].label)
spec = ALGORITHMS[algorithm]
st.caption(spec.description)
left, right = st.columns(2)
parents = [p["name"] for p in servable_policies(studio.db)]
parent = left.selectbox(
    "Start from (and compare against)",
    parents,
    index=len(parents) - 1,
    help="The new version starts from this one, which is also the reference model for DPO, KTO, ORPO and online RL.",
)
reward_model = None
if spec.needs_reward_model:
    reward_models = list(reversed(live_reward_models(studio.db)))  # oldest first: rm1 is the default
    if not reward_models:
        st.warning(
            "Online RL scores its answers with a reward model: train one first (algorithm “Reward model”).",
            icon=":material/info:",
        )
    reward_model = right.selectbox("Reward model", reward_models) if reward_models else None

filters = filter_form(
    studio.db, f"filters-{algorithm}", label="Data filters", defaults={"hold_out_percent": HELD_OUT_PERCENT}
)
with shown_errors(stop=True):
    examples = example_count(str(studio.db.path), algorithm, filters, version)
with st.expander("Launch: one process, several GPUs or machines", expanded=False):
    st.caption(
        "Written as the job's accelerate config (runs/<id>/accelerate.yaml). Without GPUs, ddp runs CPU "
        "processes that share the cores; fsdp and DeepSpeed need CUDA GPUs. With several processes each "
        "accumulates fewer micro-batches, so the effective batch and the steps stay the same."
    )
    with shown_errors(stop=True):
        launch = LaunchConfig.from_dict(dataclass_form(LaunchConfig, "launch"))
    if launch.num_machines > 1:
        st.info(
            f"Start the same job on the other {launch.num_machines - 1} machine(s) with their own rank: "
            "`accelerate launch --config_file runs/<id>/accelerate.yaml --machine_rank N -m core.training.child "
            "runs/<id>/config.json` (the run dir copied over).",
            icon=":material/lan:",
        )
plan = JobRequest(algorithm, parent, {}, filters, reward_model, launch).plan(examples)

with st.expander("Hyperparameters", expanded=True):
    model_params = None
    if studio.model_status() == "ready":
        model_params = base_parameter_count(studio.model()[0])  # the base alone, whatever adapters are loaded
        hw = training_defaults(studio.hardware, model_params)
        st.caption(f"Precision and memory follow the detected hardware: {hw['reason']}")
    order = ["algorithm", "training", "lora", "model", "run"]
    groups = sorted(
        dict.fromkeys(f.metadata.get("group", "training") for f in spec.config_class.__dataclass_fields__.values()),
        key=lambda g: order.index(g) if g in order else len(order),
    )
    st.caption(f"Defaults chosen for the data: {plan.summary}. Change any value to override it.")
    form_values = {}
    for tab, group in zip(st.tabs([g.capitalize() for g in groups]), groups):
        with tab:
            form_values |= dataclass_form(
                spec.config_class, f"hp-{algorithm}-{examples}", defaults=plan.values, group=group
            )
    hyperparams = {k: v for k, v in form_values.items() if v != plan.values.get(k)}  # only what the user changed

request = JobRequest(algorithm, parent, hyperparams, filters, reward_model, launch)
dry_col, launch_col = st.columns([1, 1])
if dry_col.button("Dry run", icon=":material/fact_check:", width="stretch"):
    with shown_errors():
        report = studio.supervisor.dry_run(request)
        st.session_state["dry-run"] = (algorithm, report)
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
    st.dataframe(pd.DataFrame([details]), hide_index=True, width="stretch", placeholder="")
    st.markdown(
        f"**{report.summary}**"
        + (f" · {report.eval_examples} held-out {unit(spec)} evaluated while training" if report.eval_examples else "")
    )
    for note in report.notes:
        st.info(note, icon=":material/info:")
    # st.table, not st.dataframe: each setting's reason is a sentence, and a data grid cuts it off at the column
    # edge; a static table wraps it
    st.table(settings_table(report.settings), hide_index=True)
if launch_col.button("Launch", type="primary", icon=":material/rocket_launch:", width="stretch"):
    with shown_errors():
        job_id = studio.supervisor.submit(request, admin)
        st.success(f"Job #{job_id} queued: its data is frozen in runs/{job_id}/. Follow it on the Runs page.")
        st.page_link("runs.py", label="Open Runs", icon=":material/monitoring:")
