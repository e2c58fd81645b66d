"""Inter-annotator agreement: how far can we trust labels that several people gave the same items?

Input everywhere is ``units``: item id -> {labeler id -> value}. A labeler who skipped an item is
simply absent (``None`` and NaN count as absent too), so overlapping, incomplete assignments need no
padding.

Two views answer different questions:

* ``pairwise_agreement`` / ``agreement_by_labeler_pair``: "how often do two people give the same
  label?" Easy to explain on a console page, but inflated by chance when one label dominates.
* ``krippendorff_alpha``: agreement corrected for chance, for nominal, ordinal, interval and ratio
  data, tolerant of missing values. Follows Krippendorff (2011), "Computing Krippendorff's
  Alpha-Reliability": build the coincidence matrix, then alpha = 1 - D_o / D_e.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ValidationError

if TYPE_CHECKING:
    from storage.db import Database

LEVELS = ("nominal", "ordinal", "interval", "ratio")

# item -> labeler -> label; keys are any hashables (Any: a Mapping is invariant in its key type, so a dict keyed
# by tuples would not be a Mapping[Hashable, ...])
Units = Mapping[Any, Mapping[Any, object]]


# ----------------------------------------------------------------------------- reading the input


def _is_missing(value) -> bool:
    """None and NaN mean "not labeled", so tables read from pandas can be passed in as they are."""
    return value is None or (isinstance(value, float) and math.isnan(value))


class CleanUnits(dict):
    """Units already checked and stripped of missing values (:func:`clean_units`): every function here accepts
    them and skips the check, so a page computing several measures over 10k votes checks each unit once."""


def clean_units(units: Units) -> CleanUnits:
    """``units`` checked (a ValidationError with a hint when malformed) and without missing values."""
    return _labels_by_item(units)


def _labels_by_item(units: Units) -> CleanUnits:
    """Check the shape once and drop missing values, so every function below sees clean data."""
    if isinstance(units, CleanUnits):
        return units
    if not isinstance(units, Mapping):
        raise ValidationError(
            "units must be a mapping of item id -> {labeler id -> value}",
            hint="pass e.g. {'item-1': {'alice': 3, 'bob': 4}}",
        )
    clean = CleanUnits()
    for item, labels in units.items():
        if not isinstance(labels, Mapping):
            raise ValidationError(
                f"labels for item {item!r} must be a mapping of labeler id -> value",
                hint="pass e.g. {'alice': 3, 'bob': 4} for each item",
            )
        clean[item] = {labeler: v for labeler, v in labels.items() if not _is_missing(v)}
    return clean


def _pairable_units(units: Units) -> list[list]:
    """Values of the items that have at least two labels: only those can be compared with anything."""
    return [list(labels.values()) for labels in _labels_by_item(units).values() if len(labels) >= 2]


# ----------------------------------------------------------------------------- Krippendorff's alpha


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValidationError(f"unknown measurement level {level!r}", hint=f"use one of: {', '.join(LEVELS)}")


def _value_domain(pairable: list[list], level: str, values: Sequence | None) -> list:
    """The distinct values, in order. Order only matters for ordinal data, where it IS the scale.

    ``values`` fixes the domain (e.g. 1..5, or ["bad", "ok", "good"]); without it the observed
    values are sorted, which is wrong for labels whose order is not alphabetical, hence the hint.
    """
    observed = list(dict.fromkeys(v for unit in pairable for v in unit))
    if values is not None:
        domain = list(values)
        if len(set(domain)) != len(domain):
            raise ValidationError("values contains duplicates", hint="list each possible value once")
        allowed = set(domain)
        unknown = [v for v in observed if v not in allowed]
        if unknown:
            raise ValidationError(
                f"labels {unknown[:5]!r} are not among the allowed values {domain!r}",
                hint="fix the labels or add them to values",
            )
    elif level == "nominal":
        domain = observed
    else:
        try:
            domain = sorted(observed)
        except TypeError:
            raise ValidationError(
                f"{level} labels cannot be ordered: {observed[:5]!r}",
                hint="pass values=[...] in scale order, or use level='nominal'",
            ) from None
    if level in ("interval", "ratio"):
        _check_numeric(domain, level)
    return domain


def _check_numeric(domain: list, level: str) -> None:
    """Interval and ratio distances are arithmetic on the labels themselves, so they must be numbers."""
    for v in domain:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValidationError(
                f"{level} data must be numeric, got {v!r}",
                hint="use level='nominal' or 'ordinal' for categorical labels",
            )
        if level == "ratio" and v < 0:
            raise ValidationError(
                f"ratio data cannot be negative, got {v!r}", hint="use level='interval' for scales without a true zero"
            )


def _coincidence_matrix(pairable: list[list], domain: list) -> np.ndarray:
    """o[c, k]: how often c and k were paired within a unit, each unit weighted 1 / (m_u - 1).

    Every value in a unit with m_u values is paired with the m_u - 1 others; the weight makes each
    value contribute exactly 1 in total, so the row sums n_c count the pairable values.
    """
    index = {v: i for i, v in enumerate(domain)}
    o = np.zeros((len(domain), len(domain)))
    for unit in pairable:
        weight = 1.0 / (len(unit) - 1)
        for a, b in combinations(unit, 2):
            o[index[a], index[b]] += weight
            o[index[b], index[a]] += weight
    return o


def _squared_distances(domain: list, n_c: np.ndarray, level: str) -> np.ndarray:
    """The metric delta^2[c, k] of the chosen level, as a matrix over the domain."""
    if level == "nominal":
        return 1.0 - np.eye(len(domain))
    if level == "ordinal":
        return _ordinal_distances(n_c)
    v = np.asarray(domain, dtype=float)
    diff, total = v[:, None] - v[None, :], v[:, None] + v[None, :]
    if level == "interval":
        return diff**2
    # ratio: ((c - k) / (c + k))^2, and 0 for the pair (0, 0) where the formula is 0/0
    ratio = np.divide(diff, total, out=np.zeros_like(diff), where=total != 0)
    return ratio**2


def _ordinal_distances(n_c: np.ndarray) -> np.ndarray:
    """delta^2[c, k] = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, with c <= k in scale order.

    Ordinal distance is measured in how many values lie between c and k, not in label units;
    values of the domain that nobody used have n_g = 0 and so add no distance.
    """
    cum = np.concatenate([[0.0], np.cumsum(n_c)])  # cum[i] = n_0 + ... + n_{i-1}
    i, k = np.indices((len(n_c), len(n_c)))
    lo, hi = np.minimum(i, k), np.maximum(i, k)
    between = cum[hi + 1] - cum[lo]  # sum of n_g for g = lo..hi
    return (between - (n_c[lo] + n_c[hi]) / 2) ** 2


def krippendorff_alpha(units: Units, level: str = "ordinal", values: Sequence | None = None) -> float | None:
    """Chance-corrected agreement: 1 is perfect, 0 is chance level, below 0 is systematic disagreement.

    alpha = 1 - D_o / D_e, where D_o is the mean distance between values paired within an item and
    D_e the mean distance between any two pairable values. Items with fewer than two labels carry no
    information about agreement and are ignored. Returns None when alpha is undefined: no pairable
    values, or no variation at all (D_e = 0), where "agreement" can't be told apart from chance.
    """
    _check_level(level)
    pairable = _pairable_units(units)
    domain = _value_domain(pairable, level, values)
    o = _coincidence_matrix(pairable, domain)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return None
    delta2 = _squared_distances(domain, n_c, level)
    observed = (o * delta2).sum() / n
    expected = (np.outer(n_c, n_c) * delta2).sum() / (n * (n - 1))
    if expected <= 0:
        return None
    return float(1.0 - observed / expected)


# ----------------------------------------------------------------------------- percent agreement


def pairwise_agreement(units: Units) -> float | None:
    """Share of (labeler, labeler) pairs on the same item that gave exactly the same label.

    Pairs are pooled across items, so an item labeled by 4 people weighs 6 pairs. Not corrected for
    chance: read it next to alpha. None when no item has two labels.
    """
    agree = total = 0
    for labels in _labels_by_item(units).values():
        for a, b in combinations(labels.values(), 2):
            total += 1
            agree += a == b
    return agree / total if total else None


def agreement_by_labeler_pair(units: Units) -> list[dict]:
    """One row per pair of labelers: items both labeled, and the share of those they labeled alike.

    Every pair of labelers is listed (ids sorted as text), so a heatmap gets a full, stable grid;
    pairs with no shared item have items=0 and agreement=None (nothing to compare, not disagreement).
    """
    labels_by_item = _labels_by_item(units)
    labelers = sorted({labeler for labels in labels_by_item.values() for labeler in labels}, key=str)
    rows = []
    for a, b in combinations(labelers, 2):
        shared = [labels for labels in labels_by_item.values() if a in labels and b in labels]
        alike = sum(labels[a] == labels[b] for labels in shared)
        rows.append(
            {"labeler_a": a, "labeler_b": b, "items": len(shared), "agreement": alike / len(shared) if shared else None}
        )
    return rows


# ----------------------------------------------------------------------------- two raters: Cohen's kappa


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of two raters (e.g. an AI judge against the humans) over the items both labeled.

    kappa = (p_o - p_e) / (1 - p_e): observed agreement p_o corrected by the agreement p_e two raters with
    these label frequencies would reach by chance. None without items, or when both raters always gave one
    and the same label (p_e = 1: chance explains everything, nothing is measured).
    """
    pairs = [(a, b) for a, b in pairs if not (_is_missing(a) or _is_missing(b))]
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


