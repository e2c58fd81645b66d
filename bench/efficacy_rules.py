"""The synthetic labelers of bench/efficacy.py and the prompts they label: each rule scores an answer (higher =
satisfies it better) and votes for the better of two; the studio never sees the rules, only their votes.

The prompt pool is built here (templates x topics, never the repo's seed prompts) and split into prompts to label
and held-out prompts to judge the new versions on.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# --- rules ------------------------------------------------------------------------------------------------

WORD = re.compile(r"[A-Za-z0-9']+")
YOU = re.compile(r"\b(?:you|your|yours|yourself|yourselves|you're|you'll|you've|you'd)\b", re.IGNORECASE)
LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,2}[.)])\s+\S", re.MULTILINE)
LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s", re.MULTILINE)
NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def words(text: str) -> int:
    return len(WORD.findall(text))


def you_rate(text: str) -> float:
    """Words addressing the reader (you, your, yourself, ...) per 100 words."""
    return round(100 * len(YOU.findall(text)) / max(words(text), 1), 6)


def first_paragraph_share(text: str) -> float:
    """Share of the words before the first line break: 1.0 for an answer in one block."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return round(words(lines[0]) / max(words(text), 1), 6) if lines else 1.0


def coin(text: str) -> float:
    """A fixed pseudo-random score per answer text: the coin-flip control's "preference" (no property of the
    answer predicts it, so there is nothing to learn; the same pair always gets the same vote)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # style | content | format | control
    description: str
    score: Callable[[str], float]  # higher = satisfies the rule better
    control: bool = False  # a coin flip: its verdict must never be "learned"

    @property
    def labeler(self) -> str:
        return f"rule-{self.name}"

    def prefers(self, a: str, b: str) -> str | None:
        """'a' or 'b', or None for a tie."""
        sa, sb = self.score(a), self.score(b)
        return None if sa == sb else ("a" if sa > sb else "b")

    def win(self, new: str, old: str) -> float:
        """1 when ``new`` satisfies the rule better than ``old``, 0.5 for a tie, 0 when worse."""
        return {"a": 1.0, "b": 0.0, None: 0.5}[self.prefers(new, old)]


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("concise", "style", "fewer words", lambda t: -words(t)),
        Rule("you", "content", "more you/your per 100 words", you_rate),
        Rule("paragraph", "format", "larger share of the words in the first paragraph", first_paragraph_share),
        Rule("list", "format", "more bulleted or numbered lines", lambda t: len(LIST_ITEM.findall(t))),
        Rule("numbers", "content", "more concrete numbers", lambda t: len(NUMBER.findall(LIST_MARKER.sub("", t)))),
        Rule("coin", "control", "a coin flip per pair (fixed hash of the answer)", coin, control=True),
    )
}


# --- prompts ----------------------------------------------------------------------------------------------

TEMPLATES = [
    "Give me a tip for {}.",
    "How do I get started with {}?",
    "What is a common mistake people make when {}?",
    "Why is {} worth the effort?",
    "What should a beginner know about {}?",
    "How can I get better at {}?",
    "What do I need for {}?",
    "How can I stay motivated when {}?",
    "What is a simple way to practice {}?",
    "Tell me one good habit for {}.",
    "What are the benefits of {}?",
    "How much time should I spend on {} each week?",
]
TOPICS = [
    "learning Spanish",
    "saving money",
    "running a 5k",
    "baking bread",
    "growing tomatoes",
    "writing a resume",
    "cleaning the kitchen",
    "studying for exams",
    "painting a room",
    "playing chess",
    "training a puppy",
    "learning to swim",
    "planning a trip",
    "keeping a journal",
]


def prompt_pool() -> list[str]:
    """168 distinct short user prompts (12 templates x 14 topics) in a fixed shuffled order."""
    pool = [template.format(topic) for template, topic in itertools.product(TEMPLATES, TOPICS)]
    random.Random(13).shuffle(pool)
    return pool


def split_prompts(judge_count: int) -> tuple[list[str], list[str]]:
    """(labeling prompts, judge prompts): the judge prompts are never labeled."""
    pool = prompt_pool()
    return pool[judge_count:], pool[:judge_count]
