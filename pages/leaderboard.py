"""Leaderboard page: Bradley-Terry ratings of the arena battles with bootstrap 95% intervals."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.compare import leaderboard
from core.compare.arena import people_comparisons
from core.compare.style import style_controlled
from core.studio import current
from pages.common import require_page

studio = current()
st.title("Leaderboard")
require_page("leaderboard")
st.caption(
    f"Blind A/B battles from the labeling app's **Arena** tab, rated with a Bradley-Terry model "
    f"(ties count half, Elo scale 400·r + 1000, **{leaderboard.BASE_POLICY}** fixed at 1000) and 95% "
    "bootstrap intervals. Versions whose intervals overlap share a rank."
)

battles = leaderboard.battles_from_db(studio.db)
models = {m for b in battles for m in (b.model_a, b.model_b)}
if len(models) < 2:
    st.info(
        f"No leaderboard yet: {len(battles)} battle(s) so far. Vote in the [Arena tab](/label/) of the "
        "labeling app (it needs at least two versions).",
        icon=":material/info:",
    )
    st.stop()

rounds = st.select_slider(
    "Bootstrap rounds",
    [100, 200, 500, 1000],
    value=leaderboard.DEFAULT_ROUNDS,
    help="More rounds give steadier intervals; the seed is fixed, so results repeat.",
)
board = leaderboard.compute_leaderboard(battles, leaderboard.BASE_POLICY, rounds=rounds)
for warning in board.warnings:
    st.warning(warning, icon=":material/warning:")

rows = pd.DataFrame(board.rows())
rows["status"] = np.where(rows["too_few_battles"], f"⚠️ too few battles (< {board.min_battles})", "")
style = style_controlled(people_comparisons(studio.db), leaderboard.BASE_POLICY)
if style is not None:
    rows.insert(3, "style-controlled", [style.controlled.get(m) for m in rows["model"]])
    for warning in style.warnings:
        st.warning(warning, icon=":material/format_size:")
c1, c2, c3 = st.columns(3)
c1.metric("Battles", board.total_battles)
c2.metric("Versions", len(board.models))
c3.metric("Leader", rows.iloc[0]["model"])
st.dataframe(
    rows.drop(columns="too_few_battles"),
    hide_index=True,
    width="stretch",
    column_config={
        "rating": st.column_config.NumberColumn("rating", format="%.1f"),
        "style-controlled": st.column_config.NumberColumn(
            "style-controlled",
            format="%.1f",
            help="The rating once answer length and Markdown "
            "(headers, lists, bold) are accounted for, as Chatbot Arena's style control does: a "
            "version that wins only by writing longer answers drops here.",
        ),
        "ci_low": st.column_config.NumberColumn("95% CI low", format="%.1f"),
        "ci_high": st.column_config.NumberColumn("95% CI high", format="%.1f"),
    },
    placeholder="",
)

left, right = st.columns(2)
with left:
    st.subheader("Ratings with 95% intervals")
    ordered = rows.iloc[::-1]
    chart = go.Figure(
        go.Scatter(
            x=ordered["rating"],
            y=ordered["model"],
            mode="markers",
            marker={"size": 10, "color": np.where(ordered["too_few_battles"], "orange", "royalblue")},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": ordered["ci_high"] - ordered["rating"],
                "arrayminus": ordered["rating"] - ordered["ci_low"],
            },
        )
    )
    chart.update_layout(xaxis_title="rating", height=120 + 40 * len(rows), margin={"t": 10, "b": 40})
    st.plotly_chart(chart, width="stretch")
with right:
    st.subheader("Observed win rate (row beats column)")
    order = [board.models.index(m) for m in rows["model"]]
    rates = board.win_rate[np.ix_(order, order)]
    heat = go.Figure(
        go.Heatmap(
            z=rates,
            x=list(rows["model"]),
            y=list(rows["model"]),
            zmin=0,
            zmax=1,
            colorscale="RdBu",
            text=np.where(np.isnan(rates), "", np.vectorize(lambda v: f"{v:.0%}")(np.nan_to_num(rates))),
            texttemplate="%{text}",
            hovertemplate="%{y} vs %{x}: %{z:.0%}<extra></extra>",
        )
    )
    heat.update_layout(height=120 + 40 * len(rows), margin={"t": 10, "b": 40}, yaxis={"autorange": "reversed"})
    st.plotly_chart(heat, width="stretch")

st.download_button(
    "Download battles (FastChat JSONL)",
    leaderboard.battles_jsonl(battles),
    "battles.jsonl",
    mime="application/jsonl",
    help="`python launch.py leaderboard --battles battles.jsonl --json`",
)
