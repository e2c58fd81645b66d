"""Labeling analytics: what has been collected, by whom, and how far labelers agree.

Pure functions over the database; each returns a pandas DataFrame (or a dict) that the console page
plots as it is. Everything here only counts *live* labels:

* a preference is live when it was not undone (``retracted_at``), not redacted (``redacted_at``), and
  neither its prompt, its candidates nor a user message before it were redacted;
* ratings, thumbs and gold edits are live when their candidate is not redacted and, when they were
  given with a preference, that preference is live.

Overlapping items
-----------------
Agreement needs the same item labeled by several people. The item of a vote is its prompt:

* ``prompt:<id>``: a prompt served from a queue (``prompts.queue_id`` set; found through the vote's,
  the candidates' or the conversation's ``prompt_id``), for the first exchange of the conversation;
* ``text:<user turns>``: otherwise the user messages before the voted turn (whitespace collapsed,
  joined with `` | ``), or the prompt text of a pair sent without a conversation (API, import). For a
  first turn that is just the prompt text, so the same question asked in two free chats, or sent twice
  through the API, is one item. Using *all* user turns and not only the last one keeps follow-ups
  such as "Why?" in unrelated conversations apart;
* ``preference:<id>``: when none of that is known (the item overlaps with nothing).

A queued prompt and a free chat with the same text are different items: a queue prompt is identified
by its id (its text may be edited or redacted on its own).

Units and values per measure (``units`` = unit -> {labeler id -> value}, see core.labeling.agreement):

* **outcome** (nominal, values a/b/tie/both_bad): unit = item. When two labelers saw the *same two answers*
  (same texts, surrounding whitespace aside) in swapped positions, outcomes are mapped onto the orientation of
  the first vote on the item (a <-> b), so "both chose the same answer" counts as agreement. A labeler who
  voted on an item twice counts with their latest vote. (The outcome *distribution* counts the clicks as made,
  by position, so position bias stays visible.)
* **each aspect** (ordinal, values 1..5): ratings are per answer, so the soundest unit is the answer itself:
  ``candidate:<id>`` when at least two labelers rated that candidate (or the same answer text, surrounding
  whitespace aside, on the same item). When every labeler got freshly generated answers (the usual queue
  setup) no answer is shared, and the unit falls back to ``<item>|<side>`` (the answer shown as A, resp. B,
  for that prompt). That fallback compares ratings of *different* answers to the same prompt, so answer
  variation adds to apparent disagreement: read it as a lower bound on rater agreement. Latest rating wins
  when a labeler rated one unit twice; scores outside 1..5 are ignored.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pandas as pd

from core.labeling.agreement import agreement_by_labeler_pair, agreement_summary, clean_units
from storage.db import Database

OUTCOMES = ("a", "b", "tie", "both_bad")
SCORES = (1, 2, 3, 4, 5)
OUTCOME_MEASURE = "outcome"
ANONYMOUS = "(anonymous)"


# ----------------------------------------------------------------------------- live rows (SQL)

_NORMALIZE = "regexp_replace(trim({}), '\\s+', ' ', 'g')"

_LIVE = f"""
WITH pref_ctx AS (
    SELECT p.id, p.conversation_id, p.candidate_a, p.candidate_b, p.outcome, p.labeler_id, p.source,
           p.note, p.flags, p.created_at, p.retracted_at, p.redacted_at,
           coalesce(p.prompt_id, ca.prompt_id, cb.prompt_id, conv.prompt_id) AS item_prompt_id,
           coalesce(p.conversation_id, ca.conversation_id) AS item_conversation_id,
           coalesce(p.turn, ca.turn) AS item_turn,
           ca.text AS answer_a, cb.text AS answer_b,
           (ca.redacted_at IS NOT NULL OR cb.redacted_at IS NOT NULL) AS candidate_redacted
    FROM preferences p
    LEFT JOIN candidates ca ON ca.id = p.candidate_a
    LEFT JOIN candidates cb ON cb.id = p.candidate_b
    LEFT JOIN conversations conv ON conv.id = coalesce(p.conversation_id, ca.conversation_id)
    WHERE p.source <> 'judge'   -- AI judges' labels have their own section (core.judging.runs), not people's stats
), pref_history AS (
    -- the user messages before the voted turn: the last one is the prompt, all of them the context
    SELECT pc.id, count(m.id) AS user_turns, arg_max(m.content, m.turn) AS last_user_text,
           string_agg({_NORMALIZE.format("m.content")}, ' | ' ORDER BY m.turn) AS user_history,
           coalesce(bool_or(m.redacted_at IS NOT NULL), FALSE) AS history_redacted
    FROM pref_ctx pc
    LEFT JOIN messages m ON m.conversation_id = pc.item_conversation_id AND m.role = 'user'
                        AND (pc.item_turn IS NULL OR m.turn < pc.item_turn)
    GROUP BY pc.id
), live_prefs AS (
    SELECT pc.id, pc.conversation_id, pc.candidate_a, pc.candidate_b, pc.outcome, pc.labeler_id,
           pc.source, pc.note, pc.flags, pc.created_at, pc.item_prompt_id AS prompt_id,
           pc.answer_a, pc.answer_b, coalesce(h.last_user_text, pr.text) AS prompt,
           CASE WHEN pr.queue_id IS NOT NULL AND h.user_turns <= 1 THEN 'prompt:' || pr.id
                WHEN h.user_turns > 0 THEN 'text:' || h.user_history
                WHEN pr.text IS NOT NULL THEN 'text:' || {_NORMALIZE.format("pr.text")}
                ELSE 'preference:' || pc.id END AS item_key
    FROM pref_ctx pc
    JOIN pref_history h ON h.id = pc.id
    LEFT JOIN prompts pr ON pr.id = pc.item_prompt_id
    WHERE pc.retracted_at IS NULL AND pc.redacted_at IS NULL AND NOT pc.candidate_redacted
      AND pr.redacted_at IS NULL AND NOT h.history_redacted
), live_candidates AS (
    SELECT c.* FROM candidates c LEFT JOIN prompts cp ON cp.id = c.prompt_id
    WHERE c.redacted_at IS NULL AND cp.redacted_at IS NULL
), rated_answers AS MATERIALIZED (
    -- each rated answer's text hashed once, not once per rating (an answer has a rating per aspect); the hash only
    -- tells the same answer apart from another (a regular-expression normalization took 60 ms at 10k votes)
    SELECT c.id, CASE WHEN trim(c.text) <> '' THEN hash(trim(c.text)) END AS answer FROM live_candidates c
    WHERE c.id IN (SELECT candidate_id FROM ratings)
), live_ratings AS (
    SELECT r.id, r.candidate_id, r.aspect, r.score, r.created_at, r.preference_id,
           coalesce(r.user_id, lp.labeler_id) AS labeler_id, lp.item_key, c.answer,
           CASE WHEN r.candidate_id = lp.candidate_a THEN 'a'
                WHEN r.candidate_id = lp.candidate_b THEN 'b' END AS side
    FROM ratings r
    JOIN rated_answers c ON c.id = r.candidate_id
    LEFT JOIN live_prefs lp ON lp.id = r.preference_id
    WHERE r.preference_id IS NULL OR lp.id IS NOT NULL
), live_thumbs AS (
    SELECT t.* FROM thumbs t
    JOIN live_candidates c ON c.id = t.candidate_id
    LEFT JOIN live_prefs lp ON lp.id = t.preference_id
    WHERE t.preference_id IS NULL OR lp.id IS NOT NULL
), live_gold AS (
    SELECT g.* FROM gold_answers g
    LEFT JOIN candidates c ON c.id = g.candidate_id
    LEFT JOIN prompts cp ON cp.id = c.prompt_id
    LEFT JOIN live_prefs lp ON lp.id = g.preference_id
    WHERE c.redacted_at IS NULL AND cp.redacted_at IS NULL AND (g.preference_id IS NULL OR lp.id IS NOT NULL)
)
"""


def _query(db: Database, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return db.query(_LIVE + sql, list(params))


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A DataFrame with these columns even when there are no rows (so the page never KeyErrors)."""
    return pd.DataFrame(rows, columns=columns)


