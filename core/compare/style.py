"""Style control, as Chatbot Arena does it: is a version preferred, or only its longer, more formatted answers?

Each comparison of answer A with answer B gets style covariates, the normalised differences
``(s_a - s_b) / (s_a + s_b)`` (0 when both are 0) of answer length (words), Markdown headers, list items and bold
spans, each standardised over the comparisons. A Bradley-Terry model is fitted with them as extra terms:

    P(A preferred) = sigmoid(theta_model(A) - theta_model(B) + beta . style_diff)

so the version strengths ``theta`` are what is left once style is accounted for. Ties count half a win each way.
Fitted by Newton's method on the concave log-likelihood with a small ridge (finite when one side always wins).
Beside the raw ratings, a lead that vanishes under style control says "v2 wins only by being longer".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.compare.signature import SIGNIFICANCE, two_sided, words

STYLE_FEATURES = ("length", "headers", "list_items", "bold")
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_LIST = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
RIDGE = 1e-3
STYLE_WORDS = {
    "length": "longer",
    "headers": "using more headers",
    "list_items": "using more lists",
    "bold": "using more bold text",
}
ELO_PER_NAT = 400 / math.log(10)


def style_counts(text: str) -> np.ndarray:
    text = text or ""
    return np.array(
        [len(words(text)), len(_HEADER.findall(text)), len(_LIST.findall(text)), len(_BOLD.findall(text))],
        dtype=np.float64,
    )


def style_diff(answer_a: str, answer_b: str) -> np.ndarray:
    """Chatbot Arena's normalised style difference of A over B, per feature, in [-1, 1]."""
    a, b = style_counts(answer_a), style_counts(answer_b)
    total = a + b
    return np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)


@dataclass(frozen=True)
class Comparison:
    """One judged comparison: ``outcome`` 1.0 (A preferred), 0.0 (B preferred) or 0.5 (tie)."""

    model_a: str
    model_b: str
    answer_a: str
    answer_b: str
    outcome: float


