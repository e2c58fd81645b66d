"""Inter-annotator agreement, checked against published and hand-computed values.

Notation (Krippendorff 2011): o[c,k] is the coincidence matrix, each unit with m_u >= 2 values adds
1/(m_u - 1) for every ordered pair of its values from different labelers; n_c = sum_k o[c,k];
n = sum_c n_c; alpha = 1 - (n - 1) * sum o[c,k] d2[c,k] / sum n_c n_k d2[c,k].
"""

from __future__ import annotations

import math

import pytest

from core.errors import ValidationError
from core.labeling.agreement import (
    LEVELS,
    agreement_by_labeler_pair,
    agreement_summary,
    krippendorff_alpha,
    pairwise_agreement,
)


def units_from_rows(rows: dict[str, str]) -> dict[int, dict[str, int]]:
    """Coder -> space-separated values per unit ('.' = missing), into item -> {coder: value}."""
    units: dict[int, dict[str, int]] = {}
    for coder, row in rows.items():
        for unit, value in enumerate(row.split(), start=1):
            units.setdefault(unit, {})
            if value != ".":
                units[unit][coder] = int(value)
    return units


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the reliability data example.
KRIPPENDORFF_2011 = units_from_rows(
    {
        "A": "1 2 3 3 2 1 4 1 2 . . .",
        "B": "1 2 3 3 2 2 4 1 2 5 . 3",
        "C": ". 3 3 3 2 3 4 2 2 5 1 .",
        "D": "1 2 3 3 2 4 4 1 2 5 1 .",
    }
)


# ----------------------------------------------------------------------------- Krippendorff's alpha


@pytest.mark.parametrize(
    "level, published",
    [
        ("nominal", 0.743),
        ("ordinal", 0.815),
        ("interval", 0.849),
        ("ratio", 0.797),
    ],
)
def test_alpha_matches_krippendorff_2011_published_values(level, published):
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == published


def test_alpha_nominal_on_krippendorff_2011_exactly():
    # Unit 12 has one value and is dropped, leaving n = 40 pairable values with
    # n_1..n_5 = 9, 13, 10, 5, 3 and sum_c o[c,c] = 32 (units 1,3,4,5,7,9,10,11 agree fully:
    # 3+4+4+4+4+4+3+2 = 28; units 2 and 8 add 3 * 2/3 = 2 each; unit 6 adds 0).
    # Nominal form: ((n-1) sum o_cc - sum n_c(n_c-1)) / (n(n-1) - sum n_c(n_c-1))
    #   sum n_c(n_c-1) = 72 + 156 + 90 + 20 + 6 = 344
    #   alpha = (39*32 - 344) / (40*39 - 344) = 904 / 1216
    assert krippendorff_alpha(KRIPPENDORFF_2011, "nominal") == pytest.approx(904 / 1216)


def test_alpha_ordinal_value_domain_wider_than_data_changes_nothing():
    # Values nobody used have n_g = 0, so they add no ordinal distance.
    assert krippendorff_alpha(KRIPPENDORFF_2011, "ordinal", values=range(0, 10)) == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_2011, "ordinal")
    )


@pytest.mark.parametrize("level", LEVELS)
def test_perfect_agreement_is_one(level):
    units = {"i1": {"a": 1, "b": 1}, "i2": {"a": 2, "b": 2, "c": 2}, "i3": {"b": 5, "c": 5}}
    assert krippendorff_alpha(units, level) == 1.0


def test_tiny_nominal_case_by_hand():
    # 2 coders, 4 units: (a,a) (a,b) (b,b) (b,b); m_u = 2 so every ordered pair weighs 1.
    #   o_aa = 2, o_ab = o_ba = 1, o_bb = 4  ->  n_a = 3, n_b = 5, n = 8
    #   observed: sum o d2 = o_ab + o_ba = 2
    #   expected: sum n_c n_k d2 = 2 * n_a * n_b = 30
    #   alpha = 1 - 7 * 2 / 30 = 16/30 = 8/15
    units = {1: {"x": "a", "y": "a"}, 2: {"x": "a", "y": "b"}, 3: {"x": "b", "y": "b"}, 4: {"x": "b", "y": "b"}}
    assert krippendorff_alpha(units, "nominal") == pytest.approx(8 / 15)


