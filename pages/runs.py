"""Runs page: every training job with live progress, actions, logs and curves (plotly, auto-refresh)."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import access
from core.compare.report import latest_report
from core.share.curves import CURVE_TITLES, overfitting_step
from core.studio import current
from pages.common import can, require_page, show_report, shown_errors

studio = current()
supervisor = studio.supervisor
st.title("Runs")
viewer, _ = require_page("runs")

CURVES = [
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "labeled_logratio",
    "kl",
    "reward",
    "accuracy",
    "rewards/chosen",
    "rewards/rejected",
    "reward_std",
    "learning_rate",
    "grad_norm",
    "tokens_per_s",
]
STATUS_COLOR = {
    "queued": "gray",
    "running": "blue",
    "paused": "orange",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "gray",
    "interrupted": "orange",
}


def evaluating(progress: dict) -> bool:
    """A running job between two steps, measuring itself on the held-out split (its step counter stands still)."""
    return progress.get("status") == "running" and progress.get("phase") == "evaluating"


def evaluation_text(progress: dict) -> str:
    """'evaluating on 8 held-out examples… 3/4 batches' (core.training.callbacks.ProgressCallback's record)."""
    examples, done, total = (progress.get(k) for k in ("eval_examples", "eval_batches_done", "eval_batches"))
    text = f"evaluating on {examples} held-out examples…" if examples else "evaluating on the held-out examples…"
    return text + (f" {done}/{total} batches" if total else "")


def eta(progress: dict) -> str:
    """'step 24 / 30 · evaluating on 8 held-out examples… 3/4 batches · ETA 1m 5s' (the ETA includes the
    evaluations still to come)."""
    if not progress.get("max_steps"):
        return ""
    text = f"step {progress.get('step', 0)} / {progress['max_steps']}"
    if evaluating(progress):
        text += " · " + evaluation_text(progress)
    if progress.get("eta_s") is not None and progress.get("status") == "running":
        text += f" · ETA {int(progress['eta_s'] // 60)}m {int(progress['eta_s'] % 60)}s"
    return text


@st.fragment(run_every="3s")
def job_table() -> None:
    jobs = supervisor.jobs()
    if not jobs:
        st.info("No training jobs yet: start one on the Train page.", icon=":material/info:")
        return
    rows = [
        {
            "job": j["id"],
            "status": j["status"],
            "algorithm": j["algorithm"],
            "from": j["parent"],
            "version": j["version"] or "",
            "progress": (j["progress"].get("step", 0) / j["progress"]["max_steps"])
            if j["progress"].get("max_steps")
            else (1.0 if j["status"] == "succeeded" else 0.0),
            "eta": eta(j["progress"]),
            "created": j["created_at"],
        }
        for j in jobs
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)},
    )


job_table()
jobs = supervisor.jobs()
if not jobs:
    st.stop()

st.subheader("Job")
job_id = st.selectbox(
    "Job",
    [j["id"] for j in jobs],
    format_func=lambda i: next(f"#{j['id']} {j['algorithm']} ({j['status']})" for j in jobs if j["id"] == i),
)