def _labeler_names(db: Database) -> dict[Any, str]:
    return {row["id"]: row["name"] for row in db.query("SELECT id, name FROM users")}


def _name(names: dict[Any, str], labeler_id: Any) -> str:
    if labeler_id is None:
        return ANONYMOUS
    return names.get(labeler_id, f"user {labeler_id}")


# ----------------------------------------------------------------------------- cache key

# Every table the label analytics, the label signature and the training suggestion read. Rows are only added or
# deleted, except for the updates counted separately below (undo, redaction, aspects, versions renamed or deleted);
# every redaction and undo also adds an audit_log row.
_LABEL_TABLES = (
    "preferences",
    "candidates",
    "prompts",
    "messages",
    "conversations",
    "ratings",
    "thumbs",
    "gold_answers",
    "users",
    "feedback",
    "policies",
    "audit_log",
    "aspects",
)
_FINGERPRINT = (
    "SELECT "
    + ", ".join(f"(SELECT count(*) || '.' || coalesce(max(rowid), -1) FROM {table})" for table in _LABEL_TABLES)
    + """,
    (SELECT count(retracted_at) || '.' || count(redacted_at) FROM preferences),
    (SELECT string_agg(name || active || weight || position, ',' ORDER BY name) FROM aspects),
    (SELECT string_agg(name || coalesce(CAST(deleted_at AS VARCHAR), ''), ',' ORDER BY id) FROM policies),
    current_date"""
)