def test_string_labels_nominal_by_hand():
    # i1: 3 labels "a" -> 6 ordered pairs at weight 1/2: o_aa += 3
    # i2, i4: ("b","b") -> o_bb += 2 each; i3: ("tie","a") -> o_ta = o_at = 1; i5 has one label: ignored
    #   n_a = 4, n_b = 4, n_tie = 1, n = 9
    #   observed = o_at + o_ta = 2; expected = 2 * (4*4 + 4*1 + 4*1) = 48
    #   alpha = 1 - 8 * 2 / 48 = 2/3
    units = {
        "i1": {"x": "a", "y": "a", "z": "a"},
        "i2": {"x": "b", "y": "b"},
        "i3": {"x": "tie", "y": "a"},
        "i4": {"x": "b", "z": "b"},
        "i5": {"y": "tie"},
    }
    assert krippendorff_alpha(units, "nominal") == pytest.approx(2 / 3)
    # pairs: i1 3 of 3, i2 1 of 1, i3 0 of 1, i4 1 of 1 -> 5 / 6
    assert pairwise_agreement(units) == pytest.approx(5 / 6)


# Three units (1,1) (1,2) (3,3): o_11 = 2, o_12 = o_21 = 1, o_33 = 2; n_1 = 3, n_2 = 1, n_3 = 2, n = 6.
SMALL_SCALE = {1: {"x": 1, "y": 1}, 2: {"x": 1, "y": 2}, 3: {"x": 3, "y": 3}}


def test_small_ordinal_case_by_hand():
    # d2_12 = (n_1 + n_2 - (n_1 + n_2)/2)^2 = (4 - 2)^2 = 4
    # d2_13 = (n_1 + n_2 + n_3 - (n_1 + n_3)/2)^2 = (6 - 2.5)^2 = 12.25
    # d2_23 = (n_2 + n_3 - (n_2 + n_3)/2)^2 = (3 - 1.5)^2 = 2.25
    # observed = 2 * d2_12 = 8; expected = 2 * (3*1*4 + 3*2*12.25 + 1*2*2.25) = 180
    # alpha = 1 - 5 * 8 / 180 = 7/9
    assert krippendorff_alpha(SMALL_SCALE, "ordinal") == pytest.approx(7 / 9)
    assert krippendorff_alpha(SMALL_SCALE, "ordinal", values=[1, 2, 3, 4, 5]) == pytest.approx(7 / 9)


def test_small_interval_case_by_hand():
    # d2 = (c - k)^2: d2_12 = 1, d2_13 = 4, d2_23 = 1
    # observed = 2 * 1 = 2; expected = 2 * (3*1*1 + 3*2*4 + 1*2*1) = 58
    # alpha = 1 - 5 * 2 / 58 = 24/29
    assert krippendorff_alpha(SMALL_SCALE, "interval") == pytest.approx(24 / 29)


def test_small_ratio_case_by_hand():
    # d2 = ((c - k)/(c + k))^2: d2_12 = 1/9, d2_13 = 1/4, d2_23 = 1/25
    # observed = 2/9; expected = 2 * (3/9 + 6/4 + 2/25) = 574/150
    # alpha = 1 - 5 * (2/9) / (574/150) = 611/861
    assert krippendorff_alpha(SMALL_SCALE, "ratio") == pytest.approx(611 / 861)


def test_ratio_handles_zero_pairs():
    # (0,0) (0,1) (1,1): d2_00 = 0 (not 0/0), d2_01 = 1, like nominal:
    # o_00 = 2, o_01 = o_10 = 1, o_11 = 2; n_0 = n_1 = 3, n = 6
    # alpha = 1 - 5 * 2 / (2 * 3 * 3) = 4/9
    units = {1: {"x": 0, "y": 0}, 2: {"x": 0, "y": 1}, 3: {"x": 1, "y": 1}}
    assert krippendorff_alpha(units, "ratio") == pytest.approx(4 / 9)


def test_ordinal_string_labels_follow_the_given_scale_order():
    words = {1: "low", 2: "mid", 3: "high"}
    units = {u: {c: words[v] for c, v in labels.items()} for u, labels in SMALL_SCALE.items()}
    assert krippendorff_alpha(units, "ordinal", values=["low", "mid", "high"]) == pytest.approx(7 / 9)
    # On the scale low < high < mid the one disagreement (low, mid) spans the whole scale:
    #   n_low = 3, n_high = 2, n_mid = 1, n = 6
    #   d2(low, high) = (5 - 2.5)^2 = 6.25, d2(low, mid) = (6 - 2)^2 = 16, d2(high, mid) = (3 - 1.5)^2 = 2.25
    #   observed = 2 * 16 = 32; expected = 2 * (3*2*6.25 + 3*1*16 + 2*1*2.25) = 180
    #   alpha = 1 - 5 * 32 / 180 = 1/9
    assert krippendorff_alpha(units, "ordinal", values=["low", "high", "mid"]) == pytest.approx(1 / 9)


def test_single_labels_and_missing_values_are_ignored():
    with_noise = {**KRIPPENDORFF_2011, "solo": {"A": 5}, "blank": {}, "none": {"A": 1, "B": None, "C": math.nan}}
    for level in LEVELS:
        assert krippendorff_alpha(with_noise, level) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level))


