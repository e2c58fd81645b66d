"""Training sets: the labels in DuckDB turned into TRL datasets (conversational format).

Four builders, one per TRL dataset family. Each returns `Built(dataset, stats)`; the `*_rows` functions
return the same rows as plain dicts, `Rows(rows, stats)`, for tests and export. `stats` is
`{"rows": n, "skipped": {reason: count}}`; a skipped vote counts once, under the first reason that
applies (`retracted`, `redacted`, `no_prompt`, `date`, `labeler`, `source`, `policy`, `flagged`,
`low_agreement`, `minority`, then per builder `tie`, `both_bad_without_gold`, `no_gold`,
`identical_answers`, `no_clear_label`).

| Builder | Columns | TRL trainers |
|---|---|---|
| `build_preference` | `prompt`, `chosen`, `rejected` | DPO, ORPO, CPO, ... |
| `build_reward` | the same, plus `margin` with `margin_from_ratings=True` | RewardTrainer |
| `build_unpaired` | `prompt`, `completion`, `label` | KTO, BCO |
| `build_sft` | `messages` | SFT |

`prompt` is the conversation before the labeled assistant turn (a list of `{"role", "content"}`, may be
multi-turn, may start with a system message); `chosen`, `rejected` and `completion` are one assistant
message each.

How labels become rows
----------------------

| Label | Preference / reward (`prompt`, `chosen`, `rejected`, `margin`) | Unpaired / KTO (`prompt`, `completion`, `label`) | SFT (`messages`) |
|---|---|---|---|
| Vote `a` / `b` | chosen = picked answer, rejected = the other | picked → `True`, other → `False` | prompt + picked answer (the vote's gold edit replaces it) |
| Vote `tie` | no pair (also with a gold edit) | no label from the vote; thumbs / ratings may still label the two answers | no row, unless the vote has a gold edit |
| Vote `both_bad` | no pair without a gold edit; with one: gold vs A and gold vs B | both → `False` | no row, unless the vote has a gold edit |
| Gold edit (the answer it should have been) | on `a`/`b`: the picked-vs-rejected pair is kept and an EXTRA pair gold vs rejected is added (unless the gold text equals the pick); `both_bad`: see above | gold text → `True` (skipped when equal to one of the two answers) | prompt + gold text; `only_gold=True` keeps only these rows |
| Thumbs up / down | not used | up → `True`, down → `False`; several thumbs on one answer: majority | not used |
| Aspect ratings 1–5 | `margin` = weighted rating of chosen − rejected, clamped at ≥ 0; `0.0` when either side is unrated (always for gold pairs) | only when an answer has no thumb and no vote label: weighted mean ≥ 4 → `True`, ≤ 2 → `False`, in between → no row | not used |
| `feedback` rows (API, score 0–1) | not used | prompt = one user message, `label = score >= 0.5` | not used |
| Retracted (undone) or redacted vote; redacted answer, message or prompt | ignored, with the ratings, thumbs and gold edit given with the vote | ignored | ignored |

* Precedence for one answer in KTO: thumbs > votes > ratings. A level with as many good as bad signals
  (1 up and 1 down) defers to the next level. Explicit thumbs beat the vote they were given with.
* Several gold edits of one vote: the latest counts. Rows with identical chosen and rejected text are
  skipped (`identical_answers`).
* Ratings: per aspect the mean over raters of that answer, then the weighted mean over aspects; weights
  from the `aspects` table (active aspects) unless `aspect_weights` is given; `Filters.aspects` restricts
  which aspects count.
* Gold edits, thumbs and ratings given without a vote use the prompt of the answer they refer to.

Filters (`Filters`)
-------------------
Ratings, thumbs and gold edits given with a vote share the vote's fate: they count only when the vote
passes every filter. Signals without a vote (lone thumbs, ratings, gold edits, `feedback` rows) are
filtered by their own time and author.

* `since` / `until`: half-open window `[since, until)` on the vote's (or signal's) `created_at`;
  naive datetimes and dates are read as UTC.
* `labelers`: names or ids of users; the vote's labeler (or the signal's author) must be one of them.
* `policies`: policy names; a vote counts only when BOTH answers come from listed policies, a lone
  signal when its answer does. `feedback` rows have no policy and are dropped by this filter.
* `sources`: `chat`, `api`, `arena`, `seed`, `import:<name>` or `import:*` for any import.
  Lone signals take `chat` (answer from a conversation) or `api`.
* `exclude_flags`: votes carrying any of these flags are dropped (default: `unsafe`, `pii`).
* `min_agreement`: votes are grouped by prompt text (the whole prompt conversation); each labeler's
  latest outcome counts once. Agreement = share of labelers with the majority outcome. A vote is kept
  when agreement ≥ `min_agreement` AND its own outcome is a majority outcome (minority votes would
  contradict the label the others gave). Outcomes are compared as stored (`a`, `b`, `tie`,
  `both_bad`), so `a`/`b` agreement means something when labelers saw the same pair in the same
  order. Items judged by one labeler (and every lone signal) pass only when `min_agreement` is None.
  Agreement is measured over all live votes, before the other filters.
* `aspects`: which rating aspects count (default: the active ones).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import date, datetime, time, timezone
from typing import Any, Callable, NamedTuple, Sequence

import datasets

from core.errors import ValidationError
from storage.db import Database

FLAGS = ("unsafe", "pii", "off_topic")
LABEL_KINDS = ("human", "ai", "both")   # whose votes: people's, AI judges' (core.judging.judges), or both
SOURCES = ("chat", "api", "arena", "seed", "review")
KTO_GOOD_RATING = 4.0   # weighted mean rating at or above this: a desirable answer
KTO_BAD_RATING = 2.0    # at or below this: an undesirable one
KTO_GOOD_SCORE = 0.5    # feedback score at or above this: desirable

_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
FEATURES = {
    "preference": datasets.Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES}),
    "reward": datasets.Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES,
                                 "margin": datasets.Value("float64")}),
    "unpaired": datasets.Features({"prompt": _MESSAGES, "completion": _MESSAGES,
                                   "label": datasets.Value("bool")}),
    "sft": datasets.Features({"messages": _MESSAGES}),
}


# ----------------------------------------------------------------------------------------- filters

def prompt_key(prompt: list[dict[str, str]]) -> str:
    """Canonical JSON of a prompt conversation (roles and contents only)."""
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt], ensure_ascii=False)


def prompt_bucket(prompt: list[dict[str, str]]) -> int:
    """0..99, fixed for a prompt forever: the evaluation split is ``bucket < held-out percent``. All pairs of
    one prompt fall on the same side, and a pair never changes side as labels grow."""
    return int(hashlib.sha256(prompt_key(prompt).encode("utf-8")).hexdigest()[:8], 16) % 100


HELD_OUT_PERCENT = 20   # the evaluation split: prompts whose bucket is below this are held out of training jobs


def split_held_out(rows: list[dict[str, Any]], percent: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows whose prompt is outside the evaluation split, rows inside it)."""
    if not percent:
        return rows, []
    kept: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for row in rows:
        bucket = prompt_bucket(row["prompt"] if "prompt" in row else row["messages"][:-1])
        (kept if bucket >= percent else held).append(row)
    return kept, held


