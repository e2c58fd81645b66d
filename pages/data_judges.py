"""The Data page's AI judges section: how far each judge agrees with people, and (admins) running judges.

Not a page of its own; pages/data.py calls :func:`render_judges`. Thin: judging, storage and every figure live
in core.judging.judges / core.judging.runs. A one-off endpoint key typed here goes to the run in memory and is
cleared from the form at once; it is never stored.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from core.judging import judges, runs as judging
from core.labeling.queue import list_queues
from pages.common import can, shown_errors

SOURCES = {
    judging.UNLABELED: "Unlabeled pairs (pre-label what people have not voted on)",
    judging.LABELED: "Pairs people voted on (calibration: measures agreement)",
}


def duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1 h 20 min``: an estimate's precision, no more."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _figure(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_judges(studio: Any, viewer: Any) -> None:
    st.subheader("AI judges")
    st.caption(
        "AI judges label pairs as their own labelers (`ai:...`), never mixed with people's labels: training "
        "sets take them only when their filters say `label_kinds` ai or both, and only from judges "
        f"calibrated: at least {judging.MIN_CALIBRATION} pairs people voted on too, AND a Cohen's kappa "
        "whose 95% interval lies above 0 (agreement clear of chance). Kappa and alpha are agreement corrected "
        "for chance (1 perfect, 0 chance, below 0 worse than chance)."
    )
    judged = judging.judges_overview(studio.db)
    if judged:
        table = pd.DataFrame(
            [
                {
                    "judge": j["name"],
                    "labels": j["votes"],
                    "runs": j["runs"],
                    "shared with people": j["shared"],
                    "agreement": j["agreement"],
                    "Cohen's kappa": j["kappa"],
                    "Krippendorff's alpha": j["alpha"],
                    "status": ("calibrated: " if j["calibrated"] else "not calibrated: ") + j["calibration"],
                }
                for j in judged
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                name: st.column_config.NumberColumn(format="%.2f")
                for name in ("agreement", "Cohen's kappa", "Krippendorff's alpha")
            },
            placeholder="",
        )
        name = st.selectbox("Judge", [j["name"] for j in judged], key="judge-detail")
        detail = judging.judge_agreement(studio.db, name)
        if detail["comparisons"]:
            labels = [{"a": "A better", "b": "B better", "tie": "tie / both bad"}[x] for x in detail["labels"]]
            fig = px.imshow(
                detail["confusion"],
                x=labels,
                y=labels,
                text_auto=True,
                color_continuous_scale="Blues",
                labels={"x": "people said", "y": "the judge said", "color": "pairs"},
                title=f"{name} against people on {detail['shared']} shared pairs "
                f"(kappa {_figure(detail['kappa'])}, alpha {_figure(detail['alpha'])})",
            )
            fig.update_layout(margin=dict(l=10, r=10, t=50, b=10), height=340)
            st.plotly_chart(fig, width="stretch")
            if can(viewer, "data.judge_disagreements") and detail["disagreements"]:
                with st.expander(f"Disagreements to read ({len(detail['disagreements'])})"):
                    st.dataframe(
                        pd.DataFrame(detail["disagreements"]), hide_index=True, width="stretch", placeholder=""
                    )
        else:
            st.caption(f"{name} shares no pair with people yet: run it on the pairs people voted on to calibrate it.")
    else:
        st.caption("No AI judge has labeled yet.")
    if can(viewer, "data.judge_runs"):
        _runs(studio, viewer)


def _runs(studio: Any, viewer: Any) -> None:
    """Estimate, start, watch and cancel judge runs (admins)."""

    def take_key() -> None:
        """Before the run: move a typed key out of the widget, so the field is empty again."""
        st.session_state["judge-one-off"] = st.session_state.get("judge-key", "")
        st.session_state["judge-key"] = ""

    with st.form("judge-run"):
        spec = st.text_input(
            "Judge", placeholder="rm1, policy, policy:v2 or http://gpu-box:8000/v1#Qwen/Qwen3-8B", help=judges.SPEC_HELP
        )
        sources = {
            **SOURCES,
            **{
                f"{judging.QUEUE}{q['name']}": f"Queue {q['name']} (answer each prompt twice, then judge)"
                for q in list_queues(studio.db)
            },
        }
        source = st.selectbox("Pairs", list(sources), format_func=sources.get)
        st.text_input(
            "One-off endpoint key (optional)",
            type="password",
            key="judge-key",
            help=f"For an endpoint that needs one; else {judges.API_KEY_ENV} is used. Held in memory for "
            "this run only, never stored.",
        )
        cols = st.columns(2)
        do_estimate = cols[0].form_submit_button("Estimate", on_click=take_key)
        do_start = cols[1].form_submit_button("Start", type="primary", on_click=take_key)
    key = st.session_state.pop("judge-one-off", "") or None
    if do_estimate or do_start:
        with shown_errors():
            if do_estimate:
                with st.spinner("Judging a few pairs to measure this machine's speed..."):
                    cost = judging.estimate(studio, spec, source, key)
                measured = (
                    f" (measured on {cost['sample_pairs']} pair{'s' if cost['sample_pairs'] != 1 else ''} "
                    "just now; once it runs, the ETA follows its actual pace)"
                    if cost["sample_pairs"]
                    else ""
                )
                st.info(
                    f"{cost['describe']}: {cost['pairs']} pairs, {cost['requests']} requests, about "
                    f"{duration(cost['seconds'])}"
                    + (f" and {cost['tokens']:,} tokens" if cost["tokens"] else "")
                    + measured,
                    icon=":material/schedule:",
                )
            else:
                run_id = studio.judge_runs.start(spec, source, viewer, key)
                st.success(f"Judge run {run_id} started.", icon=":material/play_arrow:")
    _progress(studio)


@st.fragment(run_every=2)
def _progress(studio: Any) -> None:
    runs = studio.judge_runs.list()
    for run in [r for r in runs if r["status"] == "running"]:
        eta = judging.run_eta(run)
        left = "measuring the pace..." if eta is None else f"about {duration(eta)} left"
        st.progress(
            run["done"] / run["total"] if run["total"] else 1.0,
            text=f"#{run['id']} {run['judge']} on {run['source']}: {run['done']}/{run['total']} pairs, {left}",
        )
        if st.button("Cancel", key=f"judge-cancel-{run['id']}", icon=":material/stop:"):
            studio.judge_runs.cancel(run["id"])
    if runs:
        with st.expander(f"Judge runs ({len(runs)})"):
            st.dataframe(
                pd.DataFrame(runs).drop(columns=["started_by"], errors="ignore"),
                hide_index=True,
                width="stretch",
                placeholder="",
            )
