"""Constitutional self-critique: the policy critiques its own answer against written principles and revises it;
the original and the revision become a preference pair that people can review.

Why it looks like this:
- The principles are a short list that admins edit (studio_kv key 'constitution'), with a default shipped in
  ``assets/constitution.md``, like the labeling guidelines. One principle per line, so a critique prompt can number
  them and a reviewer can read them at a glance.
- Three generations per prompt with the version being improved (the critique-and-revise loop of Bai et al. 2022,
  "Constitutional AI"): its answer, its critique of that answer against the principles, and a revision that follows
  the critique. They go through the studio's one generation path (``Studio.pair_stream``: the shared scheduler, or
  the external engine when one is set), so a run shares the model with people chatting instead of competing for it.
- The pair is stored like a chat turn labeled by an AI: a conversation owned by the AI labeler ``ai:constitution``
  (users.kind 'ai'), the prompt as its user message, A = original and B = revision (both from the version), and a
  vote 'b' with source 'judge', the way AI judges store verdicts (core.judging.runs). So training sets leave it out
  unless asked (core.data.filters ``label_kinds``), it earns no contribution reward, and the critique stays readable in
  the vote's note and in the candidates' sampling JSON. There is no confidence: the vote is by construction.
  People check the pairs in the labeling app's Review tab (core.labeling.review), which shows the critique with
  answer B.
- Everything one prompt writes is one transaction: a run that fails keeps whole pairs only. A revision that is empty
  or identical to the original teaches nothing, so it is counted, not stored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core import ASSETS
from core.errors import ModelError, NotFound, PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from core.labeling.identity import User, ensure_ai_labeler
from core.labeling.queue import MAX_PROMPT_CHARS
from core.labeling.votes import CandidateIn, write_prompt_pair
from core.serving.generate import SamplingParams
from core.serving.host import ModelHost
from core.serving.policies import comparable_policy
from storage.db import Database, one_value

CONSTITUTION = ASSETS / "constitution.md"
KV_KEY = "constitution"  # studio_kv row holding the admin-edited text
LABELER = "ai:constitution"  # the AI labeler that owns the conversations and casts the votes
MAX_TEXT_CHARS = 20_000  # the edited text as a whole
MAX_PRINCIPLES = 40  # every principle is in every critique prompt: keep it short
MAX_PRINCIPLE_CHARS = 400
STREAM_INTERVAL_S = 0.25  # read the stream this often: fewer wake-ups competing with the scheduler
CRITIQUE_REQUEST = (
    "Critique the answer above against these principles:\n{principles}\n\n"
    "Say which principles it breaks and how; if it follows all of them, say so."
)
REVISION_REQUEST = "Rewrite the answer so it follows the principles; reply with the new answer only."

Messages = list[dict[str, str]]
Progress = Callable[[float, str], object]  # what it returns is ignored
_MARKER = re.compile(r"^(?:[-*+]|\d+[.)])(?:\s+|$)")  # a markdown list marker: "- ", "* ", "+ ", "1. ", "2) "


# --- principles -----------------------------------------------------------------------------------------------


def parse_principles(text: str) -> list[str]:
    """One principle per non-blank line; markdown list markers are dropped, headings (``#``) and comments skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "<!--")):
            continue
        line = " ".join(_MARKER.sub("", line).split())
        if line:
            found.append(line)
    return found


def checked_principles(items: Sequence[str]) -> list[str]:
    """Principles as a critique prompt can use them: text, non-empty, not too many, none too long. A string is read
    as a written constitution (one principle per line), not as a sequence of characters."""
    if isinstance(items, str):
        items = parse_principles(items)
    cleaned = [
        " ".join(clean_text(p, "principle", required=False, max_chars=MAX_PRINCIPLE_CHARS).split()) for p in items
    ]
    cleaned = [p for p in cleaned if p]
    if not cleaned:
        raise ValidationError(
            "The constitution has no principles",
            hint="write at least one principle, one per line (e.g. '- Do not make up facts.')",
        )
    if len(cleaned) > MAX_PRINCIPLES:
        raise ValidationError(
            f"The constitution has {len(cleaned)} principles, more than {MAX_PRINCIPLES}",
            hint="merge or drop some: every principle is part of every critique prompt",
        )
    return cleaned


def principles_text(db: Database) -> str:
    """The constitution as written (for the editor): the admin-edited text if any, else assets/constitution.md."""
    edited = db.scalar("SELECT value FROM studio_kv WHERE key = ?", [KV_KEY])
    return edited if edited is not None else CONSTITUTION.read_text(encoding="utf-8")


def principles(db: Database) -> list[str]:
    """The principles critiques are made against, one string each."""
    return parse_principles(principles_text(db))


def save_principles(db: Database, admin: User, text: str) -> list[str]:
    """Store an edited constitution (admins only); returns its principles. An unusable text is refused and the
    previous one stays, so a run never starts from an empty or oversized list."""
    if not admin.is_admin:
        raise PermissionDenied("Only admins can edit the constitution", hint="ask an admin")
    text = clean_text(text, "constitution", max_chars=MAX_TEXT_CHARS)
    items = checked_principles(parse_principles(text))
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO studio_kv (key, value, updated_by) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,"
            " updated_at = now()",
            [KV_KEY, text, admin.id],
        )
        cur.execute(
            "INSERT INTO audit_log (user_id, action, target_table, details) VALUES (?, 'edit', ?, ?)",
            [admin.id, KV_KEY, json.dumps({"principles": len(items)})],
        )
    return items


