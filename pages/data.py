"""Data page: what has been labeled, by whom, what the labels prefer, how far labelers agree; the items with
redaction and the audit log; the training sets, AI judges and imports. The headline numbers head seven tabs, and
only the open tab runs.

Thin: every number comes from core.labeling.analytics (and the signature and suggestion from core), every change
goes through core.labeling.moderation.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import access
from core.compare.signature import signature_of_labels, signature_of_texts
from core.data.filters import filters_from_dict
from core.data.kinds import EXPORTABLE, KINDS
from core.data.trainsets import preference_texts
from core.labeling import analytics, moderation
from core.labeling.feedback import recent_feedback
from core.labeling.votes import OUTCOME_LABELS
from core.studio import current
from core.training.suggest import next_parent, suggest_next_job
from pages.common import can, data_key, filter_form, require_page, shown_errors, signature_chart
from pages.data_import import render_import
from pages.data_judges import render_judges

studio = current()
db = studio.db
viewer, _ = require_page("data")
OUTCOME_COLORS = {
    OUTCOME_LABELS[o]: color for o, color in zip(analytics.OUTCOMES, ("#4C78A8", "#F58518", "#9D9D9D", "#E45756"))
}
COUNT_LABELS = {"votes": "Votes", "ratings": "Ratings", "gold_edits": "Gold edits", "thumbs": "Thumbs"}


# What the tabs compute from the labels is cached on the labels' fingerprint (pages.common.data_key): computed once
# per change of the labels, not on every rerun, and only for the tab being looked at (the tabs run lazily). With 10k
# votes the whole page took 3.6-5.3 s per rerun, then 1.1-1.6 s on the first visit after a new vote with every
# section recomputed; measured figures in tests/e2e/test_page_speed.py.
@st.cache_data(max_entries=4, show_spinner=False)
def activity(db_path: str, version: str) -> dict[str, Any]:
    """The headline metrics, the activity charts' counts, the labelers table and the item filters' options."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # DuckDB runs a query without the GIL: reads overlap
        per_labeler = pool.submit(analytics.labeler_stats, db)
        options = pool.submit(analytics.filter_options, db)
        return {
            "summary": analytics.summary(db),
            "counts": analytics.counts_over_time(db),
            "aspects": analytics.aspect_distributions(db),
            "outcomes": analytics.outcome_distribution(db),
            "labelers": per_labeler.result(),
            "options": options.result(),
        }


@st.cache_resource(max_entries=4, show_spinner=False)
def pair_texts(db_path: str, version: str) -> tuple[Any, list[tuple[str, str, bool]]]:
    """The newest version and the preference pairs' texts, read once for the guided loop's counts and what
    everyone's labels prefer. A resource (shared, read only), not data: 10k pairs' texts copied on every hit would
    cost what the cache saves."""
    parent = next_parent(db)
    return parent, preference_texts(db, None, parent[1])


@st.cache_data(max_entries=4, show_spinner=False)
def suggestion_for(db_path: str, version: str) -> Any:
    """The guided loop's next step (core.training.suggest)."""
    return suggest_next_job(db, pair_texts(db_path, version)[1])


@st.cache_data(max_entries=4, show_spinner=False)
def everyone_signature(db_path: str, version: str) -> dict[str, Any]:
    """What everyone's labels prefer (core.compare.signature), from the pairs read once."""
    return signature_of_texts(pair_texts(db_path, version)[1]).to_dict()


@st.cache_data(max_entries=16, show_spinner=False)
def label_signature_cached(db_path: str, labeler: str, version: str) -> dict[str, Any]:
    """What one labeler's own labels prefer (core.compare.signature)."""
    return signature_of_labels(db, filters_from_dict({"labelers": [labeler]})).to_dict()


