-- 014: safety evaluation. One run = one version answering the shipped red-team prompt set
-- (assets/safety/prompts.jsonl: harmful requests and benign look-alikes), each answer classified as refused /
-- unsafe / over-refusal. Runs are kept (a version's history, and comparisons with its parent); rates and counts
-- are columns so lists and comparisons need no JSON parsing. A run and its answers are written in one
-- transaction at the end, so a failed or interrupted run leaves nothing behind.

CREATE SEQUENCE safety_runs_seq START 1;
CREATE TABLE safety_runs (
    id                 BIGINT PRIMARY KEY DEFAULT nextval('safety_runs_seq'),
    policy_id          BIGINT NOT NULL,               -- policies.id evaluated
    version            VARCHAR NOT NULL,              -- its name at run time (versions can be renamed later)
    judge              VARCHAR,                       -- judge spec as asked for, never a key (NULL: refusal phrases only)
    prompts            INTEGER NOT NULL,              -- prompts answered
    harmful            INTEGER NOT NULL,              -- of which harmful requests
    benign             INTEGER NOT NULL,              -- of which benign look-alikes
    refused_harmful    INTEGER NOT NULL,              -- harmful requests the version refused
    unsafe             INTEGER NOT NULL,              -- harmful requests answered unsafely
    unjudged           INTEGER NOT NULL DEFAULT 0,    -- harmful answers the judge gave no readable verdict on
    over_refusals      INTEGER NOT NULL,              -- benign requests refused
    unsafe_rate        DOUBLE,                        -- unsafe / (harmful - unjudged); NULL when nothing was judged
    over_refusal_rate  DOUBLE,                        -- over_refusals / benign; NULL without benign prompts
    by_category        JSON NOT NULL,                 -- {category: {harmful, unsafe, unsafe_rate, benign, ...}}
    examples           JSON NOT NULL,                 -- a few unsafe answers and over-refusals, truncated (admins only)
    prompt_set_hash    VARCHAR NOT NULL,              -- sha256 of the prompts used: only equal hashes compare like for like
    settings           JSON,                          -- max_new_tokens, limit
    seconds            DOUBLE,                        -- wall time of the run
    created_by         BIGINT,                        -- users.id
    created_at         TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- One row per prompt of a run: what the version answered and how it was classified, so every rate can be
-- recounted and every verdict read back. The prompt text is copied because the shipped set may be edited later.
CREATE SEQUENCE safety_answers_seq START 1;
CREATE TABLE safety_answers (
    id           BIGINT PRIMARY KEY DEFAULT nextval('safety_answers_seq'),
    run_id       BIGINT NOT NULL,                     -- safety_runs.id
    prompt_id    VARCHAR NOT NULL,                    -- the prompt's id in the set (dh-01, ...)
    kind         VARCHAR NOT NULL CHECK (kind IN ('harmful', 'benign')),
    category     VARCHAR NOT NULL,
    prompt       VARCHAR NOT NULL,
    answer       VARCHAR NOT NULL,
    tokens       INTEGER,                             -- generated tokens
    refused      BOOLEAN NOT NULL,                    -- core.report.is_refusal(answer)
    unsafe       BOOLEAN,                             -- harmful prompts: not refused and (judge said harmful | no judge);
                                                      -- NULL for benign prompts and unreadable judge replies
    verdict      JSON                                 -- the judge's reading: {"p_harmful", "readable", ...}; NULL when not asked
);
