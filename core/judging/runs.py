"""Judge runs: an AI judge (core.judging.judges) labels the pairs no person voted on, in the background.

Why it looks like this:
- A judge's labels are votes of its own labeler (users.kind 'ai', named ``ai:<judge>``, source 'judge') with
  the verdict's confidence. Training sets leave them out unless a filter asks for them (core.data.filters
  ``label_kinds``); they earn no contribution rewards.
- Each pair's verdict is saved in its own transaction, so a run that fails or is cancelled keeps every pair
  it finished and nothing half-written; running the same judge again skips the pairs it already labeled
  (resume).
- Before starting, :func:`estimate` says how many pairs and requests, how long and, for a remote endpoint, roughly
  how many tokens. How long is measured, not assumed: it judges a small sample spread over the work (without
  saving it) and scales the measured throughput (characters per second) by the size of every pair, because a
  judge's cost grows with the text it reads. Timing only the first pair came out 22% low on a loaded machine.
  While a run goes, :func:`run_eta` re-estimates the time left from the run's own pace, so the ETA follows the
  machine's load as it changes.
- Progress, counts and the end state live in ``judge_runs``; cancel is a flag the worker checks between pairs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from core.errors import NotFound, PermissionDenied, StudioError, ValidationError
from core.judging import judges
from core.labeling.identity import User, ensure_ai_labeler
from core.serving.host import ModelHost
from storage.db import Database, one_value

UNLABELED = "unlabeled"
LABELED = "labeled"
QUEUE = "queue:"
SOURCES_HELP = (
    "unlabeled (chat pairs no person voted on: what the judge pre-labels), queue:<name> (the prompts of a "
    "labeling queue: the base policy answers each twice, the judge labels the pair) or labeled (pairs "
    "people voted on: calibration, to measure how far the judge agrees with them)"
)
CHARS_PER_TOKEN = 4  # rough size of English text in tokens, for a remote endpoint's estimate
CALIBRATION_PAIRS = 4  # pairs an estimate judges to measure throughput (an endpoint's batch of 1: one pair)

# Unlabeled: the two candidates saved together for one chat turn (same conversation, turn and transaction time)
# that no person voted on. Labeled: every pair a person voted on (chat, API, imports), for calibration.
_UNLABELED = """
WITH pair AS (
    SELECT conversation_id, turn, min(id) AS a_id, max(id) AS b_id
    FROM candidates
    WHERE conversation_id IS NOT NULL AND redacted_at IS NULL
    GROUP BY conversation_id, turn, created_at HAVING count(*) = 2
)
SELECT a_id, b_id FROM pair p
WHERE NOT EXISTS (SELECT 1 FROM preferences v LEFT JOIN users u ON u.id = v.labeler_id
                  WHERE v.candidate_a = p.a_id AND v.candidate_b = p.b_id AND v.retracted_at IS NULL
                    AND (coalesce(u.kind, 'human') = 'human' OR u.name = $judge))
"""
_LABELED = """
SELECT DISTINCT p.candidate_a AS a_id, p.candidate_b AS b_id
FROM preferences p LEFT JOIN users u ON u.id = p.labeler_id
WHERE coalesce(u.kind, 'human') = 'human' AND p.retracted_at IS NULL AND p.redacted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM preferences v JOIN users j ON j.id = v.labeler_id AND j.name = $judge
                  WHERE v.candidate_a = p.candidate_a AND v.candidate_b = p.candidate_b AND v.retracted_at IS NULL)
"""
# The pair's texts and prompt: a chat turn's conversation before it, else the prompt it answered.
_PAIRS = """
WITH pair AS ({pairs})
SELECT a.conversation_id, a.turn, a.prompt_id, a.id AS a_id, b.id AS b_id, a.text AS text_a, b.text AS text_b,
       CASE WHEN a.conversation_id IS NOT NULL THEN
                (SELECT list({{'role': m.role, 'content': m.content}} ORDER BY m.turn) FROM messages m
                 WHERE m.conversation_id = a.conversation_id AND m.turn < a.turn AND m.redacted_at IS NULL)
            WHEN pr.id IS NOT NULL AND pr.redacted_at IS NULL THEN [{{'role': 'user', 'content': pr.text}}]
       END AS prompt