KAPPA_Z = 1.96  # a 95% interval


def kappa_interval(pairs: Sequence[tuple[Hashable, Hashable]], z: float = KAPPA_Z) -> tuple[float, float] | None:
    """An approximate 95% interval of Cohen's kappa: kappa +- z * sqrt(p_o (1 - p_o) / (n (1 - p_e)^2)), the
    large-sample standard error of Cohen (1960). None where kappa is undefined."""
    kappa = cohen_kappa(pairs)
    pairs = [(a, b) for a, b in pairs if not (_is_missing(a) or _is_missing(b))]
    if kappa is None:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    se = math.sqrt(observed * (1 - observed) / (n * (1 - expected) ** 2))
    return kappa - z * se, kappa + z * se


def confusion_matrix(pairs: Sequence[tuple[Hashable, Hashable]], labels: Sequence[Hashable]) -> list[list[int]]:
    """Counts of (row label, column label) over the pairs, rows = first rater, columns = second, in ``labels``
    order (labels outside it are not counted)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for a, b in pairs:
        if a in index and b in index:
            matrix[index[a]][index[b]] += 1
    return matrix


# ----------------------------------------------------------------------------- per-aspect summary


def agreement_summary(
    units_by_aspect: Mapping[str, Units],
    level_by_aspect: Mapping[str, str] | None = None,
    values_by_aspect: Mapping[str, Sequence] | None = None,
) -> list[dict]:
    """One row per rated aspect (e.g. "helpfulness", "preference") for a console table.

    Aspects missing from ``level_by_aspect`` are treated as nominal: it assumes nothing about the
    labels, so it is never wrong, only less sensitive than ordinal for scales.
    """
    level_by_aspect = level_by_aspect or {}
    values_by_aspect = values_by_aspect or {}
    rows = []
    for aspect, units in units_by_aspect.items():
        level = level_by_aspect.get(aspect, "nominal")
        units = _labels_by_item(units)  # checked once for the three measures below
        pairable = _pairable_units(units)
        rows.append(
            {
                "aspect": aspect,
                "level": level,
                "items": len(units),
                "multi_labeled_items": len(pairable),
                "pairable_values": sum(len(unit) for unit in pairable),
                "pairwise_agreement": pairwise_agreement(units),
                "alpha": krippendorff_alpha(units, level, values_by_aspect.get(aspect)),
            }
        )
    return rows


# --- how far to trust an AI judge ----------------------------------------------------------------------------------

KAPPA_FLOOR = 0.0  # calibrated: the lower end of the kappa interval above this, i.e. clear of chance agreement

# Every (AI judge's verdict, person's vote) on the same pair: no text. "both bad" counts as a tie (a judge only says
# which answer is better; "neither" is what a tie means for that question).
_JUDGE_PAIRS = """
SELECT j.labeler_id, j.candidate_a, j.candidate_b, j.outcome AS judge, h.outcome AS human
FROM preferences j
JOIN preferences h ON h.candidate_a = j.candidate_a AND h.candidate_b = j.candidate_b
                  AND h.retracted_at IS NULL AND h.redacted_at IS NULL AND h.source <> 'judge'