def labels_fingerprint(db: Database) -> str:
    """Changes whenever the labels change (a vote, an undo, a redaction, an import, an aspect or version edit) or
    the day does ("today" counts): the cache key of the console's label analytics, so a page computes them once
    per change instead of on every rerun and never shows them stale. ~10 ms at 10k votes.

    Not a count of the database's commits: the chain worker, job progress and sign-ins write all the time, and
    none of that changes a chart."""
    row = db.cursor().execute(_FINGERPRINT).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    return "/".join(map(str, row))


# ----------------------------------------------------------------------------- counts


def summary(db: Database) -> dict[str, int]:
    """Headline numbers for the metrics row (live rows only, except ``retracted``)."""
    row = _query(
        db,
        """
        , shared_items AS (SELECT item_key FROM live_prefs GROUP BY item_key HAVING count(DISTINCT labeler_id) >= 2)
        SELECT votes.*,   -- one scan of the live votes for their three counts (they were three subqueries)
               (SELECT count(*) FROM live_ratings) AS ratings,
               (SELECT count(*) FROM live_thumbs) AS thumbs,
               (SELECT count(*) FROM live_gold) AS gold_edits,
               (SELECT count(*) FROM shared_items) AS overlapping_items,
               (SELECT count(*) FROM preferences WHERE retracted_at IS NOT NULL) AS retracted,
               (SELECT count(*) FROM feedback) AS scored_feedback
        FROM (SELECT count(*) AS votes, count(*) FILTER (WHERE CAST(created_at AS DATE) = current_date) AS votes_today,
                     count(DISTINCT labeler_id) AS labelers FROM live_prefs) votes
    """,
    )[0]
    return {key: int(value or 0) for key, value in row.items()}


def counts_over_time(db: Database) -> pd.DataFrame:
    """One row per day (every day from the first to the last activity, zeros included):
    ``day, votes, ratings, gold_edits, thumbs``."""
    columns = ["day", "votes", "ratings", "gold_edits", "thumbs"]
    rows = _query(
        db,
        """
        SELECT day, kind, count(*) AS n FROM (
            SELECT CAST(created_at AS DATE) AS day, 'votes' AS kind FROM live_prefs
            UNION ALL SELECT CAST(created_at AS DATE), 'ratings' FROM live_ratings
            UNION ALL SELECT CAST(created_at AS DATE), 'gold_edits' FROM live_gold
            UNION ALL SELECT CAST(created_at AS DATE), 'thumbs' FROM live_thumbs
        ) GROUP BY day, kind ORDER BY day
    """,
    )
    if not rows:
        return _frame([], columns)
    counts = pd.DataFrame(rows).pivot_table(index="day", columns="kind", values="n", aggfunc="sum", fill_value=0)
    days = pd.date_range(min(counts.index), max(counts.index), freq="D").date
    counts = counts.reindex(days, fill_value=0).reindex(columns=columns[1:], fill_value=0)
    counts.index.name = "day"
    return counts.astype(int).reset_index()