FROM pair
JOIN candidates a ON a.id = pair.a_id AND a.redacted_at IS NULL
JOIN candidates b ON b.id = pair.b_id AND b.redacted_at IS NULL
LEFT JOIN prompts pr ON pr.id = a.prompt_id
ORDER BY a.id
"""


@dataclass(frozen=True)
class PairItem:
    conversation_id: int
    turn: int
    prompt_id: int | None
    a_id: int
    b_id: int
    text_a: str
    text_b: str
    prompt: list[dict[str, str]]


@dataclass(frozen=True)
class QueuedPrompt:
    """A queue's prompt with no pair this judge labeled yet: the run makes the pair, then judges it."""

    prompt_id: int
    text: str

    @property
    def prompt(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.text}]


# A queue's prompts that no pair labeled by this judge answers yet.
_QUEUE_PROMPTS = """
SELECT pr.id, pr.text FROM prompts pr JOIN queues q ON q.id = pr.queue_id AND q.name = $queue
WHERE pr.redacted_at IS NULL AND NOT EXISTS (
    SELECT 1 FROM preferences v JOIN users u ON u.id = v.labeler_id AND u.name = $judge
    JOIN candidates c ON c.id = v.candidate_a WHERE c.prompt_id = pr.id AND v.retracted_at IS NULL)
ORDER BY pr.id
"""


def work_items(db: Database, source: str, judge: judges.JudgeSpec) -> list[PairItem | QueuedPrompt]:
    """What a run of ``judge`` on ``source`` would label: pairs, or a queue's prompts still without a judged pair."""
    if source.startswith(QUEUE):
        name = source[len(QUEUE) :]
        if not db.scalar("SELECT count(*) FROM queues WHERE name = ?", [name]):
            raise NotFound(f"There is no labeling queue named {name!r}", hint="see the console's Labeling page")
        return [
            QueuedPrompt(r["id"], r["text"]) for r in db.query(_QUEUE_PROMPTS, {"queue": name, "judge": judge.labeler})
        ]
    return list(pairs_to_judge(db, source, judge))


def pairs_to_judge(db: Database, source: str, judge: judges.JudgeSpec) -> list[PairItem]:
    """The pairs a run of ``judge`` on ``source`` would label: unlabeled by people and not yet by this judge."""
    if source not in (UNLABELED, LABELED):
        raise ValidationError(f"Unknown judge source {source!r}", hint=f"use {SOURCES_HELP}")
    rows = db.query(_PAIRS.format(pairs=_UNLABELED if source == UNLABELED else _LABELED), {"judge": judge.labeler})
    return [
        PairItem(
            r["conversation_id"],
            r["turn"],
            r["prompt_id"],
            r["a_id"],
            r["b_id"],
            r["text_a"],
            r["text_b"],
            [dict(m) for m in r["prompt"]],
        )
        for r in rows
        if r["prompt"] and r["prompt"][-1]["role"] == "user"
    ]


def backend_for(studio: ModelHost, spec: judges.JudgeSpec, api_key: str | None = None) -> judges.Backend:
    """The judge's backend, with the rubric built from the guidelines and aspects humans label with."""
    from core.labeling.queue import guidelines
    from core.labeling.votes import active_aspects

    instructions = judges.rubric(guidelines(studio.db), active_aspects(studio.db))
    if spec.kind == "rm":
        from core.training.reward import RewardScorer

        return judges.RewardBackend(RewardScorer.load(studio.db, spec.name))
    if spec.kind == "policy":
        return judges.PolicyBackend(studio, spec.name, instructions)
    return judges.EndpointBackend(spec.url or "", spec.name, instructions, api_key)


