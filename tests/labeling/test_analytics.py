"""Labeling analytics on a real DuckDB: counts, distributions, agreement on overlapping items, filters.

The seed is small enough to compute every expected number by hand (see the comments in ``seed``).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from core.labeling import analytics
from storage.db import Database

ADA, BO, CY = 1, 2, 3
TWO_DAYS_AGO = "current_timestamp - INTERVAL 2 DAY"


def seed(db: Database) -> None:
    """Three labelers, three prompts.

    P1 (queued, prompt 1): candidates 1, 2. ada a, bo a, cy b on the swapped pair (2, 1) = also "1 wins".
    P2 (queued, prompt 2): candidates 3, 4. ada tie, bo b (flag pii), cy b; cy's later vote a is undone
       (retracted) and bo's later both_bad is redacted: neither counts.
    P3 (free chat, no prompt id): "Tell me a joke" asked in two conversations (different whitespace),
       ada and bo each got their own candidates (5, 6) and (7, 8); both vote a, bo's vote came from arena.
    Votes 1, 2 and their ratings and thumb are two days old, everything else is from today.
    """
    with db.transaction() as cur:
        for name, role in [("ada", "admin"), ("bo", "labeler"), ("cy", "labeler")]:  # ids 1, 2, 3
            cur.execute("INSERT INTO users (name, role) VALUES (?, ?)", [name, role])
        cur.execute("INSERT INTO prompts (id, text, queue_id) VALUES (1, 'What is 2+2?', 1), (2, 'Name a color.', 1)")
        cur.execute("INSERT INTO conversations (id, user_id) VALUES (1, 1), (2, 2)")
        cur.execute(
            "INSERT INTO messages (conversation_id, turn, role, content) VALUES"
            " (1, 0, 'user', '  Tell me   a joke '), (2, 0, 'user', 'Tell me a joke')"
        )
        cur.execute(
            "INSERT INTO candidates (id, prompt_id, conversation_id, turn, text) VALUES"
            " (1, 1, NULL, NULL, 'Four.'), (2, 1, NULL, NULL, 'Five.'),"
            " (3, 2, NULL, NULL, 'Blue.'), (4, 2, NULL, NULL, 'Loud.'),"
            " (5, NULL, 1, 1, 'Knock knock.'), (6, NULL, 1, 1, 'No.'),"
            " (7, NULL, 2, 1, 'A pun.'), (8, NULL, 2, 1, 'Nope.')"
        )
        cur.execute(f"""INSERT INTO preferences
            (id, prompt_id, conversation_id, turn, candidate_a, candidate_b, outcome, labeler_id, source,
             flags, note, created_at, retracted_at, redacted_at) VALUES
            (1, 1, NULL, NULL, 1, 2, 'a', 1, 'chat', NULL, NULL, {TWO_DAYS_AGO}, NULL, NULL),
            (2, 1, NULL, NULL, 1, 2, 'a', 2, 'chat', NULL, NULL, {TWO_DAYS_AGO}, NULL, NULL),
            (3, 1, NULL, NULL, 2, 1, 'b', 3, 'chat', NULL, NULL, now(), NULL, NULL),
            (4, 2, NULL, NULL, 3, 4, 'tie', 1, 'chat', NULL, NULL, now(), NULL, NULL),
            (5, 2, NULL, NULL, 3, 4, 'b', 2, 'chat', ['pii'], 'mentions a phone number', now(), NULL, NULL),
            (6, 2, NULL, NULL, 3, 4, 'b', 3, 'chat', NULL, NULL, now(), NULL, NULL),
            (7, 2, NULL, NULL, 3, 4, 'a', 3, 'chat', NULL, NULL, now(), now(), NULL),
            (8, 2, NULL, NULL, 3, 4, 'both_bad', 2, 'chat', NULL, NULL, now(), NULL, now()),
            (9, NULL, 1, 1, 5, 6, 'a', 1, 'chat', NULL, NULL, now(), NULL, NULL),
            (10, NULL, 2, 1, 7, 8, 'a', 2, 'arena', ['off_topic'], NULL, now(), NULL, NULL)""")
        cur.execute(f"""INSERT INTO ratings (candidate_id, user_id, aspect, score, preference_id, created_at) VALUES
            (1, 1, 'helpfulness', 5, 1, {TWO_DAYS_AGO}), (2, 1, 'helpfulness', 2, 1, {TWO_DAYS_AGO}),
            (1, 2, 'helpfulness', 4, 2, {TWO_DAYS_AGO}), (2, 2, 'helpfulness', 2, 2, {TWO_DAYS_AGO}),
            (1, 3, 'helpfulness', 5, 3, now()),
            (3, 3, 'harmlessness', 3, 6, now()),
            (3, 3, 'helpfulness', 1, 7, now()),
            (3, 2, 'helpfulness', 1, 8, now()),
            (5, 1, 'honesty', 4, 9, now()), (7, 2, 'honesty', 4, 10, now())""")
        cur.execute(
            f"INSERT INTO thumbs (candidate_id, preference_id, user_id, up, created_at)"
            f" VALUES (1, 1, 1, TRUE, {TWO_DAYS_AGO})"
        )
        cur.execute(
            "INSERT INTO gold_answers (preference_id, candidate_id, user_id, text) VALUES (2, 2, 2, 'Four, actually.')"
        )


@pytest.fixture
def seeded(db: Database) -> Database:
    seed(db)
    return db


def test_empty_database_gives_empty_frames_not_errors(db: Database) -> None:
    assert analytics.summary(db)["votes"] == 0
    assert analytics.counts_over_time(db).empty
    assert analytics.labeler_stats(db).empty
    assert analytics.recent_items(db).empty
    assert list(analytics.recent_items(db).columns) == analytics.RECENT_COLUMNS
    assert analytics.outcome_distribution(db)["count"].tolist() == [0, 0, 0, 0]
    dist = analytics.aspect_distributions(db)
    assert set(dist["aspect"]) == {"helpfulness", "harmlessness", "honesty"} and dist["count"].sum() == 0
    table = analytics.agreement_table(db)
    assert table["measure"].tolist() == ["outcome"] and table["overlapping_items"].tolist() == [0]
    assert math.isnan(table["alpha"][0])
    assert analytics.labeler_pair_agreement(db).empty
    assert analytics.filter_options(db) == {"labelers": [], "sources": [], "flags": []}


def test_summary_counts_only_live_votes(seeded: Database) -> None:
    s = analytics.summary(seeded)
    assert s["votes"] == 8  # 10 minus one retracted, one redacted
    assert s["votes_today"] == 6
    assert s["ratings"] == 8  # the ratings given with votes 7 and 8 do not count
    assert s["labelers"] == 3
    assert s["overlapping_items"] == 3
    assert s["retracted"] == 1
    assert (s["thumbs"], s["gold_edits"]) == (1, 1)


def test_counts_over_time_has_one_row_per_day_with_zeros(seeded: Database) -> None:
    counts = analytics.counts_over_time(seeded)
    today = seeded.scalar("SELECT current_date")
    assert counts["day"].tolist() == [today - dt.timedelta(days=d) for d in (2, 1, 0)]
    assert counts[["votes", "ratings", "gold_edits", "thumbs"]].values.tolist() == [
        [2, 4, 0, 1],
        [0, 0, 0, 0],
        [6, 4, 1, 0],
    ]


def test_labeler_stats(seeded: Database) -> None:
    stats = analytics.labeler_stats(seeded).set_index("labeler")
    assert stats.loc["ada", ["votes", "today", "a", "tie", "both_bad"]].tolist() == [3, 2, 2, 1, 0]
    assert stats.loc["ada", "tie_share"] == pytest.approx(1 / 3)
    assert stats.loc["bo", ["votes", "today", "a", "b", "both_bad"]].tolist() == [3, 2, 2, 1, 0]
    assert stats.loc["cy", ["votes", "b", "ratings"]].tolist() == [2, 2, 2]
    assert stats.loc["cy", "both_bad_share"] == 0
    assert stats.loc["ada", "last_active"].date() == seeded.scalar("SELECT current_date")


def test_distributions(seeded: Database) -> None:
    dist = analytics.aspect_distributions(seeded)
    counts = {(r.aspect, r.score): r.count for r in dist.itertuples()}
    assert [counts[("helpfulness", s)] for s in (1, 2, 3, 4, 5)] == [0, 2, 0, 1, 2]
    assert counts[("harmlessness", 3)] == 1 and counts[("honesty", 4)] == 2
    assert dist["aspect"].drop_duplicates().tolist() == ["helpfulness", "harmlessness", "honesty"]
    outcomes = analytics.outcome_distribution(seeded).set_index("outcome")["count"].to_dict()
    assert outcomes == {"a": 4, "b": 3, "tie": 1, "both_bad": 0}  # as clicked: positions, not swapped


def test_overlapping_items_group_by_prompt_id_or_user_text(seeded: Database) -> None:
    units = analytics.outcome_units(seeded)
    # cy voted b on the swapped pair (2, 1): the same answer as a on (1, 2); latest live vote per labeler
    assert units == {
        "prompt:1": {ADA: "a", BO: "a", CY: "a"},
        "prompt:2": {ADA: "tie", BO: "b", CY: "b"},
        "text:Tell me a joke": {ADA: "a", BO: "a"},
    }


def test_rating_units_use_shared_candidates_else_prompt_and_side(seeded: Database) -> None:
    units = analytics.rating_units(seeded)
    assert units["helpfulness"] == {"candidate:1": {ADA: 5, BO: 4, CY: 5}, "candidate:2": {ADA: 2, BO: 2}}
    assert units["honesty"] == {"text:Tell me a joke|a": {ADA: 4, BO: 4}}
    assert units["harmlessness"] == {"prompt:2|a": {CY: 3}}


def test_agreement_table_matches_hand_computation(seeded: Database) -> None:
    table = analytics.agreement_table(seeded).set_index("measure")
    assert table.index.tolist() == ["outcome", "helpfulness", "harmlessness", "honesty"]
    # outcome: units {a,a,a} {tie,b,b} {a,a}. Pairs: 3 + 1 + 1 alike of 3 + 3 + 1.
    # Nominal alpha: n_a=5, n_b=2, n_tie=1, n=8; D_o = 2/8, D_e = 2(5*1 + 5*2 + 1*2)/(8*7) = 34/56.
    out = table.loc["outcome"]
    assert (out["level"], out["overlapping_items"], out["labels"]) == ("nominal", 3, 8)
    assert out["pairwise_agreement"] == pytest.approx(5 / 7)
    assert out["alpha"] == pytest.approx(1 - (2 / 8) / (34 / 56))  # = 10/17
    # helpfulness: units {5,4,5} {2,2}: pairs alike 1 + 1 of 3 + 1. Ordinal alpha: n_2=2, n_4=1, n_5=2;
    # delta^2(4,5) = (3 - 1.5)^2 = 2.25, delta^2(2,4) = 2.25, delta^2(2,5) = (5 - 2)^2 = 9;
    # D_o = 2 * 0.5 * 2 pairs * 2.25 / 5 = 0.9; D_e = 2(2*1*2.25 + 2*2*9 + 1*2*2.25) / 20 = 4.5.
    helpful = table.loc["helpfulness"]
    assert (helpful["level"], helpful["overlapping_items"], helpful["labels"]) == ("ordinal", 2, 5)
    assert helpful["pairwise_agreement"] == pytest.approx(0.5)
    assert helpful["alpha"] == pytest.approx(1 - 0.9 / 4.5)
    # honesty: one unit where both gave 4: full agreement, but no variation, so alpha is undefined
    assert table.loc["honesty", "pairwise_agreement"] == 1.0 and math.isnan(table.loc["honesty", "alpha"])
    assert table.loc["harmlessness", "overlapping_items"] == 0


def test_labeler_pair_agreement(seeded: Database) -> None:
    pairs = analytics.labeler_pair_agreement(seeded)
    got = {(r.labeler_a, r.labeler_b): (r.items, r.agreement) for r in pairs.itertuples()}
    assert got == {("ada", "bo"): (3, pytest.approx(2 / 3)), ("ada", "cy"): (2, 0.5), ("bo", "cy"): (2, 1.0)}
    matrix = analytics.pair_matrix(pairs)
    assert matrix.loc["cy", "bo"] == 1.0 and math.isnan(matrix.loc["ada", "ada"])
    helpful = analytics.labeler_pair_agreement(seeded, "helpfulness")
    assert helpful.set_index(["labeler_a", "labeler_b"]).loc[("ada", "bo"), "agreement"] == 0.5


def test_recent_items_show_the_item_and_filter(seeded: Database) -> None:
    items = analytics.recent_items(seeded)
    assert len(items) == 8 and 7 not in items["preference_id"].tolist() and 8 not in items["preference_id"].tolist()
    first = items.set_index("preference_id").loc[1]
    assert (first["prompt"], first["answer_a"], first["answer_b"]) == ("What is 2+2?", "Four.", "Five.")
    assert (first["labeler"], first["outcome"], first["ratings"]) == ("ada", "a", "helpfulness A5 B2")
    joke = items.set_index("preference_id").loc[9]
    assert joke["prompt"] == "  Tell me   a joke " and joke["ratings"] == "honesty A4"

    def ids(**filters) -> list[int]:
        return sorted(analytics.recent_items(seeded, **filters)["preference_id"].tolist())

    today = seeded.scalar("SELECT current_date")
    assert ids(labeler_id=BO) == [2, 5, 10]
    assert ids(outcome="tie") == [4]
    assert ids(flag="pii") == [5]
    assert ids(source="arena") == [10]
    assert ids(search="JOKE") == [9, 10]
    assert ids(search="phone") == [5]  # the note is searched too
    assert ids(search="Loud") == [4, 5, 6]  # and the answers
    assert ids(since=today) == [3, 4, 5, 6, 9, 10]
    assert ids(until=today - dt.timedelta(days=1)) == [1, 2]
    assert ids(labeler_id=BO, since=today, outcome="a") == [10]
    assert ids(limit=2) == [9, 10]  # newest first, then by id
    flagged = analytics.recent_items(seeded, flag="pii").iloc[0]
    assert (flagged["flags"], flagged["note"]) == ("pii", "mentions a phone number")


def test_filter_options(seeded: Database) -> None:
    options = analytics.filter_options(seeded)
    assert options["labelers"] == [(ADA, "ada"), (BO, "bo"), (CY, "cy")]
    assert options["sources"] == ["arena", "chat"]
    assert options["flags"] == ["off_topic", "pii"]


def test_votes_on_a_redacted_prompt_are_excluded(seeded: Database) -> None:
    with seeded.transaction() as cur:
        cur.execute("UPDATE prompts SET redacted_at = now() WHERE id = 2")
    assert analytics.summary(seeded)["votes"] == 5
    assert "prompt:2" not in analytics.outcome_units(seeded)
    assert analytics.aspect_distributions(seeded).set_index(["aspect", "score"]).loc[("harmlessness", 3), "count"] == 0


def test_follow_ups_stay_apart_and_api_pairs_join_free_chat_by_text(db: Database) -> None:
    with db.transaction() as cur:
        cur.execute("INSERT INTO users (id, name) VALUES (1, 'ada'), (2, 'bo')")
        # two unrelated chats that both end in "Why?": different items
        cur.execute("INSERT INTO conversations (id, user_id) VALUES (1, 1), (2, 2)")
        cur.execute(
            "INSERT INTO messages (conversation_id, turn, role, content) VALUES"
            " (1, 0, 'user', 'Is the sky blue?'), (1, 1, 'assistant', 'Yes.'), (1, 2, 'user', 'Why?'),"
            " (2, 0, 'user', 'Is grass red?'), (2, 1, 'assistant', 'No.'), (2, 2, 'user', 'Why?')"
        )
        cur.execute(
            "INSERT INTO candidates (id, conversation_id, turn, text) VALUES"
            " (1, 1, 3, 'Rayleigh.'), (2, 1, 3, 'Magic.'), (3, 2, 3, 'Chlorophyll.'), (4, 2, 3, 'Paint.')"
        )
        # the same pair sent through the API by both, bo's copy with the answers swapped (non-queue prompts)
        cur.execute(
            "INSERT INTO prompts (id, text, source) VALUES (1, 'Pick a fruit', 'api'), (2, 'Pick  a fruit', 'api')"
        )
        cur.execute(
            "INSERT INTO candidates (id, prompt_id, text) VALUES (5, 1, 'Apple'), (6, 1, 'Rock'),"
            " (7, 2, 'Rock'), (8, 2, 'Apple')"
        )
        cur.execute(
            "INSERT INTO preferences (id, conversation_id, turn, prompt_id, candidate_a, candidate_b,"
            " outcome, labeler_id) VALUES (1, 1, 3, NULL, 1, 2, 'a', 1), (2, 2, 3, NULL, 3, 4, 'a', 2),"
            " (3, NULL, NULL, 1, 5, 6, 'a', 1), (4, NULL, NULL, 2, 7, 8, 'b', 2)"
        )
        cur.execute(
            "INSERT INTO ratings (candidate_id, user_id, aspect, score, preference_id) VALUES"
            " (5, 1, 'helpfulness', 5, 3), (8, 2, 'helpfulness', 4, 4), (6, 1, 'helpfulness', 1, 3)"
        )
    units = analytics.outcome_units(db)
    assert units == {
        "text:Is the sky blue? | Why?": {ADA: "a"},
        "text:Is grass red? | Why?": {BO: "a"},
        "text:Pick a fruit": {ADA: "a", BO: "a"},
    }  # bo's b on the swapped pair = Apple
    assert analytics.rating_units(db)["helpfulness"] == {
        "candidate:5": {ADA: 5, BO: 4},
        "text:Pick a fruit|b": {ADA: 1},
    }
    assert analytics.recent_items(db, labeler_id=ADA)["prompt"].tolist() == ["Pick a fruit", "Why?"]


def test_data_page_renders_empty_and_seeded_without_errors(tmp_path: Path, monkeypatch) -> None:
    """The console page itself, run in-process by Streamlit's AppTest against a real studio."""
    import streamlit as st

    import core.studio
    from core.config import load_settings
    from tests.support.studios import data_page

    monkeypatch.setattr(core.studio, "_current", None)
    for name in ("empty", "seeded"):
        data_dir = tmp_path / name
        if name == "seeded":
            database = Database.in_data_dir(data_dir)
            seed(database)
            database.close()
        studio = core.studio.open_studio(
            load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), tmp_path / "no-model"
        )
        try:
            st.cache_data.clear()
            app = data_page(timeout=30)
            assert not app.exception and not app.error
            if name == "empty":
                assert any("No labels yet" in info.value for info in app.info)
                continue
            assert [m.value for m in app.metric][:2] == ["8", "8"]  # votes, ratings
            assert not app.text_input  # the tabs run lazily: the items' filters only on the Items tab
            app = data_page("Items", timeout=30)
            assert [m.value for m in app.metric][:2] == ["8", "8"]  # the metrics head every tab
            app.text_input(key="f_search").input("joke").run()
            assert not app.exception and "2 item(s)" in " ".join(c.value for c in app.caption)
        finally:
            studio.close()