def labeler_stats(db: Database) -> pd.DataFrame:
    """One row per labeler with any live activity, most votes first:
    ``labeler_id, labeler, votes, today, a, b, tie, both_bad, tie_share, both_bad_share, ratings,
    last_active`` (shares are of that labeler's votes; NaN without votes)."""
    columns = [
        "labeler_id",
        "labeler",
        "votes",
        "today",
        *OUTCOMES,
        "tie_share",
        "both_bad_share",
        "ratings",
        "last_active",
    ]
    rows = _query(
        db,
        """
        SELECT labeler_id,
               sum(vote) AS votes,
               count(*) FILTER (WHERE vote = 1 AND CAST(created_at AS DATE) = current_date) AS today,
               count(*) FILTER (WHERE outcome = 'a') AS a,
               count(*) FILTER (WHERE outcome = 'b') AS b,
               count(*) FILTER (WHERE outcome = 'tie') AS tie,
               count(*) FILTER (WHERE outcome = 'both_bad') AS both_bad,
               sum(rating) AS ratings,
               max(created_at) AS last_active
        FROM (
            SELECT labeler_id, created_at, outcome, 1 AS vote, 0 AS rating FROM live_prefs
            UNION ALL SELECT labeler_id, created_at, NULL, 0, 1 FROM live_ratings
            UNION ALL SELECT user_id, created_at, NULL, 0, 0 FROM live_thumbs
            UNION ALL SELECT user_id, created_at, NULL, 0, 0 FROM live_gold
        ) GROUP BY labeler_id
        ORDER BY votes DESC, last_active DESC
    """,
    )
    if not rows:
        return _frame([], columns)
    names = _labeler_names(db)
    frame = pd.DataFrame(rows)
    frame["labeler"] = [_name(names, i) for i in frame["labeler_id"]]
    for column in ("votes", "today", *OUTCOMES, "ratings"):
        frame[column] = frame[column].astype(int)
    votes = frame["votes"].where(frame["votes"] > 0)
    frame["tie_share"] = frame["tie"] / votes
    frame["both_bad_share"] = frame["both_bad"] / votes
    return frame[columns]


def aspect_distributions(db: Database) -> pd.DataFrame:
    """Long table ``aspect, score, count`` with every score 1..5 for every active or used aspect
    (zeros included), aspects in their configured order. Scores are rounded to the nearest integer."""
    aspects = [r["name"] for r in db.query("SELECT name FROM aspects WHERE active ORDER BY position, name")]
    rows = _query(
        db,
        """
        SELECT aspect, CAST(round(score) AS INTEGER) AS score, count(*) AS n FROM live_ratings
        WHERE round(score) BETWEEN 1 AND 5 GROUP BY ALL
    """,
    )
    counts = {(r["aspect"], r["score"]): r["n"] for r in rows}
    aspects += sorted({a for a, _ in counts} - set(aspects))
    return _frame(
        [{"aspect": a, "score": s, "count": int(counts.get((a, s), 0))} for a in aspects for s in SCORES],
        ["aspect", "score", "count"],
    )


def outcome_distribution(db: Database) -> pd.DataFrame:
    """``outcome, count, share`` for a, b, tie, both_bad (always four rows; share NaN when no votes)."""
    counts = {r["outcome"]: r["n"] for r in _query(db, "SELECT outcome, count(*) AS n FROM live_prefs GROUP BY 1")}
    frame = _frame([{"outcome": o, "count": int(counts.get(o, 0))} for o in OUTCOMES], ["outcome", "count"])
    total = frame["count"].sum()
    frame["share"] = frame["count"] / total if total else float("nan")
    return frame


