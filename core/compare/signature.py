"""What the labels prefer, in measurable terms, and whether a version moved that way.

A preference label says "this answer, not that one"; a person rarely says why. The *label signature* reads the why
off the answers: for each answer feature below, over the labeled pairs, how often the chosen answer has more of it
than the rejected one. A consistent labeler leaves a clear mark ("your labels prefer shorter answers: 38 of 40
pairs"); coin-flip labels leave none.

The *movement* test asks the same question of a new version: on held-out prompts, each version (and its parent)
answers once with the same seed; per prompt and feature, did the version's answer have more of it than the
parent's? A version that learned "shorter" answers shorter on most prompts.

Both are two-sided sign tests (ties dropped), corrected for the number of features tested with Holm's step-down
method, so testing many features does not manufacture findings: with no real preference the chance that any
feature comes out significant stays below ``SIGNIFICANCE``. Measured on the default model (issue 25): a labeler
who always picked the shorter answer leaves length significant at 40 labels (p < 1e-9); a version trained on 44
such labels answered shorter than its parent on 0.95 of held-out prompts.

Features are plain text measures (no model), so the Data page can show the signature of any set of labels at once.
Every feature is defined in the README ("What the labels prefer").
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.compare.safety import is_refusal

if TYPE_CHECKING:
    from storage.db import Database

SIGNIFICANCE = 0.05


# --- answer features --------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE)
_LIST_NUMBER = re.compile(r"^[ \t]*\d{1,3}[.)][ \t]", re.MULTILINE)
_HEADING = re.compile(r"^[ \t]{0,3}(?:#{1,6}\s+\S|\*\*[^*\n]{1,80}\*\*:?\s*$)", re.MULTILINE)
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_QUESTION = re.compile(r"[^.!?\n]*\?(?=\s|$)")
_EMOJI = re.compile("[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f000-\U0001f2ff]")
_SECOND_PERSON = re.compile(r"\b(you|your|yours|yourself|yourselves)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_VOWELS = re.compile(r"[aeiouy]+")
_HEDGE = re.compile(
    r"\b(might|may|maybe|perhaps|possibly|probably|likely|could|generally|typically|usually|"
    r"it depends|not sure|i think|i believe)\b",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    return list(_words(text or ""))


@functools.lru_cache(maxsize=16)
def _words(text: str) -> tuple[str, ...]:
    """The words of one answer, found once for the several features that count them."""
    return tuple(_WORD.findall(text))


@functools.lru_cache(maxsize=65536)
def _syllables(word: str) -> int:
    groups = _VOWELS.findall(word.lower())
    count = len(groups) - (1 if word.lower().endswith("e") and len(groups) > 1 else 0)
    return max(1, count)


def reading_grade(text: str) -> float | None:
    """Flesch-Kincaid grade level (US school years); None under 10 words, where it means nothing."""
    found = [w for w in _words(text or "") if w.isalpha()]
    if len(found) < 10:
        return None
    sentences = max(1, len(_SENTENCE_END.findall(text)))
    syllables = sum(_syllables(w) for w in found)
    return 0.39 * len(found) / sentences + 11.8 * syllables / len(found) - 15.59


def _paragraphs(text: str) -> int:
    return len([block for block in re.split(r"\n\s*\n", text or "") if block.strip()])


def _non_ascii_letters(text: str) -> float | None:
    if (text or "").isascii():  # the usual case, without a pass over every character
        return 0.0 if any(c.isalpha() for c in text) else None
    letters = [c for c in text or "" if c.isalpha()]
    return sum(1 for c in letters if not c.isascii()) / len(letters) if letters else None


def _per_100_words(pattern: re.Pattern) -> Callable[[str], float | None]:
    def measure(text: str) -> float | None:
        n = len(_words(text or ""))
        return 100 * len(pattern.findall(text or "")) / n if n else None

    return measure


@dataclass(frozen=True)
class Feature:
    """One measurable property of an answer; ``more``/``less`` read "your labels prefer <more> answers"."""

    name: str
    measure: Callable[[str], float | None]  # None: not defined for this answer (the pair is left out)
    more: str
    less: str
    definition: str


FEATURES: tuple[Feature, ...] = (
    Feature("length", lambda t: float(len(_words(t or ""))), "longer", "shorter", "words in the answer"),
    Feature(
        "paragraphs",
        lambda t: float(_paragraphs(t)),
        "more paragraphs in",
        "fewer paragraphs in",
        "blocks of text separated by a blank line",
    ),
    Feature(
        "list_items",
        lambda t: float(len(_LIST_ITEM.findall(t or ""))),
        "more list items in",
        "fewer list items in",
        "lines that start with a bullet (-, *, •, +) or a number (1. or 1))",
    ),
    Feature(
        "headings",
        lambda t: float(len(_HEADING.findall(t or ""))),
        "more headings in",
        "fewer headings in",
        "Markdown heading lines (#) and lines that are only bold text",
    ),
    Feature(
        "code",
        lambda t: float(len(_FENCE.findall(t or "")) // 2 + len(_INLINE_CODE.findall(t or ""))),
        "more code in",
        "less code in",
        "fenced code blocks plus inline `code` spans",
    ),
    Feature(
        "refusal",
        lambda t: float(is_refusal(t)),
        "refusing",
        "non-refusing",
        "1 when the answer declines (the refusal phrases of the safety evaluation), else 0",
    ),
    Feature(
        "questions",
        lambda t: float(len(_QUESTION.findall(t or ""))),
        "more questions back in",
        "fewer questions back in",
        "sentences that end with a question mark",
    ),
    Feature(
        "emoji",
        lambda t: float(len(_EMOJI.findall(t or ""))),
        "more emoji in",
        "fewer emoji in",
        "emoji and pictographic symbols",
    ),
    Feature(
        "reading_grade",
        reading_grade,
        "harder-to-read",
        "easier-to-read",
        "Flesch-Kincaid grade level (needs 10 words or more)",
    ),
    Feature(
        "non_english",
        _non_ascii_letters,
        "more non-ASCII-script",
        "more ASCII-script",
        "share of letters outside the ASCII alphabet (answers in another script or language)",
    ),
    Feature(
        "second_person",
        _per_100_words(_SECOND_PERSON),
        "more reader-addressing",
        "less reader-addressing",
        "you / your / yourself per 100 words",
    ),
    Feature(
        "numbers",
        lambda t: float(len(_NUMBER.findall(_LIST_NUMBER.sub("", t or "")))),
        "more numeric",
        "less numeric",
        "numbers written with digits (list numbers 1. 2. left out)",
    ),
    Feature(
        "hedging",
        _per_100_words(_HEDGE),
        "more hedged",
        "more assertive",
        "hedging words (might, maybe, perhaps, probably, usually, I think, ...) per 100 words",
    ),
    Feature(
        "exclamations",
        lambda t: float((t or "").count("!")),
        "more exclamatory",
        "less exclamatory",
        "exclamation marks",
    ),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)


def measure(text: str) -> dict[str, float | None]:
    """Every feature of one answer."""
    return dict(zip(FEATURE_NAMES, _measured(text)))


_MEASURED: dict[bytes, tuple[float | None, ...]] = {}
_MEASURED_MAX = 200_000


def _measured(text: str) -> tuple[float | None, ...]:
    """Every feature of one answer, in FEATURES order, remembered by the text's digest: the Data page's signature
    over 10k votes measures 20k answers (~6 s on 2 busy cores), and after a new vote only the new answers are new.
    Keyed by a digest, so the memo holds no answer text."""
    key = hashlib.blake2b((text or "").encode("utf-8", "surrogatepass"), digest_size=16).digest()
    found = _MEASURED.get(key)
    if found is None:
        if len(_MEASURED) >= _MEASURED_MAX:
            _MEASURED.clear()
        found = _MEASURED[key] = tuple(f.measure(text) for f in FEATURES)
    return found


# --- tests ------------------------------------------------------------------------------------------------


def sign_test(successes: int, trials: int) -> float:
    """One-sided p-value of at least ``successes`` of ``trials`` under a fair coin (1.0 without trials)."""
    if trials <= 0:
        return 1.0
    successes = max(0, successes)
    if successes > trials:
        return 0.0
    # the tail's binomial coefficients one from the other (exact integers): computing each afresh with math.comb
    # took 6 s for a 10k-vote signature, this takes milliseconds
    total, term = 0, math.comb(trials, successes)
    for k in range(successes, trials + 1):
        total += term
        term = term * (trials - k) // (k + 1)
    return total / 2**trials


def two_sided(more: int, less: int) -> float:
    """Two-sided sign test: p of a split at least this lopsided under a fair coin."""
    return min(1.0, 2 * sign_test(max(more, less), more + less))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down): reject where adjusted p < SIGNIFICANCE; family-wise error <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class FeatureTest:
    """One feature's paired comparison: ``more`` pairs where the first answer had more of it, ``less`` fewer."""

    feature: str
    more: int
    less: int
    ties: int
    p_value: float  # two-sided sign test
    adjusted_p: float = 1.0  # Holm over the features tested together

    @property
    def direction(self) -> int:
        """+1: more of it, -1: less, 0: no significant difference."""
        if self.adjusted_p >= SIGNIFICANCE or self.more == self.less:
            return 0
        return 1 if self.more > self.less else -1

    @property
    def significant(self) -> bool:
        return self.direction != 0

    def to_dict(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "more": self.more,
            "less": self.less,
            "ties": self.ties,
            "p_value": self.p_value,
            "adjusted_p": self.adjusted_p,
            "direction": self.direction,
        }


