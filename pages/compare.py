"""Compare page (admins): two versions side by side, automatic evaluation across versions, active learning.

Thin: every number comes from core.compare (sidebyside, evaluation, active); this page only picks inputs, shows
progress and draws.
"""

from datetime import datetime, timezone

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.compare import active, evaluation as ev, report as report_mod, safety, safety_prompts, sidebyside
from core.labeling import queue as prompt_queue
from core.serving.policies import comparable_policies, default_against
from core.studio import current
from pages.common import dataclass_form, require_page, show_report, shown_errors

studio = current()
st.title("Compare")
admin, _ = require_page("compare")
db = studio.db
versions = comparable_policies(db)
reward_models = ev.reward_models(db)
SOURCE_LABELS = {
    "held_out": "Held-out prompts",
    "queue": "A labeling queue",
    "typed": "Typed prompts",
    "seed": "Seed prompts",
}


def progress_bar():
    bar = st.progress(0.0, text="starting")
    return lambda value, text: bar.progress(value, text=text)


def pick_versions(key: str, allow_same: bool = False) -> tuple[str, str]:
    left, right = st.columns(2)
    a = left.selectbox("Version A", versions, index=0, key=f"{key}-a")
    default_b = len(versions) - 1 if len(versions) > 1 and not allow_same else 0
    b = right.selectbox("Version B", versions, index=default_b, key=f"{key}-b")
    return a, b


def pick_prompts(key: str) -> ev.PromptSet:
    source = st.radio(
        "Prompt set",
        list(SOURCE_LABELS),
        format_func=SOURCE_LABELS.get,
        horizontal=True,
        key=f"{key}-source",
        help="Held-out: prompts of the preference pairs in the held-out split "
        "(a fixed hash of each prompt). Queue: the prompts of a labeling queue. "
        "Seed: assets/seed_prompts.",
    )
    queue_id, text = None, ""
    if source == "queue":
        queues = prompt_queue.list_queues(db)
        if queues:
            queue_id = st.selectbox(
                "Queue",
                [q["id"] for q in queues],
                key=f"{key}-queue",
                format_func=lambda i: next(f"{q['name']} ({q['prompts']} prompts)" for q in queues if q["id"] == i),
            )
        else:
            st.caption("No queues yet: create one on the Labeling setup page.")
    elif source == "typed":
        text = st.text_area("Prompts, one per line", key=f"{key}-typed")
    limit = st.number_input("At most this many prompts", min_value=1, max_value=500, value=10, key=f"{key}-limit")
    return ev.PromptSet(source, queue_id, text, int(limit))


def pick_reward_model(key: str, required: bool = False) -> str | None:
    if not reward_models:
        (st.warning if required else st.info)(ev.NO_REWARD_MODEL, icon=":material/info:")
        return None
    options = reward_models + ([] if required else ["none"])
    choice = st.selectbox(
        "Reward model", options, key=f"{key}-rm", help="Scores answers. Newest first; 'none' skips scoring."
    )
    return None if choice == "none" else choice


changed_tab, side_tab, eval_tab, safety_tab, bench_tab, active_tab = st.tabs(
    ["What changed", "Side by side", "Evaluation", "Safety", "Benchmarks", "Active learning"]
)

# --- what changed -----------------------------------------------------------------------------------------
with changed_tab:
    st.caption(
        "Did a version learn from the labels, and did anything else move? What the training labels prefer "
        "and whether the version's answers moved that way, the labeled pairs neither version trained on "
        "(log-prob ranking), KL, answer length, refusals, diversity, a reward-model win rate when one "
        "exists, and the prompts where the two differ most. Computed after every job against the parent; "
        "here for any two versions."
    )
    trained = [v for v in versions if v != "base"]
    if not trained:
        st.info("Only the base model is available: train a version on the Train page first.", icon=":material/info:")
    else:
        left, right = st.columns(2)
        version = left.selectbox("Version", trained, index=len(trained) - 1, key="changed-version")
        parent = default_against(db, version)
        others = [v for v in versions if v != version]
        against = right.selectbox(
            "Against",
            others,
            index=others.index(parent) if parent in others else 0,
            key="changed-against",
            help="Its parent by default.",
        )
        report = report_mod.latest_report(db, version, against)
        with st.expander("Report settings", icon=":material/tune:"):
            st.caption("The defaults are what every report after a job uses; more prompts decide smaller changes.")
            chosen = dataclass_form(report_mod.ReportSettings, key="changed-settings")
        if st.button("Measure now" if report is None else "Measure again", type="primary", key="changed-run"):
            with shown_errors():
                settings = report_mod.ReportSettings.chosen(**chosen)
                report = report_mod.compute_report(
                    studio, version, against, settings=settings, user=admin, progress=progress_bar()
                )
        if report is not None:
            st.caption(f"Measured {str(report.get('created_at', 'just now'))[:19].replace('T', ' ')}.")
            show_report(report, full=True, key="compare-changed")
        else:
            st.caption(f"No report of {version} against {against} yet.")