@st.cache_data(max_entries=4, show_spinner=False)
def agreement_cached(db_path: str, version: str) -> dict[str, Any]:
    """The agreement table and every measure's labeler-pair agreement, from agreement units read once."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        outcomes = pool.submit(analytics.outcome_units, db)
        units = analytics.agreement_units(db, ratings=analytics.rating_units(db), outcomes=outcomes.result())
    table = analytics.agreement_table(db, units)
    return {
        "table": table,
        "pairs": {
            measure: analytics.labeler_pair_agreement(db, measure, units)
            for measure in table.loc[table["overlapping_items"] > 0, "measure"]
        },
    }


@st.cache_data(max_entries=32, show_spinner=False)
def recent_cached(db_path: str, version: str, **filters: Any) -> pd.DataFrame:
    """The recent-items table for one choice of filters (core.labeling.analytics.recent_items)."""
    return analytics.recent_items(db, **filters)


@st.cache_data(max_entries=16, show_spinner=False)
def pair_matrices(db_path: str, version: str, measure: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One measure's labeler-pair agreement and shared-item counts as labeler x labeler matrices, for the heatmap."""
    pairs = agreement_cached(db_path, version)["pairs"][measure]
    return analytics.pair_matrix(pairs), analytics.pair_matrix(pairs.assign(agreement=pairs["items"]))


def bars(
    frame: pd.DataFrame, x: str, color: str, title: str, barmode: str = "group", colors: dict[str, str] | None = None
) -> go.Figure:
    """One bar trace per value of ``color`` (in order of appearance), heights from ``count``. Built from graph
    objects: plotly express took ~50 ms per chart, a fifth of a rerun of this page after a new vote."""
    traces = [
        go.Bar(x=part[x], y=part["count"], name=str(name), marker_color=(colors or {}).get(str(name)))
        for name, part in frame.groupby(color, sort=False)
    ]
    return go.Figure(traces, layout=dict(title=title, barmode=barmode, yaxis=dict(title=""), **LAYOUT))


# the four activity charts' common look: compact, the legend without a title
LAYOUT: dict[str, Any] = dict(margin=dict(l=10, r=10, t=40, b=10), height=320, legend_title_text="")


@st.cache_resource(max_entries=4, show_spinner=False)
def activity_charts(db_path: str, version: str) -> dict[str, Any]:
    """The four activity charts (None: nothing to draw), built once per change of the labels and shared, read
    only, by every session."""
    data = activity(db_path, version)
    per_day_counts = data["counts"].melt(id_vars="day", var_name="kind", value_name="count")
    per_day_counts["kind"] = per_day_counts["kind"].map(COUNT_LABELS)
    per_day = bars(per_day_counts, "day", "kind", "Labels per day")
    per_day.update_xaxes(title="", type="date", tickformat="%b %d")

    # a zero slice would print a stray "0" on the ring (seen when nobody had clicked "both bad")
    outcomes = data["outcomes"].assign(outcome=lambda f: f["outcome"].map(OUTCOME_LABELS))
    outcomes = outcomes[outcomes["count"] > 0]
    donut = None
    if not outcomes.empty:
        donut = go.Figure(
            go.Pie(
                labels=outcomes["outcome"],
                values=outcomes["count"],
                hole=0.45,
                sort=False,
                textinfo="percent+value",
                automargin=True,  # outside labels stay whole
                marker_colors=[OUTCOME_COLORS[o] for o in outcomes["outcome"]],
            ),
            layout=dict(title="Outcomes (as clicked)", **LAYOUT),
        )

    per_labeler = data["labelers"][["labeler", *analytics.OUTCOMES]].melt(
        id_vars="labeler", var_name="outcome", value_name="count"
    )
    per_labeler["outcome"] = per_labeler["outcome"].map(OUTCOME_LABELS)
    by_labeler = bars(per_labeler, "labeler", "outcome", "Votes per labeler", barmode="relative", colors=OUTCOME_COLORS)
    by_labeler.update_xaxes(title="", type="category")

    aspects = data["aspects"]
    ratings = None
    if aspects["count"].sum():
        ratings = bars(aspects, "score", "aspect", "Rating distribution per aspect")
        ratings.update_xaxes(title="score", tickmode="array", tickvals=list(analytics.SCORES))
    return {"per_day": per_day, "outcomes": donut, "per_labeler": by_labeler, "aspects": ratings}


st.title("Data")
version = data_key(db)
figures = activity(str(db.path), version)
summary = figures["summary"]
has_labels = summary["votes"] or summary["ratings"]

