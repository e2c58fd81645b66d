"""The label signature: answer features, per-feature sign tests with Holm's correction, and what labels prefer.

Pure functions over text (core.compare.signature), plus the Data page's signature of real votes in a real DuckDB."""

from __future__ import annotations

import random

import pytest

from core.compare.signature import FEATURE_NAMES, holm, label_signature, measure, paired_tests, reading_grade, two_sided


def test_each_feature_measures_what_the_readme_says():
    text = (
        "# Plan\n\nYou can start now! Is that clear?\n\n- step one\n2. step two\n\n```\ncode\n```\n"
        "Use `pip`. It costs 42 dollars, maybe 3.5 🙂"
    )
    m = measure(text)
    assert m["paragraphs"] == 4 and m["list_items"] == 2 and m["headings"] == 1 and m["code"] == 2
    assert m["questions"] == 1 and m["emoji"] == 1 and m["numbers"] == 2 and m["exclamations"] == 1
    assert m["refusal"] == 0 and measure("I'm sorry, but I can't help with that.")["refusal"] == 1
    assert m["second_person"] == pytest.approx(100 / m["length"]) and m["hedging"] > 0
    assert measure("Привет, как дела?")["non_english"] == 1.0 and measure("Hello")["non_english"] == 0.0
    assert reading_grade("short one") is None
    assert reading_grade("The cat sat on the mat. The dog ran to the cat. It was fun.") < reading_grade(
        "Institutional considerations notwithstanding, comprehensive organisational restructuring "
        "necessitates multidimensional stakeholder consultation."
    )
    assert set(m) == set(FEATURE_NAMES)


def test_every_feature_is_defined_in_the_readme():
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in FEATURE_NAMES)


def test_holm_and_the_two_sided_sign_test():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
    assert two_sided(8, 0) == pytest.approx(2 / 256) and two_sided(0, 0) == 1.0 and two_sided(3, 3) == 1.0


def test_a_consistent_labeler_leaves_a_clear_signature_and_a_coin_flip_none():
    rng = random.Random(1)
    answers = [" ".join(["word"] * rng.randint(5, 80)) + "." for _ in range(80)]
    pairs = [(answers[2 * i], answers[2 * i + 1]) for i in range(40)]
    concise = [{"chosen": min(p, key=len), "rejected": max(p, key=len)} for p in pairs if len(p[0]) != len(p[1])]
    signature = label_signature(concise)
    assert signature.lines()[0] == f"your labels prefer shorter answers: {len(concise)} of {len(concise)} pairs"
    assert signature.preferences[0].feature == "length"
    coin = [{"chosen": a, "rejected": b} if rng.random() < 0.5 else {"chosen": b, "rejected": a} for a, b in pairs]
    assert label_signature(coin).preferences == []


def test_paired_tests_drop_ties_and_undefined_features():
    tests = {t.feature: t for t in paired_tests(["a b c", "hi"], ["a b", "hi"])}
    assert (tests["length"].more, tests["length"].less, tests["length"].ties) == (1, 0, 1)
    assert tests["reading_grade"].more + tests["reading_grade"].less + tests["reading_grade"].ties == 0


def test_overfitting_is_named_where_held_out_loss_turns_up():
    from core.share.curves import overfitting_step

    train = [(s, 1.0 - s / 24) for s in range(1, 25)]
    rising = [(0, 0.69), (6, 0.60), (12, 0.55), (18, 0.70), (24, 0.90)]
    assert overfitting_step(train, rising) == 12
    assert overfitting_step(train, [(0, 0.69), (12, 0.55), (24, 0.50)]) is None  # still improving
    assert overfitting_step(train, rising[:2]) is None  # too few evaluations
    # the walk-through's run: held-out loss best at step 0 (before any training step was logged), then rising
    assert overfitting_step(train, [(0, 0.69), (5, 0.75), (10, 0.9), (40, 1.0)]) == 0


def test_the_data_page_says_what_the_labels_prefer(tmp_path, monkeypatch):
    """Real votes in a real DuckDB: ada always picks the shorter answer, bob (6 pairs) the longer; the page (admin,
    local mode) shows everyone's signature, and a labeler's own filter gives only theirs."""
    import streamlit as st

    import core.studio
    from core.compare.signature import signature_of_labels
    from core.config import load_settings
    from core.data.filters import filters_from_dict
    from core.labeling.identity import ensure_user
    from core.labeling.votes import Vote, submit_labeled_pair
    from storage.db import Database
    from tests.support.studios import data_page

    data_dir = tmp_path / "data"
    db = Database.in_data_dir(data_dir)
    ada, bob = ensure_user(db, "ada", "admin", "t"), ensure_user(db, "bob", "labeler", "t")
    for i in range(30):
        short, long = f"Fact {i}.", f"Fact {i}, explained at length with several more words."
        submit_labeled_pair(db, ada, f"Tell me fact {i}.", short, long, Vote(0, 0, "a"))
        if i < 6:
            submit_labeled_pair(db, bob, f"Tell me fact {i}.", long, short, Vote(0, 0, "a"))
    everyone = signature_of_labels(db)
    assert everyone.pairs == 36 and everyone.preferences[0].feature == "length"
    assert everyone.lines()[0] == "your labels prefer shorter answers: 30 of 36 pairs, 6 the other way"
    bobs = signature_of_labels(db, filters_from_dict({"labelers": ["bob"]}))
    length = next(t for t in bobs.tests if t.feature == "length")
    assert bobs.pairs == 6 and (length.more, length.less) == (6, 0)
    assert bobs.preferences == []  # 6 of 6 (p = 0.03) does not survive the correction for 14 features
    db.close()

    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), tmp_path / "no-model"
    )
    try:
        st.cache_data.clear()
        app = data_page("What the labels prefer", timeout=30)
        assert not app.exception and not app.error
        shown = " ".join(m.value for m in app.markdown)
        assert "your labels prefer shorter answers: 30 of 36 pairs, 6 the other way" in shown
    finally:
        studio.close()
