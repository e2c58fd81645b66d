-- 001: the core tables of the labeling -> training loop.
-- Ids come from sequences; references between tables are plain columns (DuckDB cannot cascade deletes,
-- and admins must be able to redact items), documented here instead of enforced with FOREIGN KEY.

CREATE SEQUENCE users_seq START 1;
CREATE TABLE users (
    id          BIGINT PRIMARY KEY DEFAULT nextval('users_seq'),
    name        VARCHAR NOT NULL UNIQUE,
    role        VARCHAR NOT NULL DEFAULT 'labeler' CHECK (role IN ('admin', 'labeler')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE prompts_seq START 1;
CREATE TABLE prompts (
    id          BIGINT PRIMARY KEY DEFAULT nextval('prompts_seq'),
    text        VARCHAR NOT NULL,
    source      VARCHAR NOT NULL DEFAULT 'chat',      -- chat | seed | import:<name> | api
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE policies_seq START 1;
CREATE TABLE policies (
    id            BIGINT PRIMARY KEY DEFAULT nextval('policies_seq'),
    name          VARCHAR NOT NULL UNIQUE,            -- 'base', 'v1', 'v2', ...
    parent_id     BIGINT,                             -- policies.id this version was trained from
    base_model    VARCHAR NOT NULL,                   -- model spec or path of the base weights
    algorithm     VARCHAR,                            -- NULL for the base policy
    adapter_path  VARCHAR,                            -- LoRA adapter directory, NULL for the base
    data_hash     VARCHAR,
    config        JSON,
    metrics       JSON,
    job_id        BIGINT,                             -- jobs.id that produced it
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    deleted_at    TIMESTAMPTZ
);

CREATE SEQUENCE conversations_seq START 1;
CREATE TABLE conversations (
    id          BIGINT PRIMARY KEY DEFAULT nextval('conversations_seq'),
    user_id     BIGINT,                               -- users.id
    policy_id   BIGINT,                               -- policies.id the chat started with
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE messages_seq START 1;
CREATE TABLE messages (
    id               BIGINT PRIMARY KEY DEFAULT nextval('messages_seq'),
    conversation_id  BIGINT NOT NULL,                 -- conversations.id
    turn             INTEGER NOT NULL,                -- 0-based position in the conversation
    role             VARCHAR NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content          VARCHAR NOT NULL,
    candidate_id     BIGINT,                          -- candidates.id the assistant turn came from
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    UNIQUE (conversation_id, turn)
);

CREATE SEQUENCE candidates_seq START 1;
CREATE TABLE candidates (
    id               BIGINT PRIMARY KEY DEFAULT nextval('candidates_seq'),
    conversation_id  BIGINT,                          -- conversations.id
    turn             INTEGER,                         -- the assistant turn it is a candidate for
    prompt_id        BIGINT,                          -- prompts.id when served from a queue
    policy_id        BIGINT,                          -- policies.id that generated it
    text             VARCHAR NOT NULL,
    sampling         JSON,                            -- temperature, top_p, max_new_tokens, seed
    latency_ms       DOUBLE,
    new_tokens       INTEGER,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE ratings_seq START 1;
CREATE TABLE ratings (
    id            BIGINT PRIMARY KEY DEFAULT nextval('ratings_seq'),
    candidate_id  BIGINT NOT NULL,                    -- candidates.id
    user_id       BIGINT,                             -- users.id
    aspect        VARCHAR NOT NULL,                   -- helpfulness, harmlessness, honesty, thumbs, ...
    score         DOUBLE NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE preferences_seq START 1;
CREATE TABLE preferences (
    id               BIGINT PRIMARY KEY DEFAULT nextval('preferences_seq'),
    conversation_id  BIGINT,
    turn             INTEGER,
    prompt_id        BIGINT,
    candidate_a      BIGINT,                          -- candidates.id shown as A
    candidate_b      BIGINT,                          -- candidates.id shown as B
    outcome          VARCHAR NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    labeler_id       BIGINT,                          -- users.id
    source           VARCHAR NOT NULL DEFAULT 'chat', -- chat | arena | import:<name> | api
    note             VARCHAR,
    idempotency_key  VARCHAR UNIQUE,                  -- client key: a repeated submit is a no-op
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Scored single responses (the seed N3 /feedback shape): prompt, response, score in [0, 1].
CREATE SEQUENCE feedback_seq START 1;
CREATE TABLE feedback (
    id          BIGINT PRIMARY KEY DEFAULT nextval('feedback_seq'),
    prompt      VARCHAR NOT NULL,
    response    VARCHAR NOT NULL,
    score       DOUBLE NOT NULL CHECK (score >= 0 AND score <= 1),
    run_id      VARCHAR,
    notes       VARCHAR,
    labeler_id  BIGINT,
    source      VARCHAR NOT NULL DEFAULT 'api',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE jobs_seq START 1;
CREATE TABLE jobs (
    id            BIGINT PRIMARY KEY DEFAULT nextval('jobs_seq'),
    algorithm     VARCHAR NOT NULL,
    status        VARCHAR NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'paused', 'succeeded', 'failed',
                                    'cancelled', 'interrupted')),
    parent_policy_id BIGINT,
    config        JSON,
    run_dir       VARCHAR,
    pid           INTEGER,
    pid_started_at DOUBLE,                            -- process start time, to re-attach safely
    error         VARCHAR,
    created_by    BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ
);

CREATE TABLE job_metrics (
    job_id  BIGINT NOT NULL,                          -- jobs.id
    step    INTEGER NOT NULL,
    name    VARCHAR NOT NULL,                         -- loss, rewards/chosen, kl, learning_rate, ...
    value   DOUBLE,
    ts      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (job_id, step, name)
);