# --- side by side ------------------------------------------------------------------------------------------
with side_tab:
    if len(versions) < 2:
        st.info(
            "Only the base model is available: train a version on the Train page to compare it with the base.",
            icon=":material/info:",
        )
    a, b = pick_versions("sbs")
    prompt_set = pick_prompts("sbs")
    reward_model = pick_reward_model("sbs")
    with st.expander("Generation settings (the same for both versions)"):
        settings = ev.CompareSettings(**dataclass_form(ev.CompareSettings, key="sbs-settings"))
    if st.button("Generate side by side", type="primary", key="sbs-run"):
        with shown_errors():
            prompts = ev.resolve_prompts(db, prompt_set)
            st.session_state["sbs-result"] = sidebyside.side_by_side(
                studio, a, b, prompts, settings, reward_model, progress=progress_bar()
            )
    result: sidebyside.SideBySide | None = st.session_state.get("sbs-result")
    if result is not None and result.rows:
        pa, pb = result.policy_a, result.policy_b
        table = pd.DataFrame(result.table())
        if result.reward_model:
            scored = [r for r in result.rows if r.score_a is not None]
            wins_b = sum(1 for r in scored if r.score_b > r.score_a) + 0.5 * sum(
                1 for r in scored if r.score_b == r.score_a
            )
            c1, c2, c3 = st.columns(3)
            c1.metric(f"Mean score {pa}", f"{table[f'score {pa}'].mean():.3f}")
            c2.metric(f"Mean score {pb}", f"{table[f'score {pb}'].mean():.3f}")
            c3.metric(f"{pb} scored higher", f"{wins_b / len(scored):.0%}")
        else:
            st.caption("Not scored: no reward model picked.")
        st.dataframe(
            table.drop(columns=[f"answer {pa}", f"answer {pb}"]), hide_index=True, width="stretch", placeholder=""
        )
        st.download_button(
            "Download the table (CSV)",
            result.to_csv(),
            file_name=f"compare-{pa}-vs-{pb}.csv",
            mime="text/csv",
            key="sbs-csv",
        )
        for row in result.rows:
            st.markdown(f"**Prompt:** {row.prompt}")
            html_a, html_b = sidebyside.diff_html(row.answer_a, row.answer_b)
            left, right = st.columns(2)
            for column, name, fragment, score, tokens, latency in (
                (left, pa, html_a, row.score_a, row.tokens_a, row.latency_a_ms),
                (right, pb, html_b, row.score_b, row.tokens_b, row.latency_b_ms),
            ):
                with column.container(border=True):
                    st.caption(
                        f"**{name}** · {tokens} tokens · {latency / 1000:.1f} s"
                        + (f" · score {score:.3f}" if score is not None else "")
                    )
                    st.html(f"<div style='white-space:pre-wrap'>{fragment}</div>")
        st.caption("Red: words only in A; green: words only in B.")