def paired_tests(first: Sequence[str], second: Sequence[str], eps: float = 1e-9) -> list[FeatureTest]:
    """Per feature, sign test of first[i] - second[i] over the pairs, Holm-corrected over the features."""
    first_m = [_measured(t) for t in first]
    second_m = [_measured(t) for t in second]
    tests = []
    for i, feature in enumerate(FEATURES):
        more = less = ties = 0
        for a, b in zip(first_m, second_m):
            x, y = a[i], b[i]
            if x is None or y is None:
                continue
            if x - y > eps:
                more += 1
            elif y - x > eps:
                less += 1
            else:
                ties += 1
        tests.append(FeatureTest(feature.name, more, less, ties, two_sided(more, less)))
    for test, adjusted in zip(tests, holm([t.p_value for t in tests])):
        test.adjusted_p = adjusted
    return tests


def by_name(name: str) -> Feature:
    return next(f for f in FEATURES if f.name == name)


def describe_preference(test: FeatureTest | dict) -> str:
    """ "prefer shorter answers: 38 of 40 pairs" for a significant label-signature test."""
    t: dict[str, Any] = test if isinstance(test, dict) else test.to_dict()
    feature = by_name(str(t["feature"]))
    more, less, ties = int(t["more"]), int(t["less"]), int(t["ties"])
    word = feature.more if more > less else feature.less
    rest = f", {min(more, less)} the other way" + (f", {ties} equal" if ties else "")
    return f"{word} answers: {max(more, less)} of {more + less + ties} pairs" + (
        rest if min(more, less) or ties else ""
    )