def reset_principles(db: Database, admin: User) -> list[str]:
    """Go back to the shipped default (admins only); the edited text is gone, the audit log remembers the reset."""
    if not admin.is_admin:
        raise PermissionDenied("Only admins can edit the constitution", hint="ask an admin")
    with db.transaction() as cur:
        cur.execute("DELETE FROM studio_kv WHERE key = ?", [KV_KEY])
        cur.execute("INSERT INTO audit_log (user_id, action, target_table) VALUES (?, 'reset', ?)", [admin.id, KV_KEY])
    return principles(db)


# --- critique and revise --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One generation: its text and what it cost."""

    text: str
    new_tokens: int
    latency_ms: float
    truncated_tokens: int  # prompt tokens dropped from the front to fit the context window
    cut: bool | None = None  # stopped at the length limit (None: not generated here)


@dataclass(frozen=True)
class Revision:
    """The policy's answer, its critique of it, and the revised answer (``steps``: the three generations)."""

    original: str
    critique: str
    revision: str
    policy_id: int | None = None
    seed: int | None = None
    steps: tuple[Step, ...] = ()

    @property
    def skipped(self) -> str | None:
        """Why no pair comes of it ('empty' or 'identical', compared as training sets compare), or None."""
        if not self.original.strip() or not self.revision.strip():
            return "empty"
        if self.original.strip() == self.revision.strip():
            return "identical"
        return None


def critique_messages(prompt: Messages, original: str, items: Sequence[str]) -> Messages:
    """The conversation that asks for a critique: the prompt, the answer, and the numbered principles."""
    numbered = "\n".join(f"{i}. {p}" for i, p in enumerate(items, 1))
    return [
        *prompt,
        {"role": "assistant", "content": original},
        {"role": "user", "content": CRITIQUE_REQUEST.format(principles=numbered)},
    ]


def revision_messages(prompt: Messages, original: str, items: Sequence[str], critique: str) -> Messages:
    """The critique conversation continued with the critique and the request to rewrite."""
    return [
        *critique_messages(prompt, original, items),
        {"role": "assistant", "content": critique},
        {"role": "user", "content": REVISION_REQUEST},
    ]


def _generate(
    studio: ModelHost, version: str, messages: Messages, sampling: SamplingParams, seed: int | None
) -> tuple[Step, int]:
    """One answer of ``version`` through the studio's pair path (row A of a pair of that version; the second row
    costs little on a shared batch) and the version's policy id."""
    updates, (policy_id, _) = studio.pair_stream(
        messages, sampling, version, version, seed=seed, interval=STREAM_INTERVAL_S
    )
    final = None
    for final in updates:
        pass
    if final is None or not final.finished:
        raise ModelError(f"{version} gave no answer", hint="try again; check the model on the Settings page")
    step = Step(final.text_a.strip(), final.new_tokens_a, final.latency_ms or 0.0, final.truncated_tokens, final.cut[0])
    return step, policy_id