def _fit(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = RIDGE, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted logistic regression without intercept by Newton's method: (coefficients, their covariance)."""
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (w * (y - p)) - ridge * beta
        info = (x * (w * p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
        step = np.linalg.solve(info, grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    p = 1.0 / (1.0 + np.exp(-(x @ beta)))
    info = (x * (w * p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
    return beta, np.linalg.inv(info)


def _design(
    comparisons: Sequence[Comparison], models: list[str], anchor: str, with_style: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (a tie is two half-weighted rows), model columns without the anchor, then standardised style."""
    free = [m for m in models if m != anchor]
    index = {m: k for k, m in enumerate(free)}
    rows, ys, ws = [], [], []
    styles = np.array([style_diff(c.answer_a, c.answer_b) for c in comparisons]) if comparisons else np.zeros((0, 4))
    scale = styles.std(axis=0) if len(styles) else np.ones(4)
    scale[scale == 0] = 1.0
    styles = (styles - styles.mean(axis=0)) / scale if len(styles) else styles
    for c, style in zip(comparisons, styles):
        row = np.zeros(len(free) + (len(STYLE_FEATURES) if with_style else 0))
        if c.model_a in index:
            row[index[c.model_a]] += 1.0
        if c.model_b in index:
            row[index[c.model_b]] -= 1.0
        if with_style:
            row[len(free) :] = style
        for y, weight in ((1.0, c.outcome), (0.0, 1.0 - c.outcome)):
            if weight > 0:
                rows.append(row)
                ys.append(y)
                ws.append(weight)
    return np.array(rows), np.array(ys), np.array(ws), np.array(free)


@dataclass
class StyleFit:
    """Ratings with and without style control, on the Elo scale with the anchor at 1000."""

    models: list[str]
    anchor: str
    raw: dict[str, float]
    controlled: dict[str, float]
    coefficients: dict[str, float]  # per style feature: log-odds per standard deviation of the difference
    warnings: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "anchor": self.anchor,
            "raw": self.raw,
            "controlled": self.controlled,
            "coefficients": self.coefficients,
            "warnings": self.warnings,
        }


INIT = 1000.0
LEAD = 20.0  # rating points: a lead this size that style control halves (or more) is "only style"


def style_controlled(comparisons: Sequence[Comparison], anchor: str) -> StyleFit | None:
    """Raw and style-controlled Bradley-Terry ratings of the compared models (None without comparisons)."""
    if not comparisons:
        return None
    models = sorted({m for c in comparisons for m in (c.model_a, c.model_b)})
    if anchor not in models:
        anchor = models[0]

    def ratings(with_style: bool) -> tuple[dict[str, float], np.ndarray]:
        x, y, w, free = _design(comparisons, models, anchor, with_style)
        beta, _ = _fit(x, y, w)
        theta = dict(zip(free.tolist(), beta[: len(free)]))
        return ({m: round(float(INIT + ELO_PER_NAT * theta.get(m, 0.0)), 1) for m in models}, beta[len(free) :])

    raw, _ = ratings(False)
    controlled, style = ratings(True)
    coefficients = {f: round(float(c), 3) for f, c in zip(STYLE_FEATURES, style)}
    warnings = []
    for m in models:
        lead, kept = raw[m] - raw[anchor], controlled[m] - controlled[anchor]
        if m != anchor and lead >= LEAD and kept <= lead / 2:
            top = max(coefficients, key=lambda f: coefficients[f])
            warnings.append(
                f"{m} leads {anchor} by {lead:.0f} points, {kept:.0f} under style control: {m} wins "
                f"mostly by {STYLE_WORDS[top]}"
            )
    return StyleFit(models, anchor, raw, controlled, coefficients, warnings)


def version_vs_style(comparisons: Sequence[Comparison], version: str) -> dict[str, object] | None:
    """For one version against one other (the report): its preference share as seen, and the same at equal style.

    Returns {"raw_share", "controlled_share", "controlled_p", "style_only"} where ``style_only`` is True when the
    raw share says the version wins (two-sided p < 0.05 over wins and losses) but at equal style it does not
    (its preference share at zero style difference is not above one half at p < 0.05)."""
    if len(comparisons) < 4:
        return None
    flipped = [
        c if c.model_a == version else Comparison(c.model_b, c.model_a, c.answer_b, c.answer_a, 1.0 - c.outcome)
        for c in comparisons
    ]
    wins = sum(c.outcome == 1.0 for c in flipped)
    losses = sum(c.outcome == 0.0 for c in flipped)
    raw_p = two_sided(wins, losses)
    styles = np.array([style_diff(c.answer_a, c.answer_b) for c in flipped])
    scale = styles.std(axis=0)
    scale[scale == 0] = 1.0
    x = np.column_stack([np.ones(len(flipped)), styles / scale])  # no centring: the intercept is "equal style"
    y = np.array([c.outcome for c in flipped])
    rows_x, rows_y, rows_w = [], [], []
    for row, outcome in zip(x, y):
        for target, weight in ((1.0, outcome), (0.0, 1.0 - outcome)):
            if weight > 0:
                rows_x.append(row)
                rows_y.append(target)
                rows_w.append(weight)
    beta, cov = _fit(np.array(rows_x), np.array(rows_y), np.array(rows_w))
    z = beta[0] / math.sqrt(max(cov[0, 0], 1e-12))
    controlled_p = 0.5 * math.erfc(z / math.sqrt(2))  # one-sided: is the version preferred at equal style?
    raw_share = (wins + 0.5 * (len(flipped) - wins - losses)) / len(flipped)
    top = max(range(len(STYLE_FEATURES)), key=lambda k: beta[1 + k])
    return {
        "comparisons": len(flipped),
        "raw_share": raw_share,
        "controlled_share": 1 / (1 + math.exp(-float(beta[0]))),
        "controlled_p": controlled_p,
        "style_only": bool(wins > losses and raw_p < SIGNIFICANCE and controlled_p >= SIGNIFICANCE),
        "mostly": STYLE_WORDS[STYLE_FEATURES[top]],
    }
