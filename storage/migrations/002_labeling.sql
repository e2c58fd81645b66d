-- 002: labeling studio: aspects with weights, prompt queues with overlap, votes with flags, thumbs,
-- gold answers, undo (retraction), redaction and an audit log.

-- Rating aspects, each with a weight used later for multi-objective rewards.
CREATE TABLE aspects (
    name         VARCHAR PRIMARY KEY,
    description  VARCHAR NOT NULL DEFAULT '',
    weight       DOUBLE NOT NULL DEFAULT 1.0 CHECK (weight >= 0),
    position     INTEGER NOT NULL DEFAULT 0,
    active       BOOLEAN NOT NULL DEFAULT TRUE
);
INSERT INTO aspects (name, description, weight, position) VALUES
    ('helpfulness', 'Does it do what was asked, completely and usefully?', 1.0, 1),
    ('harmlessness', 'Is it free of unsafe, toxic or dangerous content?', 1.0, 2),
    ('honesty', 'Is it truthful and candid about uncertainty?', 1.0, 3);

ALTER TABLE users ADD COLUMN source VARCHAR NOT NULL DEFAULT 'local';   -- local | file | env | oauth
ALTER TABLE users ADD COLUMN last_seen_at TIMESTAMPTZ;

-- Prompt queues: each prompt is served to `overlap` different labelers, never twice to the same one.
CREATE SEQUENCE queues_seq START 1;
CREATE TABLE queues (
    id          BIGINT PRIMARY KEY DEFAULT nextval('queues_seq'),
    name        VARCHAR NOT NULL UNIQUE,
    overlap     INTEGER NOT NULL DEFAULT 1 CHECK (overlap >= 1),
    daily_goal  INTEGER NOT NULL DEFAULT 50 CHECK (daily_goal >= 1),
    created_by  BIGINT,                                   -- users.id
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
ALTER TABLE prompts ADD COLUMN queue_id BIGINT;           -- queues.id, NULL for free chat
ALTER TABLE prompts ADD COLUMN redacted_at TIMESTAMPTZ;

-- One row per (prompt, labeler): the primary key is what makes "never twice" hold.
CREATE TABLE assignments (
    prompt_id    BIGINT NOT NULL,                         -- prompts.id
    user_id      BIGINT NOT NULL,                         -- users.id
    status       VARCHAR NOT NULL DEFAULT 'served' CHECK (status IN ('served', 'done', 'skipped')),
    served_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    finished_at  TIMESTAMPTZ,
    PRIMARY KEY (prompt_id, user_id)
);

ALTER TABLE conversations ADD COLUMN prompt_id BIGINT;    -- prompts.id when started from a queue
ALTER TABLE messages ADD COLUMN redacted_at TIMESTAMPTZ;
ALTER TABLE candidates ADD COLUMN truncated_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE candidates ADD COLUMN redacted_at TIMESTAMPTZ;

ALTER TABLE preferences ADD COLUMN flags VARCHAR[];       -- unsafe, pii, off_topic
ALTER TABLE preferences ADD COLUMN retracted_at TIMESTAMPTZ;  -- undo: kept for the record, ignored by builders
ALTER TABLE preferences ADD COLUMN redacted_at TIMESTAMPTZ;   -- admin deletion: excluded everywhere
ALTER TABLE ratings ADD COLUMN preference_id BIGINT;      -- preferences.id the rating was given with

CREATE SEQUENCE thumbs_seq START 1;
CREATE TABLE thumbs (
    id             BIGINT PRIMARY KEY DEFAULT nextval('thumbs_seq'),
    candidate_id   BIGINT NOT NULL,                       -- candidates.id
    preference_id  BIGINT,                                -- preferences.id
    user_id        BIGINT,
    up             BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- A candidate edited by a labeler into the answer it should have been (SFT data).
CREATE SEQUENCE gold_seq START 1;
CREATE TABLE gold_answers (
    id             BIGINT PRIMARY KEY DEFAULT nextval('gold_seq'),
    preference_id  BIGINT,                                -- preferences.id
    candidate_id   BIGINT,                                -- candidates.id it was edited from
    user_id        BIGINT,
    text           VARCHAR NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE audit_seq START 1;
CREATE TABLE audit_log (
    id            BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
    user_id       BIGINT,
    action        VARCHAR NOT NULL,                       -- redact, undo, import, ...
    target_table  VARCHAR,
    target_id     BIGINT,
    details       JSON,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Small key/value store for editable studio texts (guidelines) and settings.
CREATE TABLE studio_kv (
    key         VARCHAR PRIMARY KEY,
    value       VARCHAR NOT NULL,
    updated_by  BIGINT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