# ----------------------------------------------------------------------------- agreement


def outcome_units(db: Database) -> dict[str, dict[Any, str]]:
    """item key -> {labeler id -> outcome}, oriented as described in the module docstring (in SQL: the answers are
    compared by a hash of their trimmed text, and only three small columns per vote reach Python)."""
    rows = (
        db.cursor()
        .execute(
            _LIVE
            + """
    , answered AS (
        SELECT id, item_key, labeler_id, outcome,
               CASE WHEN trim(answer_a) <> '' THEN hash(trim(answer_a)) END AS a,
               CASE WHEN trim(answer_b) <> '' THEN hash(trim(answer_b)) END AS b
        FROM live_prefs WHERE labeler_id IS NOT NULL
    ), oriented AS (
        SELECT *, first_value(a) OVER (PARTITION BY item_key ORDER BY id) AS first_a,
                  first_value(b) OVER (PARTITION BY item_key ORDER BY id) AS first_b
        FROM answered
    )
    SELECT item_key, labeler_id,
           CASE WHEN a <> b AND a = first_b AND b = first_a AND outcome IN ('a', 'b')
                THEN CASE outcome WHEN 'a' THEN 'b' ELSE 'a' END ELSE outcome END AS outcome
    FROM oriented ORDER BY id
    """
        )
        .fetchall()
    )
    units: dict[str, dict[Any, str]] = defaultdict(dict)
    for item_key, labeler_id, outcome in rows:
        units[item_key][labeler_id] = outcome  # ordered by id: the latest vote wins
    return dict(units)


def rating_units(db: Database) -> dict[str, dict[str, dict[Any, int]]]:
    """aspect -> unit key -> {labeler id -> score 1..5}; units as described in the module docstring. The units are
    found in SQL (window functions), so only four small columns per rating reach Python."""
    rows = (
        db.cursor()
        .execute(
            _LIVE
            + """
    , rated AS (
        -- one answer = one candidate, or the same text answering the same item (e.g. a pair sent twice via API)
        SELECT id, aspect, labeler_id, item_key, side, CAST(round(score) AS INTEGER) AS score,
               CASE WHEN item_key <> '' AND answer IS NOT NULL
                    THEN first_value(candidate_id) OVER (PARTITION BY item_key, answer ORDER BY id)
                    ELSE candidate_id END AS answer_id
        FROM live_ratings WHERE labeler_id IS NOT NULL AND round(score) BETWEEN 1 AND 5
    ), counted AS (
        SELECT *, count(DISTINCT labeler_id) OVER (PARTITION BY aspect, answer_id) AS raters FROM rated
    )
    SELECT aspect, labeler_id, score,
           CASE WHEN raters < 2 AND item_key <> '' AND side IS NOT NULL THEN item_key || '|' || side
                ELSE 'candidate:' || answer_id END AS unit
    FROM counted ORDER BY id
    """
        )
        .fetchall()
    )
    units: dict[str, dict[str, dict[Any, int]]] = defaultdict(lambda: defaultdict(dict))
    for aspect, labeler_id, score, unit in rows:
        units[aspect][unit][labeler_id] = score  # ordered by id: latest wins
    return {aspect: dict(by_unit) for aspect, by_unit in units.items()}


def agreement_units(
    db: Database,
    outcomes: dict[str, dict[Any, str]] | None = None,
    ratings: dict[str, dict[str, dict[Any, int]]] | None = None,
) -> dict[str, dict]:
    """``{"outcome": units, <aspect>: units, ...}``, outcome first, then aspects in configured order. ``outcomes``
    and ``ratings``: :func:`outcome_units` and :func:`rating_units` when the caller read them (concurrently)."""
    by_aspect = rating_units(db) if ratings is None else ratings
    order = [r["name"] for r in db.query("SELECT name FROM aspects ORDER BY position, name")]
    aspects = [a for a in order if a in by_aspect] + sorted(set(by_aspect) - set(order))
    # checked once here, not again by each measure and heatmap computed from them
    outcomes = outcome_units(db) if outcomes is None else outcomes
    return {OUTCOME_MEASURE: clean_units(outcomes), **{a: clean_units(by_aspect[a]) for a in aspects}}