@pytest.mark.parametrize(
    "units",
    [
        {},  # nothing at all
        {1: {"a": 1}, 2: {"b": 2}},  # no item has two labels
        {1: {"a": 1, "b": None}, 2: {"a": math.nan, "b": 3}},  # missing values don't pair
        {1: {"a": 2, "b": 2}, 2: {"a": 2, "b": 2, "c": 2}},  # one value only: D_e = 0
    ],
)
@pytest.mark.parametrize("level", LEVELS)
def test_undefined_alpha_is_none(units, level):
    assert krippendorff_alpha(units, level) is None


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"units": {1: {"a": 1, "b": 2}}, "level": "cardinal"}, "unknown measurement level"),
        ({"units": {1: {"a": "x", "b": "y"}}, "level": "interval"}, "must be numeric"),
        ({"units": {1: {"a": -1, "b": 2}}, "level": "ratio"}, "cannot be negative"),
        ({"units": {1: {"a": 1, "b": 7}}, "level": "ordinal", "values": range(1, 6)}, "not among the allowed"),
        ({"units": {1: {"a": 1, "b": 2}}, "level": "ordinal", "values": [1, 2, 2]}, "duplicates"),
        ({"units": {1: {"a": 1, "b": "x"}}, "level": "ordinal"}, "cannot be ordered"),
        ({"units": [[1, 2]], "level": "nominal"}, "must be a mapping"),
        ({"units": {1: [1, 2]}, "level": "nominal"}, "must be a mapping"),
    ],
)
def test_bad_input_is_refused_with_a_hint(kwargs, fragment):
    with pytest.raises(ValidationError) as info:
        krippendorff_alpha(**kwargs)
    assert fragment in info.value.message and info.value.hint


# ----------------------------------------------------------------------------- percent agreement

PAIRWISE = {
    "i1": {"A": "a", "B": "a", "C": "b"},  # AB agree, AC and BC don't: 1 of 3
    "i2": {"A": "b", "B": "b"},  # AB agree: 1 of 1
    "i3": {"A": "a"},  # no pair
}


def test_pairwise_agreement_by_hand():
    # pooled over pairs: (1 + 1) / (3 + 1) = 0.5
    assert pairwise_agreement(PAIRWISE) == 0.5


def test_pairwise_agreement_on_krippendorff_2011():
    # pairs per unit (m choose 2): u1 3, u2..u9 6 each, u10 3, u11 1, u12 0 -> 55
    # agreeing: u1 3, u2 3 (2,2,3,2), u3-u5 6 each, u6 0 (1,2,3,4), u7 6, u8 3 (1,1,2,1),
    #           u9 6, u10 3, u11 1 -> 43
    assert pairwise_agreement(KRIPPENDORFF_2011) == pytest.approx(43 / 55)


def test_pairwise_agreement_without_pairs_is_none():
    assert pairwise_agreement({}) is None
    assert pairwise_agreement({1: {"a": 1}, 2: {"a": 2, "b": None}}) is None


def test_agreement_by_labeler_pair_by_hand():
    assert agreement_by_labeler_pair(PAIRWISE) == [
        {"labeler_a": "A", "labeler_b": "B", "items": 2, "agreement": 1.0},  # i1 a=a, i2 b=b
        {"labeler_a": "A", "labeler_b": "C", "items": 1, "agreement": 0.0},  # i1 a != b
        {"labeler_a": "B", "labeler_b": "C", "items": 1, "agreement": 0.0},  # i1 a != b
    ]


def test_labeler_pairs_without_shared_items_have_no_agreement():
    rows = agreement_by_labeler_pair({1: {"A": 1, "B": 1}, 2: {"C": 3}})
    assert {(r["labeler_a"], r["labeler_b"]): (r["items"], r["agreement"]) for r in rows} == {
        ("A", "B"): (1, 1.0),
        ("A", "C"): (0, None),
        ("B", "C"): (0, None),
    }


def test_labeler_pairs_on_krippendorff_2011():
    # A vs C share units 2-9 (8 items) and agree on 3, 4, 5, 7, 9 -> 5/8
    rows = {(r["labeler_a"], r["labeler_b"]): r for r in agreement_by_labeler_pair(KRIPPENDORFF_2011)}
    assert len(rows) == 6
    assert (rows["A", "C"]["items"], rows["A", "C"]["agreement"]) == (8, 5 / 8)


# ----------------------------------------------------------------------------- per-aspect summary