LEFT JOIN users hu ON hu.id = h.labeler_id
WHERE j.judge_run_id IS NOT NULL AND j.retracted_at IS NULL AND j.redacted_at IS NULL
  AND coalesce(hu.kind, 'human') = 'human'
"""


def calibration_verdict(shared: int, interval: tuple[float, float] | None, min_shared: int) -> tuple[bool, str]:
    """(calibrated, why) for a judge: at least ``min_shared`` items shared with people AND a kappa interval clear
    of chance (its lower end above KAPPA_FLOOR). ``min_shared`` 0 trusts every judge."""
    if min_shared <= 0:
        return True, "calibration not required (min_judge_calibration 0)"
    if shared < min_shared:
        return False, f"{shared} of {min_shared} shared items"
    if interval is None:
        return False, "kappa undefined: the judge or the people gave one label only"
    if interval[0] <= KAPPA_FLOOR:
        return False, (
            f"agreement with people not clear of chance: kappa 95% interval {interval[0]:.2f} to "
            f"{interval[1]:.2f} includes {KAPPA_FLOOR:g}"
        )
    return True, f"kappa 95% interval {interval[0]:.2f} to {interval[1]:.2f}, clear of chance"


def calibrated_judges(db: Database, min_shared: int) -> list[int]:
    """The AI judges (users.id) whose labels may count: see :func:`calibration_verdict`."""
    per_judge: dict[int, list[tuple[str, str]]] = {}
    units: dict[int, set[tuple[int, int]]] = {}
    for row in db.query(_JUDGE_PAIRS):
        tie = {"both_bad": "tie"}
        per_judge.setdefault(row["labeler_id"], []).append(
            (tie.get(row["judge"], row["judge"]), tie.get(row["human"], row["human"]))
        )
        units.setdefault(row["labeler_id"], set()).add((row["candidate_a"], row["candidate_b"]))
    judges = [r["id"] for r in db.query("SELECT id FROM users WHERE kind = 'ai'")]
    return [
        j
        for j in judges
        if calibration_verdict(len(units.get(j, ())), kappa_interval(per_judge.get(j, [])), min_shared)[0]
    ]