# ----------------------------------------------------------------------------- metrics (above every tab)
cols = st.columns(7)
cols[0].metric(
    "Votes",
    summary["votes"],
    delta=f"{summary['votes_today']} today" if summary["votes_today"] else None,
    help="Live preference votes: undone and redacted votes are not counted.",
)
cols[1].metric("Ratings", summary["ratings"], help="Aspect ratings (1-5) given with live votes.")
cols[2].metric("Labelers", summary["labelers"])
cols[3].metric(
    "Shared items",
    summary["overlapping_items"],
    help="Prompts voted on by at least two labelers: the items agreement is measured on.",
)
cols[4].metric("Gold edits", summary["gold_edits"])
cols[5].metric("Thumbs", summary["thumbs"])
cols[6].metric("API feedback", summary["scored_feedback"], help="Scored single answers sent to POST /api/feedback.")
if summary["retracted"]:
    st.caption(f"{summary['retracted']} undone vote(s) are kept for the record and left out everywhere below.")


def no_labels_yet() -> bool:
    """Says so when nothing is labeled yet (the analytics tabs have nothing to show); True then."""
    if not has_labels:
        st.info(
            "No labels yet. Open the [labeling app](/label/) to vote on answers; charts, agreement and "
            "the item table fill in as votes arrive.",
            icon=":material/how_to_vote:",
        )
    return not has_labels


