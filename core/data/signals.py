"""The SQL that reads the labels: every vote, thumb, rating, gold edit and feedback row with the reason it is
skipped (or none), after the data filters (core.data.filters) are applied.

One shared CTE (`_SIGNALS`) resolves prompts, redactions, AI-judge calibration, filters and agreement; the four
queries on top of it (`VOTES`, `LONE_GOLD`, `ANSWER_LABELS`, `FEEDBACK`) are what the builders in
core.data.trainsets turn into rows. Run them with the parameters of `query_params`.
"""
from __future__ import annotations

from typing import Any

from core.data.filters import Filters, resolve_aspect_weights
from core.labeling.agreement import calibrated_judges
from storage.db import Database

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
    SELECT c.id, c.text, coalesce(c.cut, false) AS cut, pol.name AS policy,
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
vote AS (
    SELECT p.id, p.outcome, p.labeler_id, p.created_at, a.prompt, to_json(a.prompt)::VARCHAR AS prompt_key,
           {_kind_ok(_VOTER_KIND, 'p.confidence')} AS kind_ok, {_VOTER_KIND} = 'ai' AS ai,
           a.id AS a_id, a.text AS a_text, a.cut AS a_cut, b.id AS b_id, b.text AS b_text, b.cut AS b_cut,
           CASE WHEN p.retracted_at IS NOT NULL THEN 'retracted'
                WHEN p.redacted_at IS NOT NULL OR a.problem = 'redacted' OR b.problem = 'redacted' THEN 'redacted'
                WHEN a.id IS NULL OR b.id IS NULL OR a.problem IS NOT NULL OR b.problem IS NOT NULL
                     THEN 'no_prompt'
           END AS invalid,
           CASE WHEN NOT {_in_window('p.created_at')} THEN 'date'
                WHEN NOT {_kind_ok(_VOTER_KIND, 'p.confidence')} THEN 'label_kind'
                WHEN p.judge_run_id IS NOT NULL AND $min_judge_calibration > 0
                     AND NOT coalesce(list_contains($calibrated_judges, p.labeler_id), false)
                     THEN 'uncalibrated_judge'
                WHEN NOT {_by_labeler('p.labeler_id')} THEN 'labeler'
                WHEN NOT {_from_source('p.source')} THEN 'source'
                WHEN NOT ({_by_policy('a.policy')} AND {_by_policy('b.policy')}) THEN 'policy'
                WHEN $exclude_flags IS NOT NULL
                     AND len(list_intersect(coalesce(p.flags, []::VARCHAR[]), $exclude_flags)) > 0 THEN 'flagged'
           END AS filtered
    FROM preferences p
    LEFT JOIN users u ON u.id = p.labeler_id
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

VOTES = _SIGNALS + """
SELECT j.id, j.skip, j.outcome, j.prompt, j.a_text, j.b_text, sa.score AS a_score, sb.score AS b_score,
       vg.text AS gold, j.ai, j.a_cut, j.b_cut
FROM judged j
LEFT JOIN score sa ON sa.candidate_id = j.a_id
LEFT JOIN score sb ON sb.candidate_id = j.b_id
LEFT JOIN vote_gold vg ON vg.preference_id = j.id
ORDER BY j.created_at, j.id
"""

# the kept votes with what decides the preference pairs each gives, without the prompts
# (core.data.trainsets.preference_texts), and whether it is on or after $pairs_since (NULL: every vote is recent)
VOTE_PAIR_TEXTS = _SIGNALS + """
SELECT j.id, j.outcome, j.a_text, j.b_text, NULL AS a_score, NULL AS b_score, vg.text AS gold, j.ai, j.a_cut, j.b_cut,
       ($pairs_since IS NULL OR j.created_at >= $pairs_since) AS recent
FROM judged j
LEFT JOIN vote_gold vg ON vg.preference_id = j.id
WHERE j.skip IS NULL
ORDER BY j.created_at, j.id
"""
LONE_GOLD = _SIGNALS + "SELECT id, skip, prompt, text FROM lone_gold ORDER BY id"

ANSWER_LABELS = _SIGNALS + f"""
SELECT c.id, c.prompt, c.text, c.cut, coalesce(t.up, 0) AS up, coalesce(t.down, 0) AS down,
       coalesce(v.good, 0) AS good, coalesce(v.bad, 0) AS bad, s.score,
       CASE WHEN c.problem IS NOT NULL THEN c.problem WHEN NOT {_by_policy('c.policy')} THEN 'policy' END AS skip
FROM cand c
LEFT JOIN thumb t ON t.candidate_id = c.id
LEFT JOIN vote_label v ON v.candidate_id = c.id
LEFT JOIN score s ON s.candidate_id = c.id
WHERE t.candidate_id IS NOT NULL OR v.candidate_id IS NOT NULL OR s.candidate_id IS NOT NULL
ORDER BY c.id
"""

FEEDBACK = _SIGNALS + f"""
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


def query_params(db: Database, filters: Filters | None,
                 aspect_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Validated SQL parameters for the queries above (raises ValidationError on bad filters)."""
    filters = filters if filters is not None else Filters()
    weights = resolve_aspect_weights(db, filters, aspect_weights)
    params = filters.params(db)
    return params | {"aspect_names": list(weights), "aspect_weights": list(weights.values()),
                     "calibrated_judges": calibrated_judges(db, params["min_judge_calibration"])}
