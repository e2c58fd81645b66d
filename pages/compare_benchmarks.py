"""The Compare page's Benchmarks tab (admins): standard benchmarks of a version against its parent through
lm-evaluation-harness (core.compare.benchmarks), run in the studio's background worker with a progress bar and
Cancel; a table and a bar chart of both sides, regressions marked."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.compare.benchmarks import OFFLINE_SUITE, latest_comparison, regression_margin, set_regression_margin
from core.errors import StudioError
from pages.common import show_error, shown_errors


def show_benchmarks(studio: Any, versions: list[str], admin: Any) -> None:
    st.caption(
        f"Does training cost general ability? [lm-evaluation-harness](https://github.com/EleutherAI/"
        f"lm-evaluation-harness) scores the version (its adapter merged into the base, checked to be applied) "
        f"and its parent with identical settings. **{OFFLINE_SUITE}** runs offline: general knowledge, short "
        f"arithmetic, instructions with checkable constraints. Other lm-eval tasks (ifeval, arc_easy, gsm8k, "
        "mmlu_...) need their datasets downloaded. A drop beyond max(margin, 2 x the standard error) is a "
        "regression, and fails the release gate."
    )
    margin = regression_margin(studio.db)
    with st.expander(f"Regression margin: {margin:g} points"):
        new = st.number_input(
            "Margin (points)",
            min_value=0.0,
            max_value=50.0,
            value=margin,
            step=0.5,
            help="A drop counts as a regression beyond max(margin, 2 x the standard error). Used "
            "by every comparison, the release gate and the model card.",
        )
        if st.button("Save the margin", key="bench-margin-save") and new != margin:
            with shown_errors():
                set_regression_margin(studio.db, admin, new)
                st.rerun()
    trained = [v for v in versions if v != "base"]
    if not trained:
        st.info("Train a version first: it is benchmarked against its parent.", icon=":material/info:")
        return
    with st.form("bench-run"):
        left, mid, right = st.columns([1, 2, 1])
        version = left.selectbox("Version", trained, index=len(trained) - 1, key="bench-version")
        tasks = mid.text_input("Tasks", value=OFFLINE_SUITE, help="Comma-separated lm-eval task or group names.")
        limit = right.number_input(
            "Examples per task (0: all)", min_value=0, value=0, help="A quick look: fewer examples, noisier scores."
        )
        chat = st.checkbox(
            "Apply the chat template",
            value=True,
            help="The studio's versions are chat models; scores move with this setting.",
        )
        run = st.form_submit_button("Run benchmarks", type="primary", icon=":material/speed:")
    if run:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        with shown_errors():
            studio.benchmarks.request(
                version, None, admin, tasks=names or [OFFLINE_SUITE], limit=int(limit) or None, chat_template=chat
            )
    _live(studio, version)


@st.fragment(run_every=2)
def _live(studio: Any, version: str) -> None:
    """The run's progress while it computes (with Cancel), then the scores of the chosen version."""
    state = studio.benchmarks.state(version)
    if state["status"] in ("queued", "computing"):
        st.progress(state.get("progress") or 0.0, text=f"{version}: {state.get('message') or 'waiting'}")
        if st.button("Cancel", key="bench-cancel", icon=":material/stop:"):
            studio.benchmarks.cancel(version)
    elif state["status"] == "failed":
        error = state["error"]
        (st.warning if error["code"] == "cancelled" else st.error)(
            f"**{error['message']}**" + (f"  \n{error['hint']}" if error.get("hint") else ""), icon=":material/info:"
        )
    try:
        result = latest_comparison(studio.db, version)
    except StudioError as exc:
        show_error(exc)
        return
    if result is None:
        st.caption(f"{version} has not been benchmarked yet.")
        return
    show_comparison(result)


def show_comparison(result: dict[str, Any]) -> None:
    settings, against = result["settings"], result["against"]
    guard = result["adapter"]
    if result["regressions"]:
        st.error(
            f"{result['version']} regressed against {against} on "
            + ", ".join(f"{r['task']} ({r['change_points']:+.1f} points)" for r in result["regressions"])
            + ".",
            icon=":material/trending_down:",
        )
    elif against:
        st.success(f"No task dropped beyond the threshold against {against}.", icon=":material/check_circle:")
    st.caption(
        f"lm-eval {settings['lm_eval_version']} · tasks {', '.join(settings['tasks'])} · chat template "
        f"{'on' if settings['chat_template'] else 'off'} · limit {settings['limit'] or 'none'} · seed "
        f"{settings['seed']} · adapter guard: "
        + (
            guard.get("note")
            or (
                f"applied (probe logits moved by {guard.get('probe_max_logit_diff', 0):.3g})"
                if guard.get("adapter_applied")
                else "the base itself"
            )
        )
    )
    rows = pd.DataFrame(
        [
            {
                "task": r["task"],
                "metric": r["metric"],
                result["version"]: r["value"],
                "± stderr": r["stderr"],
                against or "parent": r["against_value"],
                "change (points)": r.get("change_points"),
                "regressed": "yes" if r.get("regressed") else "",
            }
            for r in result["tasks"]
        ]
    )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        placeholder="",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in (result["version"], "± stderr", against or "parent")
        },
    )
    fig = go.Figure()
    labels = [f"{r['task']} ({r['metric']})" for r in result["tasks"]]
    if against:
        fig.add_bar(
            name=against,
            x=labels,
            y=[r["against_value"] for r in result["tasks"]],
            error_y=dict(type="data", array=[r["against_stderr"] or 0 for r in result["tasks"]]),
        )
    fig.add_bar(
        name=result["version"],
        x=labels,
        y=[r["value"] for r in result["tasks"]],
        error_y=dict(type="data", array=[r["stderr"] or 0 for r in result["tasks"]]),
    )
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_range=[0, 1])
    st.plotly_chart(fig, width="stretch", key="bench-chart")
