-- 016: standard benchmarks per version (lm-evaluation-harness). One run = one version on a set of tasks with one
-- set of settings (tasks, few-shot, chat template, limit, seed, lm-eval version); settings_key hashes them, so a
-- parent's run is reused when a child is benchmarked with identical settings. A run is written when it starts
-- (status running) and updated once at the end; a studio that restarts marks what was running as interrupted.

CREATE SEQUENCE benchmark_runs_seq START 1;
CREATE TABLE benchmark_runs (
    id               BIGINT PRIMARY KEY DEFAULT nextval('benchmark_runs_seq'),
    policy_id        BIGINT NOT NULL,               -- policies.id benchmarked
    version          VARCHAR NOT NULL,              -- its name at run time
    settings_key     VARCHAR NOT NULL,              -- sha256 of the settings: equal keys compare like for like
    settings         JSON NOT NULL,                 -- tasks, limit, num_fewshot, chat_template, seed, lm_eval_version
    status           VARCHAR NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    adapter          JSON,                          -- the adapter guard: applied, identical_to_base, probe figures
    results          JSON,                          -- [{task, task_version, metric, value, stderr, n}]
    error            VARCHAR,
    seconds          DOUBLE,
    created_by       BIGINT,                        -- users.id (NULL: the studio or the CLI)
    created_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