def agreement_table(db: Database, units: dict[str, dict] | None = None) -> pd.DataFrame:
    """Per measure (outcome, then each rated aspect): ``measure, level, overlapping_items, labels,
    pairwise_agreement, alpha``. ``overlapping_items`` counts units with at least two labelers and
    ``labels`` the labels on them; agreement and alpha are NaN where undefined. ``units``: the
    :func:`agreement_units` already read (the Data page reads them once for this table and the heatmap)."""
    columns = ["measure", "level", "overlapping_items", "labels", "pairwise_agreement", "alpha"]
    units = agreement_units(db) if units is None else units
    levels = {m: ("nominal" if m == OUTCOME_MEASURE else "ordinal") for m in units}
    values = {m: (list(OUTCOMES) if m == OUTCOME_MEASURE else list(SCORES)) for m in units}
    rows = [
        {
            "measure": r["aspect"],
            "level": r["level"],
            "overlapping_items": r["multi_labeled_items"],
            "labels": r["pairable_values"],
            "pairwise_agreement": r["pairwise_agreement"],
            "alpha": r["alpha"],
        }
        for r in agreement_summary(units, levels, values)
    ]
    frame = _frame(rows, columns)
    frame[["pairwise_agreement", "alpha"]] = frame[["pairwise_agreement", "alpha"]].astype(float)
    return frame


def labeler_pair_agreement(
    db: Database, measure: str = OUTCOME_MEASURE, units: dict[str, dict] | None = None
) -> pd.DataFrame:
    """One row per pair of labelers on ``measure`` (outcome or an aspect):
    ``labeler_a, labeler_b, labeler_a_id, labeler_b_id, items, agreement`` (exact-match share of the
    items both labeled; NaN when they share none). ``units`` as in :func:`agreement_table`."""
    columns = ["labeler_a", "labeler_b", "labeler_a_id", "labeler_b_id", "items", "agreement"]
    units = (agreement_units(db) if units is None else units).get(measure, {})
    names = _labeler_names(db)
    rows = [
        {
            "labeler_a": _name(names, r["labeler_a"]),
            "labeler_b": _name(names, r["labeler_b"]),
            "labeler_a_id": r["labeler_a"],
            "labeler_b_id": r["labeler_b"],
            "items": r["items"],
            "agreement": r["agreement"],
        }
        for r in agreement_by_labeler_pair(units)
    ]
    frame = _frame(rows, columns)
    frame["agreement"] = frame["agreement"].astype(float)
    return frame


