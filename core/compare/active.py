"""Active learning: "what should people label next?"

From a prompt pool, generate two answers per prompt and rank the prompts by either ``disagreement`` between two
versions (symmetric cross log-likelihood: each version's answer scored by both versions,
``[log pA(yA) - log pB(yA) + log pB(yB) - log pA(yB)] / tokens``, a per-token sample estimate of the Jeffreys
divergence between them on that prompt; highest first) or ``uncertainty`` of a reward model (smallest score gap
between the two answers first). Every pick has a reason in words; the picks become a normal prompt queue
(``core.labeling.queue``) that the labeling app serves, and the reasons are kept in ``active_picks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.compare.evaluation import (
    NO_REWARD_MODEL,
    CompareSettings,
    Messages,
    Progress,
    check_pair,
    last_user_text,
    report_progress,
    reward_scorer,
)
from core.compare.sidebyside import word_overlap
from core.errors import Conflict, ValidationError
from core.labeling import queue as prompt_queue
from core.serving.host import ModelHost
from core.serving.policies import comparable_policy
from core.serving.scoring import PairAnswers, adapter_names, generate_pair_answers, row_adapter, sequence_logprobs
from storage.db import Database

STRATEGIES = ("disagreement", "uncertainty")


@dataclass
class Pick:
    """A prompt worth labeling, with its score, the reason in words and the two answers that showed it."""

    prompt: Messages
    score: float  # disagreement (nats/token, higher first) or score gap (lower first)
    reason: str
    answer_a: str
    answer_b: str
    score_a: float | None = None
    score_b: float | None = None

    @property
    def text(self) -> str:
        return last_user_text(self.prompt)


def pick_for_labeling(
    studio: ModelHost,
    strategy: str,
    policy_a: str,
    policy_b: str,
    prompts: Sequence[Messages],
    k: int = 10,
    reward_model: str | None = None,
    settings: CompareSettings | None = None,
    progress: Progress | None = None,
) -> list[Pick]:
    """The ``k`` prompts most worth labeling, best first, each with its reason.

    ``disagreement``: the two versions (different ones) answer; ranked by the symmetric cross log-likelihood
    per token (see the module docstring), highest first. ``uncertainty``: two answers (two versions, or two
    samples of one version when ``policy_a == policy_b``) scored by ``reward_model``; smallest gap first.
    """
    settings = settings or CompareSettings()
    if strategy not in STRATEGIES:
        raise ValidationError(f"Unknown strategy {strategy!r}", hint=f"use {' or '.join(STRATEGIES)}")
    if k < 1:
        raise ValidationError("Pick at least one prompt", hint="set k to 1 or more")
    if not prompts:
        raise ValidationError("The prompt pool is empty", hint="pick or type at least one prompt")
    if strategy == "disagreement":
        check_pair(studio.db, policy_a, policy_b)
    else:
        comparable_policy(studio.db, policy_a)
        comparable_policy(studio.db, policy_b)
        if not reward_model:
            raise ValidationError("Uncertainty sampling needs a reward model", hint=NO_REWARD_MODEL)
        if policy_a == policy_b and settings.temperature == 0:
            raise ValidationError(
                f"Two greedy answers of {policy_a} are identical, so there is nothing to be unsure about",
                hint="raise the temperature (e.g. 0.7) or pick two different versions",
            )
    scorer = reward_scorer(studio.db, reward_model)
    rows = adapter_names(studio, policy_a, policy_b)
    sampling = settings.sampling()
    answers: list[PairAnswers] = []
    for i, prompt in enumerate(prompts):
        report_progress(progress, 0.9 * i / len(prompts), f"prompt {i + 1} of {len(prompts)}: generating")
        answers.append(generate_pair_answers(studio, rows, prompt, sampling, settings.seed + i, (policy_a, policy_b)))
    report_progress(progress, 0.9, "ranking")
    a_texts, b_texts = [x.text_a for x in answers], [x.text_b for x in answers]
    picks: list[Pick] = []
    if strategy == "uncertainty":
        assert scorer is not None
        scores = scorer.score(list(prompts) * 2, a_texts + b_texts)
        n = len(prompts)
        for i, prompt in enumerate(prompts):
            sa, sb = scores[i], scores[n + i]
            who = f"{policy_a} and {policy_b}" if policy_a != policy_b else f"two samples of {policy_a}"
            picks.append(
                Pick(
                    prompt,
                    abs(sa - sb),
                    f"{scorer.name} is unsure: it scores the answers of {who} "
                    f"{sa:.3f} vs {sb:.3f} (gap {abs(sa - sb):.3f})",
                    a_texts[i],
                    b_texts[i],
                    sa,
                    sb,
                )
            )
        picks.sort(key=lambda p: p.score)
    else:
        n = len(prompts)
        both = list(prompts) * 2
        under_a = sequence_logprobs(studio, [row_adapter(rows, 0)] * (2 * n), both, a_texts + b_texts)
        under_b = sequence_logprobs(studio, [row_adapter(rows, 1)] * (2 * n), both, a_texts + b_texts)
        for i, prompt in enumerate(prompts):
            (a_on_a, len_a), (a_on_b, len_b) = under_a[i], under_a[n + i]
            b_on_a, b_on_b = under_b[i][0], under_b[n + i][0]
            gap_a, gap_b = a_on_a - b_on_a, b_on_b - a_on_b
            value = (gap_a + gap_b) / max(1, len_a + len_b)
            overlap = word_overlap(a_texts[i], b_texts[i])
            picks.append(
                Pick(
                    prompt,
                    value,
                    f"{policy_a} and {policy_b} disagree: {policy_b} finds {policy_a}'s "
                    f"answer {gap_a:.1f} nats less likely than {policy_a} does, and {policy_a} finds "
                    f"{policy_b}'s {gap_b:.1f} nats less likely ({value:.3f} nats/token); the answers "
                    f"share {overlap:.0%} of their words",
                    a_texts[i],
                    b_texts[i],
                )
            )
        if scorer is not None:  # extra evidence for the labeler-to-be: what the reward model thinks
            scores = scorer.score(list(prompts) * 2, a_texts + b_texts)
            for i, pick in enumerate(picks):
                pick.score_a, pick.score_b = scores[i], scores[n + i]
                pick.reason += f"; {scorer.name} scores them {pick.score_a:.3f} vs {pick.score_b:.3f}"
        picks.sort(key=lambda p: -p.score)
    report_progress(progress, 1.0, "done")
    return picks[:k]


def queue_picks(
    db: Database,
    admin: Any,
    queue_name: str,
    strategy: str,
    policy_a: str,
    policy_b: str,
    picks: Sequence[Pick],
    reward_model: str | None = None,
) -> int:
    """Put the picks into a labeling queue (created if needed) and record why each was picked."""
    if not picks:
        raise ValidationError("Nothing to queue", hint="find prompts to label first")
    if db.scalar("SELECT count(*) FROM queues WHERE name = ?", [queue_name.strip()]):
        raise Conflict(
            f"A queue named {queue_name.strip()!r} already exists",
            hint="each active-learning batch gets its own queue: pick a new name",
        )
    texts = [p.text for p in picks]
    if any(not t.strip() for t in texts):
        raise ValidationError("A picked prompt has no user message", hint="pick from another prompt set")
    queue_id = prompt_queue.create_queue(db, admin, queue_name)
    prompt_queue.import_prompts(db, admin, queue_id, texts, f"import:active-{strategy}")
    ids = {r["text"]: r["id"] for r in db.query("SELECT id, text FROM prompts WHERE queue_id = ?", [queue_id])}
    with db.transaction() as cur:
        cur.executemany(
            "INSERT INTO active_picks (queue_id, prompt_id, strategy, score, rank, reason, policy_a, policy_b,"
            " reward_model, answer_a, answer_b, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    queue_id,
                    ids[p.text],
                    strategy,
                    p.score,
                    rank,
                    p.reason,
                    policy_a,
                    policy_b,
                    reward_model,
                    p.answer_a,
                    p.answer_b,
                    admin.id,
                ]
                for rank, p in enumerate(picks, 1)
            ],
        )
    return queue_id


def queued_picks(db: Database, queue_id: int | None = None) -> list[dict[str, Any]]:
    """Active-learning picks with their reasons (newest batch first, then by rank)."""
    return db.query(
        "SELECT q.name AS queue, a.rank, p.text AS prompt, a.strategy, a.score, a.reason, a.policy_a, a.policy_b,"
        " a.reward_model, a.created_at FROM active_picks a JOIN queues q ON q.id = a.queue_id"
        " JOIN prompts p ON p.id = a.prompt_id WHERE ($queue::BIGINT IS NULL OR a.queue_id = $queue)"
        " ORDER BY a.created_at DESC, a.rank",
        {"queue": queue_id},
    )