@st.fragment(run_every="2s")
def job_details(job_id: int, listed_status: str) -> None:
    job = supervisor.job(job_id)
    progress = supervisor.progress(job)
    status = job["status"]
    if status != listed_status:
        st.rerun()  # the whole page: the job picker's label and the versions table follow the new status
    st.badge(status, color=STATUS_COLOR.get(status, "gray"))
    st.markdown(
        f"{job['algorithm']} from `{job['parent']}`" + (f" → **{job['version']}**" if job.get("version") else "")
    )
    if progress.get("max_steps"):
        st.progress(min(1.0, progress.get("step", 0) / progress["max_steps"]), text=eta(progress))
    if evaluating(progress):
        done, total = progress.get("eval_batches_done") or 0, progress.get("eval_batches") or 0
        st.progress(min(1.0, done / total) if total else 0.0, text=evaluation_text(progress).capitalize())
    if job["error"]:
        st.error(
            job["error"].split("\n--- last lines")[0]
            if can(viewer, "runs.log")
            else "The job failed: an admin can read why in its log."
        )
    if can(viewer, "runs.control"):
        cols = st.columns(3)
        actions = {"Pause (checkpoint)": supervisor.pause, "Cancel": supervisor.cancel, "Resume": supervisor.resume}
        enabled = {
            "Pause (checkpoint)": status == "running",
            "Cancel": status in ("queued", "running", "paused", "interrupted"),
            "Resume": status in ("paused", "interrupted", "failed"),
        }
        for col, (label, action) in zip(cols, actions.items()):
            if col.button(label, disabled=not enabled[label], key=f"{label}-{job_id}", width="stretch"):
                with shown_errors():
                    action(job_id)
                    st.toast(f"{label}: requested for job #{job_id}")
    if can(viewer, "runs.log"):
        with st.expander("Log (last lines)", expanded=status in ("failed",)):
            st.code(supervisor.log_tail(job_id) or "(no output yet)", language=None)


job_details(job_id, next(j["status"] for j in jobs if j["id"] == job_id))

st.subheader("Curves")
picked = st.multiselect("Runs to overlay", [j["id"] for j in jobs], default=[job_id], format_func=lambda i: f"#{i}")
smoothing = st.slider("Smoothing (exponential moving average)", 0.0, 0.99, 0.0, 0.01)


def smooth(values: pd.Series, alpha: float) -> pd.Series:
    return values.ewm(alpha=1 - alpha, adjust=False).mean() if alpha > 0 else values


def kept_steps(job_ids: list[int]) -> dict[int, int]:
    """Jobs whose held-out evaluation chose a checkpoint: the step whose weights became the version."""
    kept = {}
    for jid in job_ids:
        setup = supervisor.result(jid).get("setup") or {}
        if setup.get("kept_step") is not None:
            kept[jid] = setup["kept_step"]
    return kept