def test_agreement_summary_per_aspect():
    rows = agreement_summary(
        {"helpfulness": KRIPPENDORFF_2011, "preference": PAIRWISE},
        {"helpfulness": "ordinal"},  # preference is not listed: nominal
    )
    assert rows == [
        {
            "aspect": "helpfulness",
            "level": "ordinal",
            "items": 12,
            "multi_labeled_items": 11,
            "pairable_values": 40,
            "pairwise_agreement": pytest.approx(43 / 55),
            "alpha": pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, "ordinal")),
        },
        # PAIRWISE: o_aa = 1 (i1, weight 1/2), o_ab = o_ba = 1, o_bb = 2; n_a = 2, n_b = 3, n = 5
        # alpha = 1 - 4 * 2 / (2 * 2 * 3) = 1/3
        {
            "aspect": "preference",
            "level": "nominal",
            "items": 3,
            "multi_labeled_items": 2,
            "pairable_values": 5,
            "pairwise_agreement": 0.5,
            "alpha": pytest.approx(1 / 3),
        },
    ]


def test_agreement_summary_passes_the_value_domain():
    units = {1: {"x": "low", "y": "low"}, 2: {"x": "low", "y": "mid"}, 3: {"x": "high", "y": "high"}}
    [row] = agreement_summary(
        {"quality": units}, {"quality": "ordinal"}, values_by_aspect={"quality": ["low", "mid", "high"]}
    )
    assert row["alpha"] == pytest.approx(7 / 9)


# --- Cohen's kappa: worked examples from the literature -------------------------------------------------------


def _pairs(table: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    return [pair for pair, count in table.items() for _ in range(count)]


def test_cohen_kappa_matches_the_worked_example_in_wikipedia():
    """Wikipedia, "Cohen's kappa", simple example: 50 applications, Yes/Yes 20, Yes/No 5, No/Yes 10, No/No 15:
    p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    from core.labeling.agreement import cohen_kappa

    pairs = _pairs({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15})
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_same_agreement_different_chance():
    """Wikipedia's "same percentage, different kappa" tables (both p_o = 0.60): 0.1304 and 0.2593."""
    from core.labeling.agreement import cohen_kappa

    first = _pairs({("yes", "yes"): 45, ("yes", "no"): 15, ("no", "yes"): 25, ("no", "no"): 15})
    second = _pairs({("yes", "yes"): 25, ("yes", "no"): 35, ("no", "yes"): 5, ("no", "no"): 35})
    assert cohen_kappa(first) == pytest.approx(0.1304, abs=1e-4)
    assert cohen_kappa(second) == pytest.approx(0.2593, abs=1e-4)


def test_cohen_kappa_edges_and_confusion_matrix():
    from core.labeling.agreement import cohen_kappa, confusion_matrix

    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None  # one label only: nothing measured
    assert cohen_kappa([("a", "a"), ("b", "b"), ("tie", "tie")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert cohen_kappa([("a", None), ("a", "a"), ("b", "b")]) == pytest.approx(1.0)  # missing: not shared
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("tie", "a")]
    assert confusion_matrix(pairs, ["a", "b", "tie"]) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_a_judge_is_calibrated_only_when_its_kappa_interval_clears_chance():
    """The issue's judge: kappa 0.08 on 51 shared items (42 of them position ties) must not count as calibrated."""
    from core.labeling.agreement import calibration_verdict, cohen_kappa, kappa_interval

    # 51 items: the judge says tie on 42 and agrees with people on 5 of the other 9. By hand: p_o = 15/51,
    # p_e = (42*10 + 5*21 + 4*20)/51^2, kappa = 0.080, se = sqrt(p_o (1-p_o) / (51 (1-p_e)^2)) = 0.0831
    people = ["a"] * 16 + ["b"] * 16 + ["tie"] * 10 + ["a"] * 5 + ["b"] * 4
    judge = ["tie"] * 42 + ["a", "a", "a", "b", "b", "b", "b", "a", "a"]
    weak = kappa_interval(list(zip(judge, people)))
    assert weak == pytest.approx((-0.083, 0.243), abs=1e-3) and cohen_kappa(list(zip(judge, people))) == pytest.approx(
        0.080, abs=1e-3
    )
    ok, why = calibration_verdict(51, weak, 20)
    assert not ok and why.startswith("agreement with people not clear of chance")
    good = kappa_interval([("a", "a")] * 15 + [("b", "b")] * 15 + [("a", "b")] * 3 + [("b", "a")] * 2)
    assert good[0] > 0 and calibration_verdict(35, good, 20) == (
        True,
        f"kappa 95% interval {good[0]:.2f} to {good[1]:.2f}, clear of chance",
    )
    assert calibration_verdict(10, good, 20) == (False, "10 of 20 shared items")
    assert calibration_verdict(0, None, 0)[0] is True  # min_judge_calibration 0 trusts every judge
    assert calibration_verdict(30, None, 20)[1].startswith("kappa undefined")