def drop_held_out(rows: list[dict[str, Any]], percent: int) -> tuple[list[dict[str, Any]], int]:
    """Rows whose prompt is outside the evaluation split, and how many were left out."""
    kept, held = split_held_out(rows, percent)
    return kept, len(held)


@dataclass
class Filters:
    """Which labels go into a training set. Empty tuples mean "no restriction"."""

    since: datetime | date | str | None = field(default=None, metadata={
        "help": "Only labels created at or after this time (naive times are UTC)."})
    until: datetime | date | str | None = field(default=None, metadata={
        "help": "Only labels created before this time (naive times are UTC)."})
    labelers: Sequence[str | int] = field(default=(), metadata={
        "help": "Only labels by these users (names or ids)."})
    policies: Sequence[str] = field(default=(), metadata={
        "help": "Only answers generated by these policy versions (names, e.g. base, v1)."})
    sources: Sequence[str] = field(default=(), metadata={
        "help": "Only labels from these sources: chat, api, arena, review, seed, import:<name>, import:*."})
    exclude_flags: Sequence[str] = field(default=("unsafe", "pii"), metadata={
        "help": "Drop votes flagged with any of these: unsafe, pii, off_topic."})
    label_kinds: str = field(default="human", metadata={
        "help": "Whose votes: human (people only, the default), ai (AI judges' labels only) or both. AI labels "
                "are never mixed in unless chosen here.", "choices": LABEL_KINDS})
    min_ai_confidence: float = field(default=0.0, metadata={
        "help": "AI labels: keep only verdicts the judge gave at least this confidence (0.5..1; ties are 0.5). "
                "Constitutional revisions carry no confidence and are not affected.",
        "min": 0.0, "max": 1.0})
    ai_weight: float = field(default=1.0, metadata={
        "help": "How much one AI label counts against one person's (0.5 = half, 2 = double). Preference and SFT rows "
                "from AI votes are thinned or repeated to this weight, by a fixed hash of the vote so a rebuild gives "
                "the same rows; in KTO labels an AI vote counts this much in the tally.", "min": 0.0, "max": 10.0})
    min_judge_calibration: int = field(default=20, metadata={
        "help": "AI judges' labels count once the judge has labeled at least this many pairs people voted on too "
                "(its agreement with them is on the Data page; calibrate with `launch.py judge --source labeled`).",
        "min": 0, "max": 100000})
    min_agreement: float | None = field(default=None, metadata={
        "help": "Keep only prompts where at least this share (0..1) of labelers gave the majority outcome; "
                "prompts labeled once are then dropped."})
    aspects: Sequence[str] = field(default=(), metadata={
        "help": "Rating aspects that count for margins and KTO labels (default: the active ones)."})
    hold_out_percent: int = field(default=0, metadata={
        "help": "Leave out the evaluation split: the prompts whose fixed hash bucket (0-99) is below this number, "
                "so accuracy is measured on unseen pairs (training jobs hold out 20 by default, evaluate on them "
                "while training and in the 'what changed' report). 0 = use every label.", "min": 0, "max": 99})

    def params(self, db: Database) -> dict[str, Any]:
        """Validate against the database and return the SQL parameters of :data:`_SIGNALS`."""
        since, until = _utc(self.since, "since"), _utc(self.until, "until")
        if since is not None and until is not None and since > until:
            raise ValidationError(f"since ({since.isoformat()}) is after until ({until.isoformat()})",
                                  hint="swap the two dates or widen the window")
        flags = _strings(self.exclude_flags, "exclude_flags")
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown:
            raise ValidationError(f"Unknown flag(s) {unknown}", hint=f"use {', '.join(FLAGS)}")
        sources = _strings(self.sources, "sources")
        for source in sources:
            if source not in SOURCES and not (source.startswith("import:") and len(source) > 7):
                raise ValidationError(f"Unknown source {source!r}",
                                      hint=f"use {', '.join(SOURCES)}, import:<name> or import:*")
        percent = self.hold_out_percent
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 99:
            raise ValidationError(f"hold_out_percent {percent!r} is not a whole number from 0 to 99",
                                  hint="use 20 to leave out the evaluation split, 0 to train on everything")
        agreement = self.min_agreement
        if agreement is not None and (isinstance(agreement, bool) or not isinstance(agreement, (int, float))
                                      or not 0.0 <= agreement <= 1.0):
            raise ValidationError(f"min_agreement {agreement!r} is not a number from 0 to 1",
                                  hint="use e.g. 0.66 (two of three labelers agree), or leave it empty")
        if self.label_kinds not in LABEL_KINDS:
            raise ValidationError(f"label_kinds {self.label_kinds!r} is not one of {', '.join(LABEL_KINDS)}",
                                  hint="human keeps people's votes only; ai the judges'; both mixes them")
        confidence = self.min_ai_confidence
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
            raise ValidationError(f"min_ai_confidence {confidence!r} is not a number from 0 to 1",
                                  hint="use e.g. 0.8, or 0 to keep every AI verdict")
        return {
            "since": since, "until": until,
            "label_kinds": self.label_kinds, "min_ai_confidence": float(confidence),
            "min_judge_calibration": _calibration(self.min_judge_calibration),
            "ai_weight": _ai_weight(self.ai_weight),
            "labeler_ids": _labeler_ids(db, self.labelers) or None,
            "policies": _policy_names(db, self.policies) or None,
            "sources": sources or None,
            "exclude_flags": flags or None,
            "min_agreement": None if agreement is None else float(agreement),
        }