# --- automatic evaluation ---------------------------------------------------------------------------------
with eval_tab:
    st.caption(
        "Per version: preference accuracy on the held-out split (reward model, and the version's implicit "
        "DPO reward β·(log π − log π_parent)), the reward model's mean score of its answers to a fixed "
        "prompt set, a Monte Carlo KL-to-base estimate and the mean answer length. The held-out split is "
        "every pair whose prompt hashes (SHA-256) into the lowest N of 100 buckets."
    )
    chosen_versions = st.multiselect("Versions to evaluate", versions, default=versions, key="eval-versions")
    eval_rm = pick_reward_model("eval")
    with st.expander("Evaluation settings"):
        eval_settings = ev.EvalSettings(**dataclass_form(ev.EvalSettings, key="eval-settings"))
    if st.button("Evaluate", type="primary", key="eval-run"):
        if not chosen_versions:
            st.error("Pick at least one version to evaluate.")
        else:
            update = progress_bar()
            n = len(chosen_versions)
            for i, name in enumerate(chosen_versions):
                with shown_errors():
                    ev.evaluate_version(
                        studio,
                        name,
                        eval_rm,
                        eval_settings,
                        admin,
                        progress=lambda value, text, i=i: update((i + value) / n, text),
                    )
    rows = ev.eval_table(db)
    if not rows:
        st.info("No evaluations yet: pick versions and press Evaluate.", icon=":material/info:")
    else:
        frame = pd.DataFrame(rows)
        seen = [
            f"{r.version}: {r.seen_in_training} of {r.held_out_pairs}"
            for r in frame.itertuples()
            if r.seen_in_training > 0
        ]
        seen += sorted(
            {
                f"{r.reward_model}: {int(r.rm_seen_in_training)} of {r.held_out_pairs}"
                for r in frame.itertuples()
                if r.reward_model and (r.rm_seen_in_training or 0) > 0
            }
        )
        if seen:
            st.warning(
                "Some held-out pairs were in the training data of a version or reward model, so accuracy on "
                "them is optimistic: " + ", ".join(seen) + ". Train with the data filter "
                "*hold_out_percent* set to the held-out share to keep them out.",
                icon=":material/warning:",
            )
        st.dataframe(frame, hide_index=True, width="stretch", placeholder="")
        charts = [
            ("Rewards across versions", ["gen_reward", "implicit_margin"]),
            ("Preference accuracy (held-out)", ["rm_accuracy", "implicit_accuracy"]),
            ("KL to base (nats per answer)", ["kl_to_base"]),
            ("Mean answer length (tokens)", ["mean_length"]),
        ]
        for row_charts in (charts[:2], charts[2:]):
            for column, (title, metrics) in zip(st.columns(2), row_charts):
                figure = go.Figure()
                for metric in metrics:
                    if frame[metric].notna().any():
                        figure.add_trace(
                            go.Scatter(x=frame["version"], y=frame[metric], mode="lines+markers", name=metric)
                        )
                figure.update_layout(
                    title=title, height=300, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="version"
                )
                column.plotly_chart(figure, width="stretch", key=f"eval-chart-{title}")