def overview_tab() -> None:
    """The guided loop's next step, the activity charts and the labelers table."""
    suggestion = suggestion_for(str(db.path), version)
    if suggestion.ready:
        st.success(suggestion.text, icon=":material/model_training:")
        st.page_link("train.py", label="Open the Train page", icon=":material/model_training:")
    else:
        st.progress(
            suggestion.new_pairs / (suggestion.new_pairs + suggestion.needed),
            text=f"{suggestion.text} ({suggestion.needed} more labels needed)",
        )

    if no_labels_yet():
        return
    charts = activity_charts(str(db.path), version)
    left, right = st.columns([3, 2])
    left.plotly_chart(charts["per_day"], width="stretch")
    if charts["outcomes"] is None:
        right.markdown("**Outcomes (as clicked)**")
        right.caption("No preference votes yet: only ratings.")
    else:
        right.plotly_chart(charts["outcomes"], width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(charts["per_labeler"], width="stretch")
    if charts["aspects"] is None:
        right.markdown("**Rating distribution per aspect**")
        right.caption("No aspect ratings yet: labelers can rate each answer 1-5 per aspect when they vote.")
    else:
        right.plotly_chart(charts["aspects"], width="stretch")

    st.dataframe(
        figures["labelers"].drop(columns=["labeler_id"]),
        hide_index=True,
        width="stretch",
        column_config={
            "labeler": "Labeler",
            "votes": "Votes",
            "today": "Today",
            "a": "A",
            "b": "B",
            "tie": "Tie",
            "both_bad": "Both bad",
            "ratings": "Ratings",
            "tie_share": st.column_config.ProgressColumn("Tie share", format="percent", min_value=0, max_value=1),
            "both_bad_share": st.column_config.ProgressColumn(
                "Both-bad share", format="percent", min_value=0, max_value=1
            ),
            "last_active": st.column_config.DatetimeColumn("Last active", format="YYYY-MM-DD HH:mm"),
        },
        placeholder="",
    )


def preferences_tab() -> None:
    """What the labels prefer, in answer features (core.compare.signature): everyone's, or one labeler's."""
    if no_labels_yet():
        return
    own_signature = access.owner_filter(viewer, "data.training_set") is not None
    whose = viewer.name if own_signature else None
    if not own_signature and len(figures["labelers"]) > 1:
        picked = st.selectbox(
            "Labels of",
            ["everyone", *figures["labelers"]["labeler"].tolist()],
            key="signature-labeler",
            help="Labelers who disagree cancel each other out: look at each one's labels too.",
        )
        whose = None if picked == "everyone" else picked
    signature = (
        label_signature_cached(str(db.path), whose, version) if whose else everyone_signature(str(db.path), version)
    )
    st.caption(
        f"Over {signature['pairs']} preference pairs{' of yours' if own_signature else ''}: per answer "
        "feature, how often the chosen answer has more of it than the rejected one (sign test, "
        "Holm-corrected over the features; definitions in the README, \u201cWhat the labels prefer\u201d)."
    )
    if signature["preferences"]:
        for line in signature["preferences"]:
            st.markdown(f"- {line}")
        picked = [t for t in signature["tests"] if t["direction"]]
        signature_chart(
            [(t["feature"], t["more"] / (t["more"] + t["less"]), "chosen vs rejected") for t in picked],
            key="data-signature",
        )
    else:
        st.caption(
            "No measurable preference yet in the answer features: either the labels prefer something the "
            "features do not capture (facts, tone), or there are too few pairs to tell."
        )


def agreement_tab() -> None:
    """How far labelers agree: per measure, then per pair of labelers."""
    if no_labels_yet():
        return
    found = agreement_cached(str(db.path), version)
    agreement = found["table"]
    if not agreement["overlapping_items"].any():
        st.info(
            "No item has been labeled by two people yet, so agreement cannot be measured. Give a queue "
            "an overlap of 2 or more so each prompt goes to several labelers.",
            icon=":material/group:",
        )
    else:
        st.dataframe(
            agreement,
            hide_index=True,
            width="stretch",
            column_config={
                "measure": "Measure",
                "level": "Level",
                "overlapping_items": st.column_config.NumberColumn(
                    "Overlapping items", help="Items (or answers, for aspects) labeled by at least two people"
                ),
                "labels": st.column_config.NumberColumn("Labels", help="Labels on those items"),
                "pairwise_agreement": st.column_config.NumberColumn(
                    "Pairwise agreement", format="percent", help="Share of labeler pairs that gave the same label"
                ),
                "alpha": st.column_config.NumberColumn("Krippendorff's α", format="%.2f"),
            },
            placeholder="",
        )
        st.caption(
            "**Pairwise agreement** is how often two labelers gave exactly the same label to the same item; it "
            "is inflated when one label dominates. **Krippendorff's α** corrects for that chance agreement: "
            "1 = perfect, 0 = no better than chance, below 0 = systematic disagreement; ≥ 0.8 is usually "
            "called reliable, below 0.67 tentative. Outcome is nominal (a / b / tie / both bad; swapped "
            "pairs are aligned); aspects are ordinal 1-5, so near misses count less than far ones. Empty α: "
            "not enough overlap or no variation at all. Aspect ratings are compared per shared answer, "
            "otherwise per prompt and side (different answers: a lower bound)."
        )

        measures = agreement.loc[agreement["overlapping_items"] > 0, "measure"].tolist()
        measure = (
            st.selectbox("Labeler-pair agreement on", measures, key="pair_measure")
            if len(measures) > 1
            else measures[0]
        )
        pairs = found["pairs"][measure]
        matrix, shared = pair_matrices(str(db.path), version, measure)
        if len(matrix) >= 2 and pairs["items"].any():
            fig = go.Figure(
                go.Heatmap(
                    z=matrix.values,
                    x=matrix.columns,
                    y=matrix.index,
                    zmin=0,
                    zmax=1,
                    colorscale="RdYlGn",
                    texttemplate="%{z:.0%}",
                    customdata=shared.values,
                    colorbar=dict(title="", tickformat=".0%"),
                    hovertemplate="%{y} × %{x}<br>agreement %{z:.0%}<br>%{customdata} shared items<extra></extra>",
                ),
                layout=dict(
                    title=f"Labeler-pair agreement ({measure}); hover for shared items",
                    height=max(260, 60 * len(matrix) + 120),
                    yaxis=dict(autorange="reversed", type="category"),
                    xaxis=dict(type="category"),
                    margin=dict(l=10, r=10, t=40, b=10),
                ),
            )
            st.plotly_chart(fig, width="stretch")
            st.caption("Exact-match share on the items both labelers labeled; blank: no shared items.")
        else:
            st.caption("The labeler-pair heatmap appears once two labelers share an item.")


def items_tab() -> None:
    """The recent items with their filters, redaction, the audit log and the scored feedback."""
    st.subheader("Recent items")
    options = figures["options"]
    row1 = st.columns([2, 2, 2, 2, 3])
    labeler_names = {name: labeler_id for labeler_id, name in options["labelers"]}
    own_items = access.owner_filter(viewer, "data.recent_items")
    if own_items is not None:
        # a labeler reviews their own items only; the charts show aggregates, never another's text
        labeler_names = {name: i for name, i in labeler_names.items() if i == own_items}
        labeler = row1[0].selectbox(
            "Labeler",
            list(labeler_names) or ["(you have no items yet)"],
            key="f_labeler",
            disabled=True,
            help="Labelers see their own items; admins see everyone's",
        )
        if not labeler_names:
            labeler_names = {labeler: -1}  # matches no vote
    else:
        labeler = row1[0].selectbox("Labeler", ["All", *labeler_names], key="f_labeler")
    outcome = row1[1].selectbox(
        "Outcome", ["All", *analytics.OUTCOMES], key="f_outcome", format_func=lambda o: OUTCOME_LABELS.get(o, o)
    )
    flag = row1[2].selectbox("Flag", ["All", *options["flags"]], key="f_flag")
    source = row1[3].selectbox("Source", ["All", *options["sources"]], key="f_source")
    days = row1[4].date_input("Dates", value=(), key="f_days", help="Pick a start and an end day")
    row2 = st.columns([4, 1])
    search = row2[0].text_input("Search", key="f_search", placeholder="text in the prompt, either answer or the note")
    limit = row2[1].number_input("Rows", min_value=10, max_value=2000, value=200, step=50, key="f_limit")

    days = list(days) if isinstance(days, (list, tuple)) else [days]
    items = recent_cached(
        str(db.path),
        version,
        labeler_id=labeler_names.get(labeler),
        outcome=None if outcome == "All" else outcome,
        flag=None if flag == "All" else flag,
        source=None if source == "All" else source,
        since=days[0] if days else None,
        until=days[-1] if days else None,
        search=search or None,
        limit=int(limit),
    )
    if items.empty:
        st.caption("No items match." if has_labels else "No votes yet.")
    else:
        st.dataframe(
            items.assign(outcome=items["outcome"].map(OUTCOME_LABELS)),
            hide_index=True,
            width="stretch",
            column_config={
                "preference_id": st.column_config.NumberColumn("Vote id", format="%d"),
                "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
                "labeler": "Labeler",
                "outcome": "Outcome",
                "prompt": st.column_config.TextColumn("Prompt", width="medium"),
                "answer_a": st.column_config.TextColumn("Answer A", width="medium"),
                "answer_b": st.column_config.TextColumn("Answer B", width="medium"),
                "ratings": "Ratings",
                "flags": "Flags",
                "note": "Note",
                "source": "Source",
                "labeler_id": None,
                "prompt_id": st.column_config.NumberColumn("Prompt id", format="%d"),
                "conversation_id": st.column_config.NumberColumn("Conversation id", format="%d"),
                "candidate_a": st.column_config.NumberColumn("Candidate A id", format="%d"),
                "candidate_b": st.column_config.NumberColumn("Candidate B id", format="%d"),
            },
            placeholder="",
        )
        st.caption(f"{len(items)} item(s), newest first. The ids are what the redaction form below takes.")

    st.subheader("Redact an item")
    user = viewer
    if not can(user, "data.redact"):
        st.info("Admin only: ask an admin to redact an item.", icon=":material/lock:")
    else:
        done = st.session_state.pop("redaction_result", None)
        if done is not None:
            (st.success if done["redacted"] else st.info)(done["message"])
        st.caption(
            "Redaction deletes the text for good (it becomes “[redacted]”) and removes the item from "
            "analytics and training data. The audit log records who, what and why, never the text."
        )
        with st.form("redact", clear_on_submit=False):
            c1, c2 = st.columns([1, 1])
            kind = c1.selectbox(
                "Kind",
                moderation.KINDS,
                help="vote (preference), prompt, answer (candidate) "
                "or a whole conversation; see the id columns of the table above",
            )
            item_id = c2.number_input("Id", min_value=1, step=1, value=None, placeholder="e.g. 12")
            reason = st.text_input(
                "Reason", placeholder="e.g. contains a phone number", max_chars=moderation.MAX_REASON_CHARS
            )
            confirm = st.checkbox("I understand the text is deleted and cannot be restored")
            submitted = st.form_submit_button("Redact", type="primary")
        if submitted:
            if item_id is None:
                st.warning("Enter the id of the item to redact.")
            elif not confirm:
                st.warning("Tick the confirmation box first: redaction cannot be undone.")
            else:
                with shown_errors():
                    result = moderation.redact_item(db, user.id, kind, int(item_id), reason)
                    st.session_state["redaction_result"] = {"redacted": result.redacted, "message": result.message}
                    st.rerun()

    if can(viewer, "data.audit_log"):
        with st.expander("Audit log"):
            audit = moderation.audit_entries(db, limit=200)
            if audit.empty:
                st.caption("Nothing recorded yet: redactions, undos, imports and edits appear here.")
            else:
                st.dataframe(
                    audit,
                    hide_index=True,
                    width="stretch",
                    placeholder="",
                    column_config={
                        "id": None,
                        "created_at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
                        "user": "By",
                        "action": "Action",
                        "target_table": "Table",
                        "target_id": st.column_config.NumberColumn("Id", format="%d"),
                        "details": st.column_config.TextColumn("Details", width="large"),
                    },
                )

    own_feedback = access.owner_filter(viewer, "data.scored_feedback")
    st.subheader("Recent scored feedback" if own_feedback is None else "Your recent scored feedback")
    recent = recent_feedback(db, own_feedback)
    if recent:
        st.dataframe(
            pd.DataFrame(recent),
            hide_index=True,
            width="stretch",
            placeholder="",
            column_config={"created_at": st.column_config.DatetimeColumn("created_at", format="YYYY-MM-DD HH:mm")},
        )
    else:
        st.caption(
            'No feedback yet. Send some with `POST /api/feedback` (`{"prompt": ..., "response": ..., "score": 0.8}`).'
        )


def training_data_tab() -> None:
    """The labels as the training jobs will see them: a preview and a download."""
    st.caption(
        "What the training jobs will see: the labels turned into TRL datasets (conversational "
        "format). How each label maps is explained in the README (“Labels → training data”)."
    )
    own_labels = access.owner_filter(viewer, "data.training_set") is not None
    if own_labels:
        st.caption("Built from your own labels only; admins build from everyone's.")
    with st.form("trainset"):
        kind = st.radio("Dataset", EXPORTABLE, format_func=lambda name: KINDS[name].label, horizontal=True)
        filters = filter_form(studio.db, "trainset", only_labeler=viewer.name if own_labels else None)
        build = st.form_submit_button("Build preview")
    if build:
        with shown_errors():
            built = KINDS[kind].dataset(studio.db, filters)
            rows = built.dataset.to_list()
            st.write(
                f"**{len(rows)} rows.** Skipped: "
                + (", ".join(f"{k}: {v}" for k, v in built.stats["skipped"].items()) or "nothing")
            )
            if rows:
                st.json(rows[0], expanded=False)
                st.download_button(
                    "Download JSONL",
                    "\n".join(json.dumps(r, default=str) for r in rows),
                    file_name=f"{kind}.jsonl",
                    mime="application/jsonl",
                )


# ----------------------------------------------------------------------------- the tabs
# Lazy: only the open tab runs (on_change="rerun"), so a visit after a new vote recomputes what that tab shows and
# the browser draws one tab's charts, not the whole page's.
TABS = {
    "Overview": overview_tab,
    "What the labels prefer": preferences_tab,
    "Agreement": agreement_tab,
    "Items": items_tab,
    "Training data": training_data_tab,
    "AI judges": lambda: render_judges(studio, viewer),
    "Import": lambda: render_import(db, viewer if can(viewer, "data.import") else None),
}
for tab, render in zip(st.tabs(list(TABS), key="data_tab", on_change="rerun"), TABS.values()):
    if tab.open:
        with tab:
            render()