def pair_matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Square, symmetric labeler x labeler matrix of ``agreement`` from :func:`labeler_pair_agreement`
    (diagonal and unshared pairs NaN), for a heatmap."""
    labelers = list(dict.fromkeys([*pairs["labeler_a"], *pairs["labeler_b"]]))
    matrix = pd.DataFrame(float("nan"), index=labelers, columns=labelers)
    for row in pairs.itertuples():
        matrix.loc[row.labeler_a, row.labeler_b] = row.agreement
        matrix.loc[row.labeler_b, row.labeler_a] = row.agreement
    return matrix


# ----------------------------------------------------------------------------- recent items

RECENT_COLUMNS = [
    "preference_id",
    "created_at",
    "labeler",
    "outcome",
    "prompt",
    "answer_a",
    "answer_b",
    "ratings",
    "flags",
    "note",
    "source",
    "labeler_id",
    "prompt_id",
    "conversation_id",
    "candidate_a",
    "candidate_b",
]


def filter_options(db: Database) -> dict[str, list]:
    """Values the recent-items filters can take: ``labelers`` [(id, name)], ``sources``, ``flags``."""
    row = _query(
        db,
        """
        SELECT list(DISTINCT labeler_id ORDER BY labeler_id) FILTER (WHERE labeler_id IS NOT NULL) AS ids,
               list(DISTINCT source ORDER BY source) AS sources,
               (SELECT list(DISTINCT flag ORDER BY flag) FILTER (WHERE flag IS NOT NULL)
                FROM (SELECT unnest(flags) AS flag FROM live_prefs)) AS flags
        FROM live_prefs
    """,
    )[0]  # one query, not one per filter: the page reads it on every rerun
    names = _labeler_names(db)
    return {
        "labelers": [(i, _name(names, i)) for i in row["ids"] or []],
        "sources": row["sources"] or [],
        "flags": row["flags"] or [],
    }


def recent_items(
    db: Database,
    *,
    labeler_id: Any = None,
    outcome: str | None = None,
    flag: str | None = None,
    source: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    search: str | None = None,
    limit: int = 200,
) -> pd.DataFrame:
    """Latest live votes, newest first, with everything needed to review them (see RECENT_COLUMNS).

    Filters combine with AND; ``since``/``until`` are inclusive days; ``search`` is a case-insensitive
    substring of the prompt, either answer or the note. ``ratings`` reads e.g.
    ``"helpfulness A4 B2 · honesty A5"``; ``flags`` is a comma-separated string.
    """
    conditions: list[tuple[str, list]] = []
    if labeler_id is not None:
        conditions.append(("labeler_id = ?", [labeler_id]))
    if outcome:
        conditions.append(("outcome = ?", [outcome]))
    if flag:
        conditions.append(("list_contains(coalesce(flags, []::VARCHAR[]), ?)", [flag]))
    if source:
        conditions.append(("source = ?", [source]))
    if since:
        conditions.append(("CAST(created_at AS DATE) >= ?", [since]))
    if until:
        conditions.append(("CAST(created_at AS DATE) <= ?", [until]))
    if search and search.strip():
        columns = ("prompt", "answer_a", "answer_b", "note")
        conditions.append(
            (
                "(" + " OR ".join(f"contains(lower(coalesce({c}, '')), lower(?))" for c in columns) + ")",
                [search.strip()] * len(columns),
            )
        )
    where = "WHERE " + " AND ".join(c for c, _ in conditions) if conditions else ""
    params = [value for _, values in conditions for value in values]
    rows = _query(
        db,
        f"""
        SELECT id AS preference_id, created_at, labeler_id, outcome, prompt, answer_a, answer_b, flags,
               note, source, prompt_id, conversation_id, candidate_a, candidate_b
        FROM live_prefs {where}
        ORDER BY created_at DESC, id DESC LIMIT ?
    """,
        [*params, int(limit)],
    )
    if not rows:
        return _frame([], RECENT_COLUMNS)
    summaries = _rating_summaries(db, [r["preference_id"] for r in rows])
    names = _labeler_names(db)
    for row in rows:
        row["labeler"] = _name(names, row["labeler_id"])
        row["ratings"] = summaries.get(row["preference_id"], "")
        row["flags"] = ", ".join(row["flags"] or [])
    return _frame(rows, RECENT_COLUMNS)


def _rating_summaries(db: Database, preference_ids: list[int]) -> dict[int, str]:
    rows = _query(
        db,
        """
        SELECT r.preference_id, r.aspect, r.side, r.score FROM live_ratings r
        LEFT JOIN aspects a ON a.name = r.aspect
        WHERE r.preference_id IN (SELECT unnest(?::BIGINT[]))
        ORDER BY r.preference_id, coalesce(a.position, 1000), r.aspect, r.side, r.id
    """,
        [preference_ids],
    )
    parts: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        score = f"{row['score']:g}"
        parts[row["preference_id"]][row["aspect"]].append(f"{(row['side'] or '?').upper()}{score}")
    return {
        pid: " · ".join(f"{aspect} {' '.join(scores)}" for aspect, scores in by_aspect.items())
        for pid, by_aspect in parts.items()
    }
