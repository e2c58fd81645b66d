-- 005: automatic evaluation of policy versions, and prompts picked for labeling by active learning.

-- One row per evaluation run of one version (the Compare page keeps every run; tables show the latest).
CREATE SEQUENCE eval_results_seq START 1;
CREATE TABLE eval_results (
    id                 BIGINT PRIMARY KEY DEFAULT nextval('eval_results_seq'),
    policy_id          BIGINT NOT NULL,               -- policies.id evaluated
    reward_model_id    BIGINT,                        -- policies.id of the rmN that scored (NULL: none)
    reference_id       BIGINT,                        -- policies.id of the implicit-reward reference (parent)
    held_out_pairs     INTEGER NOT NULL,              -- preference pairs in the held-out split
    seen_in_training   INTEGER NOT NULL DEFAULT 0,    -- of those, pairs whose prompt was in the version's training data
    rm_accuracy        DOUBLE,                        -- share of held-out pairs the reward model orders right
    implicit_accuracy  DOUBLE,                        -- the same with the DPO implicit reward vs the reference
    implicit_margin    DOUBLE,                        -- mean implicit reward(chosen) - reward(rejected)
    beta               DOUBLE,
    gen_reward         DOUBLE,                        -- mean reward-model score of generations on the fixed prompts
    kl_to_base         DOUBLE,                        -- Monte Carlo estimate of KL(version || base), nats per answer
    mean_length        DOUBLE,                        -- mean generated answer length in tokens
    samples            INTEGER NOT NULL DEFAULT 0,    -- generations behind gen_reward / kl / length
    settings           JSON,
    created_by         BIGINT,                        -- users.id
    created_at         TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Prompts put into a labeling queue by active learning, with why each was picked.
CREATE SEQUENCE active_picks_seq START 1;
CREATE TABLE active_picks (
    id            BIGINT PRIMARY KEY DEFAULT nextval('active_picks_seq'),
    queue_id      BIGINT NOT NULL,                    -- queues.id
    prompt_id     BIGINT NOT NULL,                    -- prompts.id
    strategy      VARCHAR NOT NULL CHECK (strategy IN ('disagreement', 'uncertainty')),
    score         DOUBLE NOT NULL,                    -- disagreement (higher first) or score gap (lower first)
    rank          INTEGER NOT NULL,
    reason        VARCHAR NOT NULL,
    policy_a      VARCHAR NOT NULL,
    policy_b      VARCHAR NOT NULL,
    reward_model  VARCHAR,
    answer_a      VARCHAR,
    answer_b      VARCHAR,
    created_by    BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