def _ai_weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 10.0:
        raise ValidationError(f"ai_weight {value!r} is not a number from 0 to 10",
                              hint="use 1 to count AI labels like people's, 0.5 for half")
    return float(value)


def _copies(vote: dict[str, Any], weight: float) -> int:
    """How many times a vote's rows enter a set: once for people; ``weight`` on average for AI votes, the fraction
    decided by a fixed hash of the vote (the same rows on every rebuild)."""
    if not vote["ai"]:
        return 1
    whole = int(weight)
    draw = int(hashlib.sha256(f"ai-weight:{vote['id']}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return whole + (draw < weight - whole)


def _calibration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"min_judge_calibration {value!r} is not a whole number >= 0",
                              hint="use e.g. 20 shared items, or 0 to trust judges without calibration")
    return value


def _strings(values: Sequence[str] | str | None, name: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{name} must be a list of non-empty names, got {value!r}",
                                  hint=f"e.g. {name}=['...']")
        out.append(value.strip())
    return list(dict.fromkeys(out))


def _utc(value: datetime | date | str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(f"{name} {value!r} is not a date", hint="use ISO format, e.g. 2025-01-31 "
                                  "or 2025-01-31T12:00:00+00:00") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=timezone.utc)
    raise ValidationError(f"{name} must be a date or datetime, got {type(value).__name__}",
                          hint="pass a datetime, a date or an ISO string")


def _labeler_ids(db: Database, labelers: Sequence[str | int] | str | int | None) -> list[int]:
    if labelers is None:
        return []
    if isinstance(labelers, (str, int)):
        labelers = [labelers]
    users = db.query("SELECT id, name FROM users")
    by_name = {u["name"]: u["id"] for u in users}
    ids = set(by_name.values())
    out = []
    for labeler in labelers:
        if isinstance(labeler, bool):
            raise ValidationError(f"Unknown labeler {labeler!r}", hint="give a user name or id")
        if isinstance(labeler, str) and labeler.strip() in by_name:
            out.append(by_name[labeler.strip()])
        elif isinstance(labeler, int) and labeler in ids:
            out.append(labeler)
        elif isinstance(labeler, str) and labeler.strip().isdigit() and int(labeler) in ids:
            out.append(int(labeler))
        else:
            raise ValidationError(f"Unknown labeler {labeler!r}",
                                  hint=f"known labelers: {', '.join(sorted(by_name)) or 'none yet'}")
    return list(dict.fromkeys(out))


def _policy_names(db: Database, policies: Sequence[str] | str | None) -> list[str]:
    names = _strings(policies, "policies")
    known = {r["name"] for r in db.query("SELECT name FROM policies")}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValidationError(f"Unknown policy {unknown[0]!r}",
                              hint=f"known policies: {', '.join(sorted(known)) or 'none yet'}")
    return names


def resolve_aspect_weights(db: Database, filters: Filters | None = None,
                           override: dict[str, float] | None = None) -> dict[str, float]:
    """The weight of every aspect that counts: ``override`` or the ``aspects`` table (active ones),
    restricted to ``filters.aspects`` when given."""
    table = {r["name"]: (r["weight"], r["active"]) for r in db.query("SELECT name, weight, active FROM aspects")}
    wanted = _strings(filters.aspects if filters else (), "aspects")
    for name in [*wanted, *(override or {})]:
        if name not in table:
            raise ValidationError(f"Unknown aspect {name!r}", hint=f"known aspects: {', '.join(sorted(table))}")
    if override is not None:
        for name, weight in override.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValidationError(f"Weight of {name} must be a number ≥ 0, got {weight!r}",
                                      hint="use e.g. {'helpfulness': 2.0, 'honesty': 1.0}")
        weights = {name: float(w) for name, w in override.items()}
    else:
        weights = {name: w for name, (w, active) in table.items() if active}
    if wanted:
        weights = {name: weights.get(name, table[name][0]) for name in wanted}
    return weights


# ----------------------------------------------------------------------------------------- SQL
# Predicates on the named parameters produced by Filters.params. A NULL parameter means "no filter";
# coalesce(..., false) makes a missing value (no labeler, no policy) fail an active filter.

def _in_window(col: str) -> str:
    return f"(($since IS NULL OR {col} >= $since) AND ($until IS NULL OR {col} < $until))"


def _by_labeler(col: str) -> str:
    return f"($labeler_ids IS NULL OR coalesce(list_contains($labeler_ids, {col}), false))"


def _from_source(col: str) -> str:
    return (f"($sources IS NULL OR coalesce(list_contains($sources, {col}), false)"
            f" OR (list_contains($sources, 'import:*') AND {col} LIKE 'import:%'))")


def _by_policy(col: str) -> str:
    return f"($policies IS NULL OR coalesce(list_contains($policies, {col}), false))"


_VOTER_KIND = "coalesce(u.kind, 'human')"   # the voter's kind in the vote query (votes without labeler: people)


def _kind_ok(kind: str, confidence: str) -> str:
    """A vote of the chosen kind (people, AI judges, both); AI votes also need the minimum confidence."""
    return (f"(($label_kinds = 'both' OR {kind} = $label_kinds)"
            f" AND ({kind} <> 'ai' OR {confidence} IS NULL OR {confidence} >= $min_ai_confidence))")


def _lone_signal_ok(created_at: str, author: str, candidate: str) -> str:
    """Filters for a thumb, rating or gold edit given without a vote."""
    return (f"({_in_window(created_at)} AND {_by_labeler(author)} AND {_from_source(candidate + '.origin')}"
            f" AND $min_agreement::DOUBLE IS NULL)")


_SIGNALS = f"""
WITH
weights AS (
    SELECT unnest($aspect_names::VARCHAR[]) AS aspect, unnest($aspect_weights::DOUBLE[]) AS weight
),
-- the prompt of a chat answer: its conversation before its turn
history AS (
    SELECT c.id AS candidate_id,
           list({{'role': m.role, 'content': m.content}} ORDER BY m.turn) AS messages,
           bool_or(m.redacted_at IS NOT NULL) AS redacted
    FROM candidates c JOIN messages m ON m.conversation_id = c.conversation_id AND m.turn < c.turn
    GROUP BY c.id
),
cand AS (
    SELECT c.id, c.text, pol.name AS policy,
           CASE WHEN c.conversation_id IS NULL THEN 'api' ELSE coalesce(cv.source, 'chat') END AS origin,
           CASE WHEN c.conversation_id IS NOT NULL THEN h.messages
                WHEN pr.id IS NOT NULL THEN [{{'role': 'user', 'content': pr.text}}] END AS prompt,
           CASE WHEN c.redacted_at IS NOT NULL OR coalesce(h.redacted, false) OR pr.redacted_at IS NOT NULL
                     THEN 'redacted'
                WHEN prompt IS NULL OR len(prompt) = 0 OR prompt[-1].role <> 'user' THEN 'no_prompt'
           END AS problem
    FROM candidates c
    LEFT JOIN policies pol ON pol.id = c.policy_id
    LEFT JOIN history h ON h.candidate_id = c.id
    LEFT JOIN conversations cv ON cv.id = c.conversation_id
    LEFT JOIN prompts pr ON pr.id = coalesce(c.prompt_id, cv.prompt_id)
),
-- per AI judge: pairs it labeled that people voted on too (its calibration, see core.judging.runs)
judge_shared AS (
    SELECT j.labeler_id, count(DISTINCT j.candidate_a::VARCHAR || '-' || j.candidate_b::VARCHAR) AS shared
    FROM preferences j
    JOIN preferences h ON h.candidate_a = j.candidate_a AND h.candidate_b = j.candidate_b
                      AND h.retracted_at IS NULL AND h.redacted_at IS NULL AND h.source <> 'judge'
    LEFT JOIN users hu ON hu.id = h.labeler_id
    WHERE j.judge_run_id IS NOT NULL AND j.retracted_at IS NULL AND coalesce(hu.kind, 'human') = 'human'
    GROUP BY j.labeler_id
),
vote AS (
    SELECT p.id, p.outcome, p.labeler_id, p.created_at, a.prompt, to_json(a.prompt)::VARCHAR AS prompt_key,
           {_kind_ok(_VOTER_KIND, 'p.confidence')} AS kind_ok, {_VOTER_KIND} = 'ai' AS ai,
           a.id AS a_id, a.text AS a_text, b.id AS b_id, b.text AS b_text,
           CASE WHEN p.retracted_at IS NOT NULL THEN 'retracted'
                WHEN p.redacted_at IS NOT NULL OR a.problem = 'redacted' OR b.problem = 'redacted' THEN 'redacted'
                WHEN a.id IS NULL OR b.id IS NULL OR a.problem IS NOT NULL OR b.problem IS NOT NULL
                     THEN 'no_prompt'
           END AS invalid,
           CASE WHEN NOT {_in_window('p.created_at')} THEN 'date'
                WHEN NOT {_kind_ok(_VOTER_KIND, 'p.confidence')} THEN 'label_kind'
                WHEN p.judge_run_id IS NOT NULL AND coalesce(js.shared, 0) < $min_judge_calibration
                     THEN 'uncalibrated_judge'
                WHEN NOT {_by_labeler('p.labeler_id')} THEN 'labeler'
                WHEN NOT {_from_source('p.source')} THEN 'source'
                WHEN NOT ({_by_policy('a.policy')} AND {_by_policy('b.policy')}) THEN 'policy'
                WHEN $exclude_flags IS NOT NULL
                     AND len(list_intersect(coalesce(p.flags, []::VARCHAR[]), $exclude_flags)) > 0 THEN 'flagged'
           END AS filtered
    FROM preferences p
    LEFT JOIN users u ON u.id = p.labeler_id
    LEFT JOIN judge_shared js ON js.labeler_id = p.labeler_id
    LEFT JOIN cand a ON a.id = p.candidate_a
    LEFT JOIN cand b ON b.id = p.candidate_b
),
-- agreement per prompt text, over all live votes; each labeler's latest outcome counts once
latest_outcome AS (
    SELECT prompt_key, outcome FROM vote WHERE invalid IS NULL AND kind_ok
    QUALIFY row_number() OVER (PARTITION BY prompt_key, coalesce(labeler_id, -id)
                               ORDER BY created_at DESC, id DESC) = 1
),
outcome_count AS (SELECT prompt_key, outcome, count(*) AS n FROM latest_outcome GROUP BY ALL),
agreement AS (SELECT prompt_key, sum(n) AS labelers, max(n) AS top FROM outcome_count GROUP BY ALL),
judged AS (
    SELECT v.*, coalesce(v.invalid, v.filtered, CASE
               WHEN $min_agreement::DOUBLE IS NULL THEN NULL
               WHEN ag.labelers < 2 OR ag.top / ag.labelers < $min_agreement::DOUBLE THEN 'low_agreement'
               WHEN coalesce(oc.n, 0) < ag.top THEN 'minority'
           END) AS skip
    FROM vote v
    LEFT JOIN agreement ag ON ag.prompt_key = v.prompt_key
    LEFT JOIN outcome_count oc ON oc.prompt_key = v.prompt_key AND oc.outcome = v.outcome
),
kept AS (SELECT * FROM judged WHERE skip IS NULL),
-- the latest non-empty gold edit of each vote (or each lone edit)
gold AS (
    SELECT * FROM gold_answers WHERE trim(text) <> ''
    QUALIFY row_number() OVER (PARTITION BY coalesce(preference_id, -id) ORDER BY created_at DESC, id DESC) = 1
),
vote_gold AS (SELECT g.preference_id, g.text FROM gold g JOIN kept k ON k.id = g.preference_id),
lone_gold AS (
    SELECT g.id, c.prompt, g.text,
           CASE WHEN c.id IS NULL OR c.problem = 'no_prompt' THEN 'no_prompt'
                WHEN c.problem IS NOT NULL THEN c.problem
                WHEN NOT {_in_window('g.created_at')} THEN 'date'
                WHEN NOT {_by_labeler('g.user_id')} THEN 'labeler'
                WHEN NOT {_from_source('c.origin')} THEN 'source'
                WHEN NOT {_by_policy('c.policy')} THEN 'policy'
                WHEN $min_agreement::DOUBLE IS NOT NULL THEN 'low_agreement'
           END AS skip
    FROM gold g LEFT JOIN cand c ON c.id = g.candidate_id
    WHERE g.preference_id IS NULL
),
rating AS (
    SELECT r.candidate_id, r.aspect, r.score
    FROM ratings r LEFT JOIN kept k ON k.id = r.preference_id LEFT JOIN cand c ON c.id = r.candidate_id
    WHERE CASE WHEN r.preference_id IS NOT NULL THEN k.id IS NOT NULL
               ELSE {_lone_signal_ok('r.created_at', 'r.user_id', 'c')} END
),
score AS (   -- per aspect the mean over raters, then the weighted mean over aspects
    SELECT m.candidate_id, sum(w.weight * m.mean) / sum(w.weight) AS score
    FROM (SELECT candidate_id, aspect, avg(score) AS mean FROM rating GROUP BY ALL) m
    JOIN weights w ON w.aspect = m.aspect
    WHERE w.weight > 0
    GROUP BY m.candidate_id
),
thumb AS (
    SELECT t.candidate_id, count(*) FILTER (WHERE t.up) AS up, count(*) FILTER (WHERE NOT t.up) AS down
    FROM thumbs t LEFT JOIN kept k ON k.id = t.preference_id LEFT JOIN cand c ON c.id = t.candidate_id
    WHERE CASE WHEN t.preference_id IS NOT NULL THEN k.id IS NOT NULL
               ELSE {_lone_signal_ok('t.created_at', 't.user_id', 'c')} END
    GROUP BY t.candidate_id
),
vote_label AS (   -- per answer: how many kept votes called it good / bad (ties say neither)
    SELECT candidate_id, sum(good * w) AS good, sum(bad * w) AS bad FROM (
        SELECT a_id AS candidate_id, (outcome = 'a')::INT AS good, (outcome IN ('b', 'both_bad'))::INT AS bad,
               CASE WHEN ai THEN $ai_weight ELSE 1.0 END AS w
        FROM kept WHERE outcome <> 'tie'
        UNION ALL
        SELECT b_id, (outcome = 'b')::INT, (outcome IN ('a', 'both_bad'))::INT, CASE WHEN ai THEN $ai_weight ELSE 1.0 END
        FROM kept WHERE outcome <> 'tie'
    ) GROUP BY candidate_id
)
"""

_VOTES = _SIGNALS + """
SELECT j.id, j.skip, j.outcome, j.prompt, j.a_text, j.b_text, sa.score AS a_score, sb.score AS b_score,
       vg.text AS gold, j.ai
FROM judged j
LEFT JOIN score sa ON sa.candidate_id = j.a_id
LEFT JOIN score sb ON sb.candidate_id = j.b_id
LEFT JOIN vote_gold vg ON vg.preference_id = j.id
ORDER BY j.created_at, j.id
"""

_LONE_GOLD = _SIGNALS + "SELECT id, skip, prompt, text FROM lone_gold ORDER BY id"

_ANSWER_LABELS = _SIGNALS + f"""
SELECT c.id, c.prompt, c.text, coalesce(t.up, 0) AS up, coalesce(t.down, 0) AS down,
       coalesce(v.good, 0) AS good, coalesce(v.bad, 0) AS bad, s.score,
       CASE WHEN c.problem IS NOT NULL THEN c.problem WHEN NOT {_by_policy('c.policy')} THEN 'policy' END AS skip
FROM cand c
LEFT JOIN thumb t ON t.candidate_id = c.id
LEFT JOIN vote_label v ON v.candidate_id = c.id
LEFT JOIN score s ON s.candidate_id = c.id
WHERE t.candidate_id IS NOT NULL OR v.candidate_id IS NOT NULL OR s.candidate_id IS NOT NULL
ORDER BY c.id
"""

_FEEDBACK = _SIGNALS + f"""
SELECT f.id, f.prompt, f.response, f.score,
       CASE WHEN NOT {_in_window('f.created_at')} THEN 'date'
            WHEN NOT {_by_labeler('f.labeler_id')} THEN 'labeler'
            WHEN NOT {_from_source('f.source')} THEN 'source'
            WHEN $policies IS NOT NULL THEN 'policy'
            WHEN $min_agreement::DOUBLE IS NOT NULL THEN 'low_agreement'
       END AS skip
FROM feedback f
ORDER BY f.created_at, f.id
"""


def _params(db: Database, filters: Filters | None,
            aspect_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Validated SQL parameters for the queries below (raises ValidationError on bad filters)."""
    filters = filters if filters is not None else Filters()
    weights = resolve_aspect_weights(db, filters, aspect_weights)
    return filters.params(db) | {"aspect_names": list(weights), "aspect_weights": list(weights.values())}


# ----------------------------------------------------------------------------------------- results

class Rows(NamedTuple):
    rows: list[dict[str, Any]]
    stats: dict[str, Any]


class Built(NamedTuple):
    dataset: datasets.Dataset
    stats: dict[str, Any]


def to_dataset(kind: str, rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows of one builder as a Dataset with a fixed schema (also when there are no rows)."""
    features = FEATURES[kind]
    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features},
                                      features=features)