@st.fragment(run_every="3s")
def curves(job_ids: list[int], alpha: float) -> None:
    metrics = pd.DataFrame(supervisor.metrics(job_ids), columns=["job_id", "step", "name", "value"])
    if metrics.empty:
        st.caption("No metrics yet: curves appear after the first logging step.")
        return
    names = set(metrics["name"])
    # held-out ("eval_") curves are drawn on the chart of their training metric, dashed
    train_names = {n for n in names if not n.startswith("eval_")} | {
        n[5:] for n in names if n.startswith("eval_") and n[5:] in CURVES
    }
    available = [m for m in CURVES if m in train_names] + sorted(train_names - set(CURVES) - {"epoch"})
    chosen = st.multiselect(
        "Metrics",
        available,
        default=[m for m in available if m in CURVES][:4],
        key="curve-metrics",
        help="Dashed: the same metric on the held-out split (labels never "
        "trained on), measured every few steps; the dotted line marks the step kept.",
    )
    kept = kept_steps(job_ids)
    for column, name in zip(st.columns(2) * ((len(chosen) + 1) // 2), chosen):
        fig = go.Figure()
        for jid in job_ids:
            for metric, label, dash in ((name, f"#{jid}", None), (f"eval_{name}", f"#{jid} held-out", "dash")):
                series = metrics[(metrics["job_id"] == jid) & (metrics["name"] == metric)].sort_values("step")
                if not series.empty:
                    fig.add_scatter(
                        x=series["step"],
                        y=smooth(series["value"], alpha),
                        mode="lines+markers",
                        name=label,
                        line=dict(dash=dash),
                    )
            if jid in kept:
                fig.add_vline(x=kept[jid], line_dash="dot", line_color="gray")
            if name == "loss":
                series = metrics[metrics["job_id"] == jid]
                points = {
                    n: list(zip(series[series["name"] == n]["step"], series[series["name"] == n]["value"]))
                    for n in ("loss", "eval_loss")
                }
                step = overfitting_step(sorted(points["loss"]), sorted(points["eval_loss"]))
                if step is not None:
                    fig.add_vrect(x0=step, x1=series["step"].max(), fillcolor="red", opacity=0.08, line_width=0)
                    column.warning(
                        f"Job #{jid}: held-out loss rose after step {step} while training loss kept "
                        "falling: the version memorised its training pairs from there on.",
                        icon=":material/warning:",
                    )
        title, meaning = CURVE_TITLES.get(name, (name, ""))
        fig.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step")
        column.plotly_chart(fig, width="stretch", key=f"chart-{name}")
        if meaning:
            column.caption(meaning)
    wide = metrics.pivot_table(index=["job_id", "step"], columns="name", values="value").reset_index()
    st.download_button("Download CSV", wide.to_csv(index=False), file_name="metrics.csv", mime="text/csv")


curves(picked, smoothing)

st.subheader("What changed")


@st.fragment(run_every="3s")
def what_changed(job_id: int) -> None:
    """The new version vs its parent on labels it never saw (core.compare.report), computed after the job."""
    job = supervisor.job(job_id)
    version = job.get("version")
    if job["status"] != "succeeded" or not version:
        st.caption("A report appears here once the job has produced a version.")
        return
    if job["algorithm"] == "reward":
        st.caption(f"{version} is a reward model: its held-out accuracy is on the Compare page (Evaluation).")
        return
    setup = supervisor.result(job_id).get("setup") or {}
    if setup.get("kept_step") is not None:
        st.caption(
            f"Kept the weights of step {setup['kept_step']} of {setup.get('planned_steps')} (best held-out "
            "evaluation)"
            + (": stopped early, held-out accuracy had stopped improving" if setup.get("stopped_early") else "")
        )
    report = latest_report(studio.db, version, thorough_first=True)
    if report is not None:
        show_report(report, access.scope(viewer, "runs.report") == access.ALL, key=f"runs-{job_id}")
        return
    state = studio.reports.state(version)
    if state["status"] in ("queued", "computing"):
        st.progress(
            state.get("progress", 0.0), text=f"Measuring {version} against {job['parent']}: {state.get('message', '')}"
        )
    elif state["status"] == "failed":
        st.error(f"The report failed: {state['error']['message']}. {state['error']['hint']}")
    if (
        state["status"] != "computing"
        and can(viewer, "api POST /policies/{name}/report")
        and st.button("Compute the report", key=f"report-{job_id}", icon=":material/analytics:")
    ):
        with shown_errors():
            studio.reports.request(version, user=viewer)


what_changed(job_id)

st.subheader("Versions")
from core.serving.policies import delete_policy, list_policies, rename_policy  # noqa: E402

versions = list_policies(studio.db)
table = pd.DataFrame(
    [
        {
            "name": v["name"],
            "from": v["parent"] or "",
            "algorithm": v["algorithm"] or "base",
            "job": v["job_id"],
            "final loss": (v["metrics"] or {}).get("loss"),
            "data hash": (v["data_hash"] or "")[:12],
            "created": v["created_at"],
        }
        for v in versions
    ]
)
st.dataframe(table, hide_index=True, width="stretch")
trained = [v["name"] for v in versions if v["name"] != "base"]
if trained and can(viewer, "runs.versions"):
    with st.form("version-admin"):
        target = st.selectbox("Version", trained)
        new_name = st.text_input("New name (leave empty to keep)")
        confirm_delete = st.checkbox("Delete this version (it disappears from menus; files and records stay)")
        if st.form_submit_button("Apply"):
            with shown_errors():
                if confirm_delete:
                    delete_policy(studio.db, viewer, target)
                    st.success(f"{target} deleted.")
                elif new_name.strip():
                    rename_policy(studio.db, viewer, target, new_name)
                    st.success(f"{target} is now {new_name.strip()}.")