def describe_movement(test: FeatureTest | dict, version: str, against: str) -> str:
    """ "v1's answers were shorter than base's on 22 of 24 prompts"."""
    t: dict[str, Any] = test if isinstance(test, dict) else test.to_dict()
    feature = by_name(str(t["feature"]))
    more, less, ties = int(t["more"]), int(t["less"]), int(t["ties"])
    word = feature.more if more > less else feature.less
    return f"{version} gave {word} answers than {against} on {max(more, less)} of {more + less + ties} prompts"


# --- the label signature ----------------------------------------------------------------------------------


@dataclass
class Signature:
    """What a set of labeled pairs prefers: one test per feature, chosen vs rejected."""

    pairs: int
    tests: list[FeatureTest]

    @property
    def preferences(self) -> list[FeatureTest]:
        """The significant ones, strongest first."""
        return sorted((t for t in self.tests if t.significant), key=lambda t: t.adjusted_p)

    def lines(self) -> list[str]:
        return [f"your labels prefer {describe_preference(t)}" for t in self.preferences]

    def to_dict(self) -> dict[str, object]:
        return {"pairs": self.pairs, "tests": [t.to_dict() for t in self.tests], "preferences": self.lines()}


def label_signature(rows: Sequence[dict]) -> Signature:
    """The signature of ``prompt/chosen/rejected`` rows (the training builder's conversational format)."""
    chosen = [_answer_text(r["chosen"]) for r in rows]
    rejected = [_answer_text(r["rejected"]) for r in rows]
    return Signature(len(rows), paired_tests(chosen, rejected))


def _answer_text(answer: object) -> str:
    if isinstance(answer, str):
        return answer
    if isinstance(answer, list) and answer:
        last = answer[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return ""


def signature_of_labels(db: Database, filters: object = None) -> Signature:
    """The signature of the labels the training builder turns into preference pairs (after ``filters``): what a
    DPO job on them would be asked to learn."""
    from core.data.trainsets import preference_texts

    # preference_rows' pairs without their prompts (not used here; reading them was half the time at 10k votes)
    return signature_of_texts(preference_texts(db, filters))  # type: ignore[arg-type]


def signature_of_texts(texts: Sequence[tuple[str, str, object]]) -> Signature:
    """The signature of ``core.data.trainsets.preference_texts``' pairs (chosen, rejected, recent), read already."""
    return label_signature([{"chosen": chosen, "rejected": rejected} for chosen, rejected, _ in texts])