def _stats(rows: list[dict[str, Any]], skipped: Counter) -> dict[str, Any]:
    return {"rows": len(rows), "skipped": dict(sorted(skipped.items()))}


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _same(x: str | None, y: str | None) -> bool:
    return x is not None and y is not None and x.strip() == y.strip()


# ----------------------------------------------------------------------------------------- builders

def preference_rows(db: Database, filters: Filters | None = None, *, margin_from_ratings: bool = False,
                    aspect_weights: dict[str, float] | None = None) -> Rows:
    """``prompt/chosen/rejected`` rows (plus ``margin`` when ``margin_from_ratings``)."""
    params = _params(db, filters, aspect_weights)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()

    def pair(vote: dict, chosen: str, rejected: str, chosen_score=None, rejected_score=None) -> None:
        if _same(chosen, rejected):
            skipped["identical_answers"] += 1
            return
        row = {"prompt": vote["prompt"], "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        if margin_from_ratings:
            both_rated = chosen_score is not None and rejected_score is not None
            row["margin"] = max(0.0, chosen_score - rejected_score) if both_rated else 0.0
        rows.append(row)

    for vote in db.query(_VOTES, params):
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        copies = _copies(vote, params["ai_weight"])
        if not copies:
            skipped["ai_weight"] += 1
            continue
        first = len(rows)
        _vote_pairs(vote, pair, skipped)
        rows.extend(rows[first:] * (copies - 1))
    return Rows(rows, _stats(rows, skipped))


def _vote_pairs(vote: dict[str, Any], pair: Callable[..., None], skipped: Counter) -> None:
    """The preference pairs one vote gives (see the README table "Labels -> training data")."""
    outcome, gold = vote["outcome"], vote["gold"]
    if outcome in ("a", "b"):
        won, lost = ("a", "b") if outcome == "a" else ("b", "a")
        pair(vote, vote[f"{won}_text"], vote[f"{lost}_text"], vote[f"{won}_score"], vote[f"{lost}_score"])
        if gold is not None and not _same(gold, vote[f"{won}_text"]):
            pair(vote, gold, vote[f"{lost}_text"])
    elif outcome == "both_bad" and gold is not None:
        pair(vote, gold, vote["a_text"])
        pair(vote, gold, vote["b_text"])
    else:
        skipped["tie" if outcome == "tie" else "both_bad_without_gold"] += 1


def build_preference(db: Database, filters: Filters | None = None) -> Built:
    """Conversational preference dataset (``prompt``, ``chosen``, ``rejected``) for DPO and friends."""
    rows, stats = preference_rows(db, filters)
    return Built(to_dataset("preference", rows), stats)


def build_reward(db: Database, filters: Filters | None = None, margin_from_ratings: bool = False,
                 aspect_weights: dict[str, float] | None = None) -> Built:
    """Preference dataset for RewardTrainer; with ``margin_from_ratings`` a ``margin`` column holds the
    weighted rating gap chosen − rejected (≥ 0; 0.0 when either answer is unrated)."""
    rows, stats = preference_rows(db, filters, margin_from_ratings=margin_from_ratings,
                                  aspect_weights=aspect_weights)
    return Built(to_dataset("reward" if margin_from_ratings else "preference", rows), stats)


def _answer_label(answer: dict[str, Any], use_ratings: bool) -> bool | None:
    """Thumbs win, then votes, then ratings; a level with as many good as bad signals defers."""
    for good, bad in ((answer["up"], answer["down"]), (answer["good"], answer["bad"])):
        if good != bad:
            return good > bad
    score = answer["score"] if use_ratings else None
    if score is not None and score >= KTO_GOOD_RATING:
        return True
    if score is not None and score <= KTO_BAD_RATING:
        return False
    return None


def unpaired_rows(db: Database, filters: Filters | None = None, *, use_ratings: bool = True,
                  include_feedback: bool = True, aspect_weights: dict[str, float] | None = None) -> Rows:
    """KTO ``prompt/completion/label`` rows: labeled answers, then gold edits, then ``feedback`` rows."""
    params = _params(db, filters, aspect_weights)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()

    for answer in db.query(_ANSWER_LABELS, params):
        label = None if answer["skip"] else _answer_label(answer, use_ratings)
        if label is None:
            skipped[answer["skip"] or "no_clear_label"] += 1
            continue
        rows.append({"prompt": answer["prompt"], "completion": _assistant(answer["text"]), "label": label})

    for vote in db.query(_VOTES, params):   # votes labeled their answers above; here: stats and gold edits
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        if vote["outcome"] == "tie":
            skipped["tie"] += 1
        gold = vote["gold"]
        if gold is not None and not (_same(gold, vote["a_text"]) or _same(gold, vote["b_text"])):
            rows.append({"prompt": vote["prompt"], "completion": _assistant(gold), "label": True})
    for gold in db.query(_LONE_GOLD, params):
        if gold["skip"]:
            skipped[gold["skip"]] += 1
        else:
            rows.append({"prompt": gold["prompt"], "completion": _assistant(gold["text"]), "label": True})

    if include_feedback:
        for fb in db.query(_FEEDBACK, params):
            if fb["skip"]:
                skipped[fb["skip"]] += 1
            else:
                rows.append({"prompt": _user(fb["prompt"]), "completion": _assistant(fb["response"]),
                             "label": fb["score"] >= KTO_GOOD_SCORE})
    return Rows(rows, _stats(rows, skipped))


def build_unpaired(db: Database, filters: Filters | None = None, *, use_ratings: bool = True,
                   include_feedback: bool = True, aspect_weights: dict[str, float] | None = None) -> Built:
    """Unpaired preference dataset (``prompt``, ``completion``, ``label``) for KTO / BCO."""
    rows, stats = unpaired_rows(db, filters, use_ratings=use_ratings, include_feedback=include_feedback,
                                aspect_weights=aspect_weights)
    return Built(to_dataset("unpaired", rows), stats)


def sft_rows(db: Database, filters: Filters | None = None, *, only_gold: bool = False) -> Rows:
    """``messages`` rows: prompt + the answer it should be (gold edit, else the picked answer)."""
    params = _params(db, filters)
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for vote in db.query(_VOTES, params):
        if vote["skip"]:
            skipped[vote["skip"]] += 1
            continue
        answer = vote["gold"]
        if answer is None and not only_gold and vote["outcome"] in ("a", "b"):
            answer = vote[f"{vote['outcome']}_text"]
        if answer is None:
            skipped[{"tie": "tie", "both_bad": "both_bad_without_gold"}.get(vote["outcome"], "no_gold")] += 1
            continue
        copies = _copies(vote, params["ai_weight"])
        if not copies:
            skipped["ai_weight"] += 1
        rows.extend({"messages": vote["prompt"] + _assistant(answer)} for _ in range(copies))
    for gold in db.query(_LONE_GOLD, params):
        if gold["skip"]:
            skipped[gold["skip"]] += 1
        else:
            rows.append({"messages": gold["prompt"] + _assistant(gold["text"])})
    return Rows(rows, _stats(rows, skipped))


def build_sft(db: Database, filters: Filters | None = None, *, only_gold: bool = False) -> Built:
    """Conversational language-modeling dataset (``messages``) for SFT."""
    rows, stats = sft_rows(db, filters, only_gold=only_gold)
    return Built(to_dataset("sft", rows), stats)



def filter_choices(db: Database) -> dict[str, list[str]]:
    """What the console's filter form offers: labelers, live versions, flags and aspects by name."""
    return {"labelers": [r["name"] for r in db.query("SELECT name FROM users ORDER BY name")],
            "policies": [r["name"] for r in db.query("SELECT name FROM policies WHERE deleted_at IS NULL ORDER BY id")],
            "exclude_flags": list(FLAGS),
            "aspects": [r["name"] for r in db.query("SELECT name FROM aspects ORDER BY position")]}


def filters_from_dict(values: dict[str, Any] | None) -> Filters:
    """Filters from JSON (API, CLI, job configs); unknown keys are an error, not silently ignored."""
    values = dict(values or {})
    known = {f.name for f in dataclass_fields(Filters)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValidationError(f"Unknown data filter(s): {', '.join(unknown)}",
                              hint=f"known filters: {', '.join(sorted(known))}")
    for name in ("labelers", "policies", "sources", "exclude_flags", "aspects"):
        if isinstance(values.get(name), str):
            values[name] = tuple(v.strip() for v in values[name].split(",") if v.strip())
        elif isinstance(values.get(name), (list, tuple)):
            values[name] = tuple(values[name])
        elif values.get(name) is not None:
            raise ValidationError(f"Data filter {name!r} must be a list (or a comma-separated string), not "
                                  f"{type(values[name]).__name__}", hint=f'e.g. "{name}": ["a", "b"]')
    return Filters(**values)