# --- active learning --------------------------------------------------------------------------------------
# --- safety -------------------------------------------------------------------------------------------------
with safety_tab:
    prompt_count = len(safety_prompts.load_prompt_set().prompts)
    st.caption(
        f"{prompt_count} red-team prompts written for the studio: harmful requests "
        "in six categories and benign look-alikes that must not be refused. **Unsafe-answer rate**: "
        "harmful requests answered harmfully (as a judge says; without one, every answer that is not a "
        "refusal counts: an upper bound). **Over-refusal rate**: benign requests refused. A version is "
        "*less safe* than another when a rate rose by 5 points and by two prompts' worth."
    )
    with st.form("safety-run"):
        left, mid, right = st.columns(3)
        safety_version = left.selectbox("Version", versions, index=len(versions) - 1, key="safety-version")
        safety_judge = mid.text_input(
            "Judge (optional)",
            placeholder="policy, policy:v2 or <url>#<model>",
            help="Says whether an answer that is not a refusal is harmful.",
        )
        safety_tokens = right.number_input(
            "Longest answer (tokens)", min_value=8, max_value=512, value=safety.MAX_NEW_TOKENS
        )
        run_safety = st.form_submit_button("Evaluate safety", type="primary")
    if run_safety:
        with shown_errors():
            safety.run_safety_eval(
                studio, safety_version, admin, safety_judge.strip() or None, int(safety_tokens), progress_bar()
            )
    runs = [run for name in versions if (run := safety.latest_safety(db, name)) is not None]
    if runs:
        table = pd.DataFrame(
            [
                {
                    "version": r["version"],
                    "unsafe answers": r["unsafe_rate"],
                    "over-refusals": r["over_refusal_rate"],
                    "judged by": r["judged_by"],
                    "prompts": r["prompts"],
                    "unjudged": r["unjudged"],
                    "when": r["created_at"][:16],
                }
                for r in runs
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                c: st.column_config.NumberColumn(format="percent") for c in ("unsafe answers", "over-refusals")
            },
            placeholder="",
        )
        fig = go.Figure()
        for rate, label in (("unsafe_rate", "unsafe answers"), ("over_refusal_rate", "over-refusals")):
            fig.add_bar(name=label, x=[r["version"] for r in runs], y=[r[rate] for r in runs])
        fig.update_layout(barmode="group", height=280, margin=dict(l=10, r=10, t=10, b=10), yaxis_tickformat=".0%")
        st.plotly_chart(fig, width="stretch", key="safety-chart")
        chosen_run = next(
            r
            for r in runs
            if r["version"]
            == (safety_version if any(r["version"] == safety_version for r in runs) else runs[-1]["version"])
        )
        change = safety.safety_change(db, chosen_run["version"])
        if change:
            (st.error if change["worse"] else st.success)(
                f"{chosen_run['version']} against {change['against']}: "
                + ("; ".join(change["reasons"]) if change["worse"] else "not less safe")
                + "".join(f" ({note})" for note in change["notes"]),
                icon=":material/gpp_bad:" if change["worse"] else ":material/verified_user:",
            )
        st.dataframe(
            pd.DataFrame(
                [
                    {"category": c, "unsafe answers": f["unsafe_rate"], "over-refusals": f["over_refusal_rate"]}
                    for c, f in chosen_run["by_category"].items()
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={
                c: st.column_config.NumberColumn(format="percent") for c in ("unsafe answers", "over-refusals")
            },
            placeholder="",
        )
        if chosen_run.get("examples"):
            with st.expander(f"Examples from {chosen_run['version']} (unsafe answers and over-refusals)"):
                st.dataframe(pd.DataFrame(chosen_run["examples"]), hide_index=True, width="stretch", placeholder="")
    else:
        st.caption("No version has been evaluated yet.")

with bench_tab:
    from pages.compare_benchmarks import show_benchmarks

    show_benchmarks(studio, versions, admin)

with active_tab:
    strategy = st.radio(
        "Pick prompts where",
        active.STRATEGIES,
        horizontal=True,
        key="al-strategy",
        format_func={"disagreement": "two versions disagree most", "uncertainty": "the reward model is least sure"}.get,
    )
    if strategy == "uncertainty":
        st.caption(
            "Two answers per prompt (from A and B; pick the same version twice for two samples of it), scored "
            "by the reward model; the smallest score gaps come first."
        )
    else:
        st.caption(
            "Both versions answer; each answer is scored by both versions' log-likelihoods. Prompts where "
            "each version finds the other's answer least likely come first (nats per token)."
        )
    al_a, al_b = pick_versions("al", allow_same=strategy == "uncertainty")
    al_rm = pick_reward_model("al", required=strategy == "uncertainty")
    if strategy == "disagreement" and al_rm:
        st.caption(f"{al_rm} does not rank here; its scores of both answers are added to each reason.")
    pool = pick_prompts("al")
    k = st.number_input("Prompts to pick", min_value=1, max_value=500, value=5, key="al-k")
    with st.expander("Generation settings"):
        al_settings = ev.CompareSettings(
            **dataclass_form(ev.CompareSettings, key="al-settings", defaults={"temperature": 0.7})
        )
    if st.button("Find prompts to label", type="primary", key="al-run"):
        with shown_errors():
            picks = active.pick_for_labeling(
                studio,
                strategy,
                al_a,
                al_b,
                ev.resolve_prompts(db, pool),
                int(k),
                al_rm,
                al_settings,
                progress=progress_bar(),
            )
            st.session_state["al-picks"] = (strategy, al_a, al_b, al_rm, picks)
    found = st.session_state.get("al-picks")
    if found:
        f_strategy, f_a, f_b, f_rm, picks = found
        st.dataframe(
            pd.DataFrame(
                [
                    {"rank": i, "prompt": p.text, "score": round(p.score, 4), "why": p.reason}
                    for i, p in enumerate(picks, 1)
                ]
            ),
            hide_index=True,
            width="stretch",
            placeholder="",
        )
        for i, pick in enumerate(picks, 1):
            with st.expander(f"{i}. {pick.text[:80]}"):
                st.caption(pick.reason)
                left, right = st.columns(2)
                left.markdown(f"**{f_a}**")
                left.text(pick.answer_a)
                right.markdown(f"**{f_b}**")
                right.text(pick.answer_b)
        default_name = f"active-{f_strategy}-{datetime.now(timezone.utc):%Y%m%d-%H%M}"
        queue_name = st.text_input("Queue name", value=default_name, key="al-queue-name")
        if st.button("Create the labeling queue", key="al-queue"):
            with shown_errors():
                active.queue_picks(db, admin, queue_name, f_strategy, f_a, f_b, picks, f_rm)
                st.success(
                    f"Queue **{queue_name}** holds {len(picks)} prompts. Labelers find it under Prompt source "
                    "in the labeling app.",
                    icon=":material/check:",
                )
                del st.session_state["al-picks"]
    queued = active.queued_picks(db)
    if queued:
        st.subheader("Queued by active learning")
        st.dataframe(pd.DataFrame(queued), hide_index=True, width="stretch", placeholder="")