def critique_and_revise(
    studio: ModelHost,
    version: str,
    prompt_messages: Messages,
    items: Sequence[str],
    sampling: SamplingParams | None = None,
    *,
    seed: int | None = None,
) -> Revision:
    """Answer, critique the answer against ``items`` (the principles), revise it: three generations of
    ``version`` with the same settings and seed. Nothing is stored here."""
    items = checked_principles(items)
    sampling = (sampling or SamplingParams()).validate()
    if not prompt_messages or prompt_messages[-1].get("role") != "user":
        raise ValidationError("The prompt must end with a user message", hint="give the question to answer")
    comparable_policy(studio.db, version)  # unknown, deleted, reward or fully fine-tuned: a clear error now
    prompt = [dict(m) for m in prompt_messages]
    answer, policy_id = _generate(studio, version, prompt, sampling, seed)
    critique, _ = _generate(studio, version, critique_messages(prompt, answer.text, items), sampling, seed)
    revision, _ = _generate(
        studio, version, revision_messages(prompt, answer.text, items, critique.text), sampling, seed
    )
    return Revision(answer.text, critique.text, revision.text, policy_id, seed, (answer, critique, revision))


# --- storing --------------------------------------------------------------------------------------------------


def store_revision(
    db: Database,
    labeler: User,
    prompt: str,
    revision: Revision,
    sampling: SamplingParams,
    items: Sequence[str],
    prompt_id: int | None = None,
) -> int | None:
    """Store one revision as a labeled pair in ONE transaction: a one-turn conversation of ``labeler`` with
    A = original and B = revision (core.labeling.votes.write_prompt_pair, the shape judge runs on a queue store too),
    and the vote 'b' (source 'judge', note = the critique). ``prompt_id``: the queue prompt it answers, so redacting
    that prompt (core.labeling.moderation) reaches this copy too. Returns the preference id, or None when the
    revision is skipped (empty or identical: nothing is written)."""
    if revision.skipped:
        return None
    steps = revision.steps or tuple(
        Step(t, 0, 0.0, 0) for t in (revision.original, revision.critique, revision.revision)
    )
    answer, critique, rewrite = steps
    # both candidates carry the critique (and what the three steps cost), so a reviewer reading either sees why
    about = {
        "critique": revision.critique,
        "principles": list(items),
        "critique_tokens": critique.new_tokens,
        "critique_latency_ms": round(critique.latency_ms, 1),
        "truncated_tokens": [step.truncated_tokens for step in steps],
    }
    meta = {**sampling.to_dict(), "seed": revision.seed, "constitution": about}
    a = CandidateIn(revision.original, revision.policy_id, answer.latency_ms, answer.new_tokens, answer.cut)
    b = CandidateIn(revision.revision, revision.policy_id, rewrite.latency_ms, rewrite.new_tokens, rewrite.cut)
    note = json.dumps({"kind": "constitution", "critique": revision.critique})
    with db.transaction() as cur:
        conversation, turn, a_id, b_id = write_prompt_pair(cur, labeler, prompt, prompt_id, a, b, meta)
        # the same columns as core.judging.runs.save_verdict writes for an AI judge's vote
        return one_value(
            cur.execute(
                "INSERT INTO preferences (conversation_id, turn, prompt_id, candidate_a, candidate_b, outcome,"
                " labeler_id,"
                " source, note, confidence, judge_run_id) VALUES (?, ?, ?, ?, ?, 'b', ?, 'judge', ?, NULL, NULL)"
                " RETURNING id",
                [conversation, turn, prompt_id, a_id, b_id, labeler.id, note],
            )
        )


# --- runs -----------------------------------------------------------------------------------------------------


def queue_prompt_rows(db: Database, queue_name: str, limit: int | None = None) -> list[tuple[int, str]]:
    """(prompt id, text) of a labeling queue's prompts (by queue name), in import order, redacted ones left out."""
    rows = db.query("SELECT id FROM queues WHERE name = ?", [queue_name.strip()])
    if not rows:
        names = [r["name"] for r in db.query("SELECT name FROM queues ORDER BY id")]
        raise NotFound(
            f"Queue {queue_name!r} does not exist",
            hint=f"pick one of: {', '.join(names)}" if names else "create one on the Labeling setup page",
        )
    if limit is not None and limit < 1:
        raise ValidationError("The prompt limit must be at least 1", hint="use 1 or more")
    found = [
        (r["id"], r["text"])
        for r in db.query(
            "SELECT id, text FROM prompts WHERE queue_id = ? AND redacted_at IS NULL ORDER BY id", [rows[0]["id"]]
        )
    ][:limit]
    if not found:
        raise ValidationError(
            f"Queue {queue_name!r} has no prompts", hint="import prompts into it on the Labeling setup page"
        )
    return found