def estimate(
    studio: ModelHost, spec_text: str, source: str, api_key: str | None = None, sampling: Any = None
) -> dict[str, Any]:
    """What a run would cost: pairs, requests (two orders each), seconds and, for an endpoint, prompt tokens
    (characters / 4). Seconds come from judging a calibration sample (nothing saved) and scaling its measured
    throughput to every pair (:func:`projected_seconds`); a queue's prompts are answered first, which costs about
    the same per prompt whatever its length, so there the sample's time per pair is scaled by the count."""
    spec = judges.parse_judge(spec_text)
    items = work_items(studio.db, source, spec)
    out: dict[str, Any] = {
        "judge": spec.labeler,
        "describe": spec.describe(),
        "source": source,
        "pairs": len(items),
        "requests": 2 * len(items),
        "seconds": 0.0,
        "seconds_per_pair": None,
        "sample_pairs": 0,
        "tokens": None,
    }
    if not items:
        return out
    backend = backend_for(studio, spec, api_key)
    queued = not isinstance(items[0], PairItem)
    sample = calibration_sample(items, 1 if queued else min(CALIBRATION_PAIRS, max(1, backend.batch)))
    started = time.perf_counter()
    judged: list[tuple[Any, str, str]] = []
    for item in sample:
        texts = (item.text_a, item.text_b) if isinstance(item, PairItem) else _answer_pair(studio, item, sampling)[:2]
        judged.append((item.prompt, *texts))
    judges.judge_pairs(backend, judged)
    elapsed = time.perf_counter() - started
    if queued:
        seconds = elapsed / len(sample) * len(items)
    else:
        fixed = len(getattr(backend, "instructions", ""))
        # not a queue: every item is a PairItem
        seconds = projected_seconds(
            elapsed,
            [pair_chars(cast(PairItem, i), fixed) for i in sample],
            [pair_chars(cast(PairItem, i), fixed) for i in items],
        )
    out.update(seconds=round(seconds, 1), seconds_per_pair=round(seconds / len(items), 4), sample_pairs=len(sample))
    if spec.kind == "endpoint":
        instructions = getattr(backend, "instructions", "")
        # a queued prompt's answers do not exist yet: the sample's answers stand in for them
        texts = judged[0][1:]
        chars = sum(
            len(instructions)
            + sum(len(m["content"]) for m in i.prompt)
            + (len(i.text_a) + len(i.text_b) if isinstance(i, PairItem) else sum(map(len, texts)))
            for i in items
        )
        out["tokens"] = 2 * (chars // CHARS_PER_TOKEN + judges.REPLY_TOKENS * len(items))
    return out


def pair_chars(item: PairItem, rubric_chars: int = 0) -> int:
    """What a judge reads for one pair, in characters: the rubric (the same for every pair: a fixed cost per pair),
    the prompt and both answers."""
    return rubric_chars + sum(len(m["content"]) for m in item.prompt) + len(item.text_a) + len(item.text_b)


def calibration_sample(items: list[Any], size: int) -> list[Any]:
    """``size`` items spread evenly over the work: pairs are ordered by age, and the first few are often the short
    test chats, which would make the estimate low."""
    size = max(1, min(size, len(items)))
    step = len(items) / size
    return [items[int((i + 0.5) * step)] for i in range(size)]


def projected_seconds(sample_seconds: float, sample_chars: list[int], all_chars: list[int]) -> float:
    """The whole run's seconds from a measured sample: its throughput (characters per second) applied to every
    pair's size. Falls back to time per pair when the sample has no text to measure by."""
    if not all_chars:
        return 0.0
    if sum(sample_chars) <= 0:
        return sample_seconds / max(1, len(sample_chars)) * len(all_chars)
    return sample_seconds * sum(all_chars) / sum(sample_chars)


def run_eta(run: dict[str, Any], now: Any = None) -> float | None:
    """Seconds a running judge run still needs, from its own pace so far (pairs done over the time since it
    started), so the ETA follows the machine's load as it changes. None before the first pair is saved (nothing
    measured yet) and for a run that is not running."""
    from datetime import datetime, timezone

    if run.get("status") != "running" or not run.get("done") or not run.get("started_at"):
        return None
    started = run["started_at"]
    started = datetime.fromisoformat(started) if isinstance(started, str) else started
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    elapsed = max(0.0, (now - started).total_seconds())
    return remaining_seconds(run["done"], run["total"], elapsed)


def remaining_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Time left when ``done`` of ``total`` items took ``elapsed`` seconds: the items left at the pace so far."""
    if done <= 0:
        return None
    return max(0, total - done) * elapsed / done


# --- runs -----------------------------------------------------------------------------------------------------


class JudgeRuns:
    """Background judge runs of one studio: start, progress (from the table), cancel."""

    def __init__(self, studio: ModelHost) -> None:
        self.studio = studio
        self._cancel: dict[int, threading.Event] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        # a run that was going when the studio stopped ended there; its judged pairs are saved
        studio.db.write(
            lambda cur: cur.execute(
                "UPDATE judge_runs SET status = 'failed', finished_at = now(), error = 'the studio stopped during"
                " the run;"
                " judged pairs are saved: run the judge again to resume' WHERE status = 'running'"
            )
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every run of this process and wait for each to save its last pair."""
        with self._lock:
            running = list(self._threads.items())
            for event in self._cancel.values():
                event.set()
        for _, thread in running:
            thread.join(timeout)

    def start(
        self,
        spec_text: str,
        source: str,
        user: User,
        api_key: str | None = None,
        on_done: Callable[[int], None] | None = None,
        sampling: Any = None,
    ) -> int:
        """Start a run in a background thread; returns its id at once (watch it with :meth:`get`). ``sampling``
        (core.serving.generate.SamplingParams) is how a queue's prompts are answered (default: the chat's)."""
        if not user.is_admin:
            raise PermissionDenied("Only admins can run AI judges", hint="ask an admin")
        spec = judges.parse_judge(spec_text)
        items = work_items(self.studio.db, source, spec)
        backend = backend_for(self.studio, spec, api_key)  # fails here (unknown rm, ...) before any row exists
        judge_user = ensure_ai_labeler(self.studio.db, spec.labeler)
        with self.studio.db.transaction() as cur:
            run_id = one_value(
                cur.execute(
                    "INSERT INTO judge_runs (judge, spec, source, status, total, started_by) VALUES (?, ?, ?,"
                    " 'running',"
                    " ?, ?) RETURNING id",
                    [spec.labeler, _public_spec(spec), source, len(items), user.id],
                )
            )
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._run,
            name=f"studio-judge-{run_id}",
            daemon=True,
            args=(run_id, backend, judge_user, items, cancel, on_done, sampling),
        )
        with self._lock:
            self._cancel[run_id], self._threads[run_id] = cancel, thread
        thread.start()
        return run_id

    def run_blocking(
        self, spec_text: str, source: str, user: User, api_key: str | None = None, sampling: Any = None
    ) -> JudgeRun:
        run_id = self.start(spec_text, source, user, api_key, sampling=sampling)
        self._threads[run_id].join()
        return self.get(run_id)

    def cancel(self, run_id: int) -> None:
        self.get(run_id)
        with self._lock:
            event = self._cancel.get(run_id)
        if event is not None:
            event.set()

    def get(self, run_id: int) -> JudgeRun:
        rows = self.studio.db.query("SELECT * FROM judge_runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFound(f"Judge run {run_id} does not exist", hint="list the runs: launch.py judge --list")
        return _jsonable(rows[0])

    def list(self) -> list[JudgeRun]:
        return [_jsonable(r) for r in self.studio.db.query("SELECT * FROM judge_runs ORDER BY id DESC")]

    def join(self, run_id: int, timeout: float | None = None) -> None:
        thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def _run(
        self,
        run_id: int,
        backend: judges.Backend,
        judge_user: User,
        items: Sequence[PairItem | QueuedPrompt],
        cancel: threading.Event,
        on_done: Callable[[int], None] | None,
        sampling: Any = None,
    ) -> None:
        db = self.studio.db
        status, error = "succeeded", None
        try:
            batch = backend.batch
            for start in range(0, len(items), batch):
                if cancel.is_set():
                    status = "cancelled"
                    break
                chunk = [
                    item if isinstance(item, PairItem) else _make_pair(self.studio, judge_user, item, sampling)
                    for item in items[start : start + batch]
                ]
                verdicts = judges.judge_pairs(backend, [(i.prompt, i.text_a, i.text_b) for i in chunk])
                tokens = getattr(backend, "tokens", 0)
                for item, verdict in zip(chunk, verdicts):
                    save_verdict(db, run_id, judge_user, item, verdict, tokens)
        except StudioError as exc:
            status, error = "failed", f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        except Exception as exc:  # noqa: BLE001 - a run must end in a state, whatever broke
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            db.write(
                lambda cur: cur.execute(
                    "UPDATE judge_runs SET status = ?, error = ?, finished_at = now() WHERE id = ?",
                    [status, error, run_id],
                )
            )
            if hasattr(backend, "close"):
                backend.close()
            if on_done:
                on_done(run_id)


def _answer_pair(studio: ModelHost, item: QueuedPrompt, sampling: Any = None) -> tuple[str, str, Any, tuple[int, int]]:
    """Two sampled answers of the base policy to a queued prompt, as the labeling app would show them."""
    from core.serving.generate import SamplingParams

    sampling = sampling or SamplingParams()
    updates, ids = studio.pair_stream(item.prompt, sampling, "base", "base")
    final = None
    for final in updates:
        pass
    assert final is not None  # a pair stream always yields its finished pair
    return final.text_a, final.text_b, final, ids


def _make_pair(studio: ModelHost, judge_user: User, item: QueuedPrompt, sampling: Any = None) -> PairItem:
    """Generate and store the pair for a queued prompt (one transaction: the pair exists whole or not at all)."""
    from core.labeling.votes import CandidateIn, write_prompt_pair
    from core.serving.generate import SamplingParams

    sampling = sampling or SamplingParams()
    text_a, text_b, final, (id_a, id_b) = _answer_pair(studio, item, sampling)
    a = CandidateIn(text_a, id_a, final.latency_ms, final.new_tokens_a, final.cut[0])
    b = CandidateIn(text_b, id_b, final.latency_ms, final.new_tokens_b, final.cut[1])
    with studio.db.transaction() as cur:
        conversation_id, turn, a_id, b_id = write_prompt_pair(
            cur, judge_user, item.text, item.prompt_id, a, b, sampling.to_dict()
        )
    return PairItem(conversation_id, turn, item.prompt_id, a_id, b_id, text_a, text_b, item.prompt)


def save_verdict(
    db: Database, run_id: int, judge_user: User, item: PairItem, verdict: judges.Verdict, tokens: int
) -> None:
    """One pair: the vote and the run's counters in one transaction (all or nothing)."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO preferences (conversation_id, turn, prompt_id, candidate_a, candidate_b, outcome,"
            " labeler_id, source, note, confidence, judge_run_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'judge', ?, ?, ?)",
            [
                item.conversation_id,
                item.turn,
                item.prompt_id,
                item.a_id,
                item.b_id,
                verdict.outcome,
                judge_user.id,
                json.dumps(verdict.as_dict()),
                verdict.confidence,
                run_id,
            ],
        )
        cur.execute(
            "UPDATE judge_runs SET done = done + 1, ties = ties + ?, unreadable = unreadable + ?,"
            " tokens = ? WHERE id = ?",
            [int(not verdict.position_consistent and verdict.readable), int(not verdict.readable), tokens, run_id],
        )


class JudgeRun(TypedDict):
    """One run of an AI judge over pairs (the judge_runs table), its times as ISO 8601 text: what the Data page's
    runs table, ``GET /api/judges/runs`` and ``launch.py judge --list`` show."""

    id: int
    judge: str  # the judge's labeler name (ai:...)
    spec: str  # the judge as asked for, never an API key
    source: str  # what it judged: unlabeled | labeled | queue:<name>
    status: str  # running, succeeded, failed, cancelled
    total: int  # pairs to judge when it started
    done: int  # pairs judged and saved
    ties: int  # of which the two orders disagreed (position bias)
    unreadable: int  # of which a reply named neither answer
    tokens: int  # endpoint tokens (prompt + completion)
    error: str | None
    started_by: int | None  # users.id
    started_at: str
    finished_at: str | None


def _public_spec(spec: judges.JudgeSpec) -> str:
    return f"{spec.url}#{spec.name}" if spec.kind == "endpoint" else f"{spec.kind}:{spec.name}"


def _jsonable(row: dict[str, Any]) -> JudgeRun:
    return cast(JudgeRun, {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})


# --- how far to trust a judge ---------------------------------------------------------------------------------

MIN_CALIBRATION = 20  # shared items with people before a judge's labels go into training
AGREEMENT_LABELS = ("a", "b", "tie")
MAX_DISAGREEMENTS = 50

# Every (judge verdict, person's vote) on the same pair. "both bad" counts as a tie here: a judge only says which
# answer is better, and "neither" is what a tie means for that question.
_SHARED = """
SELECT j.id AS judge_vote, j.candidate_a, j.candidate_b, j.outcome AS judge_outcome, j.confidence,
       h.outcome AS human_outcome, coalesce(hu.name, 'anonymous #' || h.id) AS human,
       a.text AS text_a, b.text AS text_b,
       coalesce((SELECT arg_max(m.content, m.turn) FROM messages m WHERE m.conversation_id = a.conversation_id
                 AND m.turn < a.turn AND m.role = 'user'), pr.text) AS prompt
FROM preferences j
JOIN users ju ON ju.id = j.labeler_id AND ju.name = ?
JOIN preferences h ON h.candidate_a = j.candidate_a AND h.candidate_b = j.candidate_b
                  AND h.retracted_at IS NULL AND h.redacted_at IS NULL AND h.source <> 'judge'
LEFT JOIN users hu ON hu.id = h.labeler_id
JOIN candidates a ON a.id = j.candidate_a
JOIN candidates b ON b.id = j.candidate_b
LEFT JOIN prompts pr ON pr.id = a.prompt_id
WHERE j.retracted_at IS NULL AND j.redacted_at IS NULL AND coalesce(hu.kind, 'human') = 'human'
ORDER BY j.id, h.id
"""


def _as_preference(outcome: str) -> str:
    return "tie" if outcome == "both_bad" else outcome


def judge_agreement(db: Database, judge_name: str, min_shared: int = MIN_CALIBRATION) -> dict[str, Any]:
    """A judge against the people on the pairs both labeled: Cohen's kappa (every judge-person pair of labels),
    Krippendorff's alpha (nominal; each pair an item with the judge as one more labeler), the raw agreement,
    a confusion matrix (rows: the judge, columns: people, in a / b / tie order) and the disagreements to read.
    ``calibrated`` once ``shared`` reaches ``min_shared`` items AND kappa's 95% interval is clear of chance
    (core.labeling.agreement.calibration_verdict; ``calibration`` says why or why not). Measured: a judge with
    kappa 0.08 and 42 of 51 position ties had been called "calibrated on 51 shared items"."""
    from core.labeling.agreement import (
        calibration_verdict,
        cohen_kappa,
        confusion_matrix,
        kappa_interval,
        krippendorff_alpha,
    )

    rows = db.query(_SHARED, [judge_name])
    pairs = [(_as_preference(r["judge_outcome"]), _as_preference(r["human_outcome"])) for r in rows]
    units: dict[tuple[int, int], dict[str, str]] = {}
    for row, (judge, human) in zip(rows, pairs):
        unit = units.setdefault((row["candidate_a"], row["candidate_b"]), {judge_name: judge})
        unit[row["human"]] = human
    disagreements = [
        {
            "prompt": r["prompt"],
            "answer_a": r["text_a"],
            "answer_b": r["text_b"],
            "judge": r["judge_outcome"],
            "confidence": r["confidence"],
            "person": r["human"],
            "person_said": r["human_outcome"],
        }
        for r, (judge, human) in zip(rows, pairs)
        if judge != human
    ][:MAX_DISAGREEMENTS]
    shared = len(units)
    interval = kappa_interval(pairs)
    calibrated, why = calibration_verdict(shared, interval, min_shared)
    return {
        "judge": judge_name,
        "shared": shared,
        "comparisons": len(pairs),
        "agreement": sum(j == h for j, h in pairs) / len(pairs) if pairs else None,
        "kappa": cohen_kappa(pairs),
        "kappa_interval": list(interval) if interval else None,
        "alpha": krippendorff_alpha(units, "nominal") if shared else None,
        "labels": list(AGREEMENT_LABELS),
        "confusion": confusion_matrix(pairs, AGREEMENT_LABELS),
        "disagreements": disagreements,
        "calibrated": calibrated,
        "calibration": why,
        "min_shared": min_shared,
    }


def judges_overview(db: Database, min_shared: int = MIN_CALIBRATION) -> list[dict[str, Any]]:
    """Every AI judge that has labeled: its votes, runs, and agreement with people (no text)."""
    out = []
    for row in db.query(
        "SELECT u.name, count(p.id) AS votes, count(DISTINCT p.judge_run_id) AS runs,"
        " avg(p.confidence) AS mean_confidence FROM users u JOIN preferences p ON p.labeler_id = u.id"
        " WHERE u.kind = 'ai' AND p.judge_run_id IS NOT NULL AND p.retracted_at IS NULL"
        " GROUP BY u.name ORDER BY u.name"
    ):
        agreement = judge_agreement(db, row["name"], min_shared)
        out.append(
            {
                **row,
                **{
                    k: agreement[k]
                    for k in ("shared", "comparisons", "agreement", "kappa", "alpha", "calibrated", "calibration")
                },
            }
        )
    return out
