"""The verdict of a "what changed" report: every piece of evidence, Holm-corrected as one family, in plain words.

The rule (VERDICT_RULE, printed on every report): the version's movement along each significant preference of its
training labels (core.compare.signature), the held-out labeled pairs, and people's blind check are tested together
(two-sided sign tests, Holm's correction). learned: at least one says the version moved toward the labels, none
against; regressed: the reverse; mixed: both; changed: the version moved (KL, or a feature moved) but not along the
labels, which is what a coin-flip control gets; no measurable change and cannot tell otherwise. Pure functions of the
report's figures, so a report can be re-judged when people's blind votes arrive after it was computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.compare.signature import SIGNIFICANCE, describe_movement, describe_preference, holm, two_sided
from core.data.split import HELD_OUT_PERCENT

MIN_PAIRS_TO_TELL = 6  # below this even a perfect move is not significant (1/2^6 = 0.016 > 0.05 at 5)
LENGTH_RATIO_WARN = 1.5
REFUSAL_RISE_WARN = 0.15
DIVERSITY_DROP_WARN = 0.25  # relative drop of distinct-2
KL_WARN = 0.5  # nats per token
CUT_SHARE_WARN = 0.5  # share of a version's answers that stopped at the length limit
MOVED_KL = 0.05  # nats per token: a version this far from the other one has clearly changed
LEAN_PAIRS_CAP = 60  # held-out pairs (~300 labels): past this, "label N more" extrapolates a lean that is noise
VERDICTS = ("learned", "changed", "no_change", "regressed", "mixed", "unmeasured")


def figure(value: float | None, digits: int = 2) -> str:
    """A figure for a sentence: "0.62", or "n/a" when it was not measured."""
    return "n/a" if value is None else f"{value:.{digits}f}"


VERDICT_RULE = (
    "Learned when, after Holm's correction over every piece of evidence tested together (the version's movement "
    "along each significant preference of its training labels, paired per held-out prompt; the held-out labeled "
    "pairs; the blind check by people), at least one says the version moved toward the labels at p < "
    f"{SIGNIFICANCE} and none says against. Regressed: the reverse. Mixed: both. Changed: the version moved (KL >= "
    f"{MOVED_KL} nats per token, or an answer feature moved significantly) but not along the labels. Two-sided "
    "sign tests throughout, ties left out. A reward model's win rate is shown apart and does not decide: trained "
    "on the same labels, it is not independent evidence."
)


@dataclass
class Evidence:
    """One test that can tell whether a version moved toward the labels (``toward``) or against them."""

    source: str  # "movement:<feature>" | "held_out_pairs" | "blind_check"
    toward: int
    against: int
    text: str  # what it measured, in plain words
    adjusted_p: float = 1.0

    @property
    def p_value(self) -> float:
        return two_sided(self.toward, self.against)

    @property
    def says(self) -> str:
        """ "toward" | "against" | "" (not significant after the correction)."""
        if self.adjusted_p >= SIGNIFICANCE or self.toward == self.against:
            return ""
        return "toward" if self.toward > self.against else "against"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "toward": self.toward,
            "against": self.against,
            "text": self.text,
            "p_value": self.p_value,
            "adjusted_p": self.adjusted_p,
            "says": self.says,
        }


def evidence(m: dict[str, Any]) -> list[Evidence]:
    """Every test the verdict rests on, Holm-adjusted as one family."""
    found: list[Evidence] = []
    version, against = m.get("version", "the version"), m.get("against", "its parent")
    moved = {t["feature"]: t for t in m.get("movement") or []}
    for pref in (m.get("label_signature") or {}).get("tests", []):
        test = moved.get(pref["feature"])
        if not pref.get("direction") or test is None:
            continue
        toward, away = (test["more"], test["less"]) if pref["direction"] > 0 else (test["less"], test["more"])
        if toward + away:
            found.append(
                Evidence(
                    f"movement:{pref['feature']}",
                    toward,
                    away,
                    f"{describe_movement(test, version, against)} (your labels prefer {describe_preference(pref)})",
                )
            )
    n = m.get("held_out_pairs", 0)
    if n:
        found.append(
            Evidence(
                "held_out_pairs",
                m.get("toward", 0),
                m.get("away", 0),
                f"on {n} held-out labeled pairs {version} raised the chosen answer's log-probability "
                f"against the rejected one's on {m.get('toward', 0)}, lowered it on {m.get('away', 0)}"
                f" (log-prob ranking accuracy {figure(m.get('accuracy_against'))} -> "
                f"{figure(m.get('accuracy_version'))})",
            )
        )
    blind = m.get("blind_check") or {}
    wins, losses = blind.get("wins", 0), blind.get("losses", 0)
    if wins + losses:
        needed = pairs_needed(wins, wins + losses) if two_sided(wins, losses) >= SIGNIFICANCE else None
        found.append(
            Evidence(
                "blind_check",
                wins,
                losses,
                f"people preferred {version} blind on {wins} of {blind['votes']} votes, {against} "
                f"on {losses} ({blind.get('ties', 0)} ties)"
                + (
                    f"; about {needed - wins - losses} more decisive votes would decide it if the lean holds"
                    if needed
                    else ""
                ),
            )
        )
    for adjusted, item in zip(holm([e.p_value for e in found]), found):
        item.adjusted_p = adjusted
    return found


def _p(e: Evidence) -> str:
    return f"p = {e.adjusted_p:.2g} after correction"


def drift_warnings(m: dict[str, Any]) -> list[str]:
    """Plain-language warnings for figures that moved suspiciously (not when the labels asked for the move)."""
    warnings = []
    preferred = {t["feature"]: t.get("direction", 0) for t in (m.get("label_signature") or {}).get("tests", [])}
    lv, la = m.get("length_version"), m.get("length_against")
    if lv and la:
        ratio = lv / la
        if ratio >= LENGTH_RATIO_WARN and preferred.get("length", 0) <= 0:
            warnings.append(
                f"answers got {ratio:.1f}x longer ({la:.0f} -> {lv:.0f} tokens): possible length "
                "hacking; check that the labels really prefer longer answers"
            )
        elif ratio <= 1 / LENGTH_RATIO_WARN and preferred.get("length", 0) >= 0:
            warnings.append(
                f"answers got {1 / ratio:.1f}x shorter ({la:.0f} -> {lv:.0f} tokens): check that "
                "answers are still complete"
            )
    rv, ra = m.get("refusal_version"), m.get("refusal_against")
    if rv is not None and ra is not None and rv - ra >= REFUSAL_RISE_WARN:
        warnings.append(f"refuses more often ({ra:.0%} -> {rv:.0%} of answers): possible over-refusal")
    dv, da = m.get("distinct2_version"), m.get("distinct2_against")
    if dv is not None and da and (da - dv) / da >= DIVERSITY_DROP_WARN:
        warnings.append(f"answers got more repetitive (distinct-2 {da:.2f} -> {dv:.2f}): possible mode collapse")
    kl = m.get("kl_per_token")
    if kl is not None and kl >= KL_WARN:
        warnings.append(
            f"moved far from {m.get('against', 'the other version')} (KL {kl:.2f} nats per token): "
            "raise beta to stay closer, or check the answers below"
        )
    cut = [(name, m.get(key)) for name, key in ((m.get("version"), "cut_version"), (m.get("against"), "cut_against"))]
    if any(share is not None and share >= CUT_SHARE_WARN for _, share in cut):
        shares = " and ".join(f"{share:.0%} of {name}'s" for name, share in cut if share is not None)
        warnings.append(
            f"{shares} answers stopped at the {m.get('max_new_tokens')}-token limit: lengths (and the length the "
            "labels may have taught) are measured on cut answers; a report with a higher max_new_tokens shows "
            "how long they really run"
        )
    judges = {"reward_model": f"the reward model {m.get('reward_model')}", "blind_check": "people in blind votes"}
    for source, check in (m.get("style_control") or {}).items():
        if check and check.get("style_only"):
            warnings.append(
                f"{m.get('version', 'the version')} wins only by {check['mostly']}: preferred by "
                f"{judges.get(source, source)} on {check['raw_share']:.0%} of {check['comparisons']}, "
                f"but at equal length and formatting {check['controlled_share']:.0%} (style control)"
            )
    return warnings


def verdict(m: dict[str, Any], config: dict[str, Any] | None = None) -> tuple[str, str]:
    """(kind, one line in plain words) from the report's figures; ``config`` = the version's hyperparameters.

    The rule is VERDICT_RULE. Held-out pairs alone rarely decide at 40 labels (~8 pairs), so the version's answers
    are tested along what the labels themselves prefer; a coin-flip labeler's labels prefer nothing, so a version
    trained on them can only be "changed", never "learned".
    """
    found = evidence(m)
    toward = [e for e in found if e.says == "toward"]
    away = [e for e in found if e.says == "against"]
    if toward and away:
        return "mixed", (
            "mixed: toward the labels, "
            + "; ".join(f"{e.text}, {_p(e)}" for e in toward)
            + "; but against them, "
            + "; ".join(f"{e.text}, {_p(e)}" for e in away)
            + " — check for conflicting labels (agreement on the Data page)"
        )
    if toward:
        return "learned", "learned: " + "; ".join(f"{e.text}, {_p(e)}" for e in toward)
    if away:
        return "regressed", (
            "moved against the labels: "
            + "; ".join(f"{e.text}, {_p(e)}" for e in away)
            + " — check for flipped or conflicting labels (agreement on the Data page) before "
            "training on them"
        )
    kl = m.get("kl_per_token")
    moved = [t for t in m.get("movement") or [] if t.get("direction")]
    changed = bool(moved) or (kl is not None and kl >= MOVED_KL)
    lean = _lean(m)
    if changed:
        what = [f"KL {kl:.2f} nats per token"] if kl is not None else []
        what += [
            describe_movement(t, m.get("version", "the version"), m.get("against", "its parent")) for t in moved[:3]
        ]
        along = [e for e in found if e.source.startswith("movement:")]
        if along:  # the labels do prefer something: say so, and that the version did not measurably follow
            tail = "not measurably along what your labels prefer: " + "; ".join(f"{e.text}, {_p(e)}" for e in along)
        elif found:
            tail = (
                "the labels show no measurable preference in the answer features and the held-out pairs do not decide"
            )
        else:
            tail = (
                "no labeled pair was held out and the labels show no measurable "
                "preference in the answer features, so there is nothing to measure the direction against"
            )
        return "changed", f"changed, but not toward your labels: {'; '.join(what)} — {tail}{lean}"
    if not found:
        return "unmeasured", (
            "cannot tell: no labeled pair was held out of training and the labels show no "
            "measurable preference in the answer features — label more prompts (about "
            f"{HELD_OUT_PERCENT}% of prompts are kept aside for this measurement)"
        )
    return "no_change", f"no measurable change: {'; '.join(e.text for e in found[:2])} — {_suggestion(m, config or {})}"


def _lean(m: dict[str, Any]) -> str:
    """ "; held-out pairs lean toward the labels (12 of 19, p = 0.36): about 40 would settle it" or ""."""
    toward, away, n = m.get("toward", 0), m.get("away", 0), m.get("held_out_pairs", 0)
    needed = pairs_needed(toward, toward + away) if toward > away else None
    if not needed:
        return ""
    if needed > LEAN_PAIRS_CAP:  # 4 of 7 "needs" 184 pairs: a figure that large only says the lean is weak
        return f"; the held-out pairs barely lean toward the labels ({toward} of {toward + away})"
    return (
        f"; the held-out pairs lean toward the labels ({toward} of {toward + away}, p = "
        f"{two_sided(toward, away):.2f}): if the lean holds, about {needed} held-out pairs would settle it "
        f"(label about {_labels_for(needed - n)} more)"
    )


def pairs_needed(toward: int, moved: int, limit: int = 10_000) -> int | None:
    """Held-out pairs for the sign test to reach p < SIGNIFICANCE if the observed share toward the labels held."""
    if moved <= 0 or toward * 2 <= moved:
        return None
    share = toward / moved
    for n in range(moved, limit):
        k = math.ceil(share * n)
        if two_sided(k, n - k) < SIGNIFICANCE:
            return n
    return None


def _labels_for(held_out_pairs: int) -> int:
    """Labels to add for ``held_out_pairs`` more held-out pairs (the split takes HELD_OUT_PERCENT of prompts)."""
    return max(1, math.ceil(held_out_pairs * 100 / HELD_OUT_PERCENT))


def _suggestion(m: dict[str, Any], config: dict[str, Any]) -> str:
    n = m.get("held_out_pairs", 0)
    if n < MIN_PAIRS_TO_TELL:
        return (
            f"only {n} held-out pair(s), too few to tell: label more pairs (about {5 * MIN_PAIRS_TO_TELL} in "
            "all) and train again"
        )
    kl = m.get("kl_per_token")
    lr, epochs = config.get("learning_rate"), config.get("num_train_epochs")
    if kl is not None and kl < 0.01 and lr:
        return (
            f"the version barely moved (KL {kl:.3f} nats per token): raise learning_rate from {lr:.0e} to "
            f"{3 * lr:.0e}" + (f" or num_train_epochs from {epochs:g} to {2 * epochs:g}" if epochs else "")
        )
    return (
        "it moved, but not consistently toward the chosen answers: check that labelers agree (Data page), "
        "label more pairs, or raise num_train_epochs"
    )