def queue_prompts(db: Database, queue_name: str, limit: int | None = None) -> list[str]:
    """The prompt texts of a labeling queue (core.labeling.queue lists queues, not their texts)."""
    return [text for _, text in queue_prompt_rows(db, queue_name, limit)]


def run_constitution(
    studio: ModelHost,
    admin: User,
    version: str,
    prompts: Sequence[str],
    principles: Sequence[str] | None = None,
    sampling: SamplingParams | None = None,
    progress: Progress | None = None,
    *,
    seed: int = 0,
    prompt_ids: Sequence[int | None] | None = None,
) -> dict[str, Any]:
    """Critique and revise ``version``'s answer to each prompt and store every useful pair (admins only).

    Inputs are checked before anything is generated or written (admin, prompts, principles, settings, version).
    Prompt i uses seed ``seed + i``, so a run can be repeated. Each prompt's rows are one transaction; if
    generation fails midway, the pairs of the prompts before it stay and the error is raised.
    ``principles``: None = the stored constitution. ``prompt_ids``: the queue prompts the texts come from (see
    :func:`queue_prompt_rows`), kept with each pair so a redaction of the prompt reaches it. Returns counts and
    timings.
    """
    if not admin.is_admin:
        raise PermissionDenied("Only admins can run constitutional self-critique", hint="ask an admin")
    texts = [clean_text(p, "prompt", max_chars=MAX_PROMPT_CHARS).strip() for p in prompts]
    if not texts:
        raise ValidationError("No prompts to critique", hint="pick a queue with prompts, or type some")
    ids_in = list(prompt_ids) if prompt_ids is not None else [None] * len(texts)
    if len(ids_in) != len(texts):
        raise ValidationError(f"{len(ids_in)} prompt ids for {len(texts)} prompts", hint="give one id per prompt")
    items = checked_principles(principles_text(studio.db) if principles is None else principles)
    sampling = (sampling or SamplingParams()).validate()
    policy = comparable_policy(studio.db, version)
    labeler = ensure_ai_labeler(studio.db, LABELER)
    started = time.perf_counter()
    ids: list[int] = []
    skipped = {"identical": 0, "empty": 0}

    def summary(error: str | None = None) -> dict[str, Any]:
        seconds = time.perf_counter() - started
        out = {
            "version": policy["name"],
            "labeler": LABELER,
            "prompts": len(texts),
            "pairs": len(ids),
            "skipped_identical": skipped["identical"],
            "skipped_empty": skipped["empty"],
            "preference_ids": ids,
            "principles": len(items),
            "seconds": round(seconds, 2),
            "seconds_per_prompt": round(seconds / len(texts), 3),
            **({"error": error} if error else {}),
        }
        studio.db.write(
            lambda cur: cur.execute(  # the run is on record, also when it stopped midway
                "INSERT INTO audit_log (user_id, action, target_table, details) VALUES (?, 'run', ?, ?)",
                [admin.id, KV_KEY, json.dumps({k: v for k, v in out.items() if k != "preference_ids"})],
            )
        )
        return out

    try:
        for i, (text, prompt_id) in enumerate(zip(texts, ids_in)):
            prompt = [{"role": "user", "content": text}]
            revision = critique_and_revise(studio, version, prompt, items, sampling, seed=seed + i)
            preference = store_revision(studio.db, labeler, text, revision, sampling, items, prompt_id)
            if preference is None:
                skipped[revision.skipped or "empty"] += 1
            else:
                ids.append(preference)
            if progress is not None:
                progress((i + 1) / len(texts), f"{i + 1}/{len(texts)} prompts, {len(ids)} pairs stored")
    except Exception as exc:
        summary(f"{type(exc).__name__}: {exc}")
        raise
    return summary()
