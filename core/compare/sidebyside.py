"""Side by side: "what do v7 and v5 answer to these prompts?"

Both versions answer every prompt in ONE batched ``generate`` call (``core.serving.scoring.generate_pair_answers``:
one LoRA adapter per row, both adapters hot-swapped onto the shared base model), with the same settings and a
fixed seed per prompt, so the table is reproducible. Each row carries the reward-model score of both answers (when
an ``rmN`` is picked), their lengths, the time each row took, and a word diff (:func:`diff_html`).
"""

from __future__ import annotations

import csv
import difflib
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.compare.evaluation import (
    CompareSettings,
    Messages,
    Progress,
    check_pair,
    last_user_text,
    report_progress,
    reward_scorer,
)
from core.errors import ValidationError
from core.serving.host import ModelHost
from core.serving.scoring import adapter_names, generate_pair_answers


@dataclass
class SideBySideRow:
    prompt: str
    answer_a: str
    answer_b: str
    score_a: float | None
    score_b: float | None
    tokens_a: int
    tokens_b: int
    chars_a: int
    chars_b: int
    latency_a_ms: float
    latency_b_ms: float
    seed: int


@dataclass
class SideBySide:
    policy_a: str
    policy_b: str
    reward_model: str | None
    settings: CompareSettings
    rows: list[SideBySideRow]

    def table(self) -> list[dict[str, Any]]:
        """Rows for a data frame or CSV, the version names in the column names."""
        a, b = self.policy_a, self.policy_b
        return [
            {
                "prompt": r.prompt,
                f"answer {a}": r.answer_a,
                f"answer {b}": r.answer_b,
                f"score {a}": r.score_a,
                f"score {b}": r.score_b,
                f"tokens {a}": r.tokens_a,
                f"tokens {b}": r.tokens_b,
                f"chars {a}": r.chars_a,
                f"chars {b}": r.chars_b,
                f"latency ms {a}": round(r.latency_a_ms, 1),
                f"latency ms {b}": round(r.latency_b_ms, 1),
                "seed": r.seed,
            }
            for r in self.rows
        ]

    def to_csv(self) -> str:
        table = self.table()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["prompt"])
        writer.writeheader()
        writer.writerows(table)
        return buffer.getvalue()


def side_by_side(
    studio: ModelHost,
    policy_a: str,
    policy_b: str,
    prompts: Sequence[Messages],
    settings: CompareSettings | None = None,
    reward_model: str | None = None,
    progress: Progress | None = None,
) -> SideBySide:
    """Both versions answer every prompt (one batched call per prompt, seed = settings.seed + i)."""
    settings = settings or CompareSettings()
    sampling = settings.sampling()
    check_pair(studio.db, policy_a, policy_b)
    if not prompts:
        raise ValidationError("The prompt set is empty", hint="pick or type at least one prompt")
    scorer = reward_scorer(studio.db, reward_model)
    rows = adapter_names(studio, policy_a, policy_b)
    out: list[SideBySideRow] = []
    for i, prompt in enumerate(prompts):
        report_progress(progress, i / len(prompts), f"prompt {i + 1} of {len(prompts)}: generating")
        answers = generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i, (policy_a, policy_b))
        out.append(
            SideBySideRow(
                last_user_text(prompt),
                answers.text_a,
                answers.text_b,
                None,
                None,
                answers.tokens_a,
                answers.tokens_b,
                len(answers.text_a),
                len(answers.text_b),
                answers.latency_a_ms,
                answers.latency_b_ms,
                settings.seed + i,
            )
        )
    if scorer is not None:
        report_progress(progress, 0.99, f"scoring with {scorer.name}")
        scores = scorer.score([p for p in prompts for _ in (0, 1)], [t for r in out for t in (r.answer_a, r.answer_b)])
        for row, k in zip(out, range(0, len(scores), 2)):
            row.score_a, row.score_b = scores[k], scores[k + 1]
    report_progress(progress, 1.0, "done")
    return SideBySide(policy_a, policy_b, scorer.name if scorer else None, settings, out)


_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


def diff_html(text_a: str, text_b: str) -> tuple[str, str]:
    """Word diff of two answers as two HTML fragments: words only in A struck in red, words only in B in green."""
    words_a, words_b = _WORDS.findall(text_a), _WORDS.findall(text_b)
    out_a: list[str] = []
    out_b: list[str] = []

    def esc(words: Iterable[str]) -> str:
        return html.escape("".join(words)).replace("\n", "<br>")

    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, words_a, words_b, autojunk=False).get_opcodes():
        if op == "equal":
            out_a.append(esc(words_a[i1:i2]))
            out_b.append(esc(words_b[j1:j2]))
            continue
        if i2 > i1:
            out_a.append(f'<del style="background:#fdd">{esc(words_a[i1:i2])}</del>')
        if j2 > j1:
            out_b.append(f'<ins style="background:#dfd">{esc(words_b[j1:j2])}</ins>')
    return "".join(out_a), "".join(out_b)


def word_overlap(text_a: str, text_b: str) -> float:
    """Share of words the two answers have in common, in order (difflib ratio over words)."""
    a, b = text_a.split(), text_b.split()
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
