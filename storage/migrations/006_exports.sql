-- 006: exports. Every local export (adapter, merged model, dataset) and every successful Hub push.
-- A push row is written only after the Hub confirmed the commit, so a failed upload leaves no trace here.
-- Tokens are never stored: not in these tables, not anywhere in the database.

CREATE SEQUENCE exports_seq START 1;
CREATE TABLE exports (
    id            BIGINT PRIMARY KEY DEFAULT nextval('exports_seq'),
    kind          VARCHAR NOT NULL CHECK (kind IN ('adapter', 'merged', 'dataset')),
    policy_id     BIGINT,                               -- policies.id (adapter / merged)
    version       VARCHAR,                              -- the policy's name at export time (v1, ...)
    base_model    VARCHAR,                              -- base model spec or Hub id the adapter belongs to
    dtype         VARCHAR,                              -- merged: float32 | float16 | bfloat16
    dataset_kind  VARCHAR,                              -- dataset: preference | reward | unpaired | sft
    filters       JSON,                                 -- dataset: the builder filters
    rows          INTEGER,                              -- dataset: number of rows
    data_hash     VARCHAR,                              -- training data (adapter) or exported rows (dataset)
    path          VARCHAR NOT NULL,                     -- the export directory under <data-dir>/exports/
    created_by    BIGINT,                               -- users.id
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE hub_pushes_seq START 1;
CREATE TABLE hub_pushes (
    id            BIGINT PRIMARY KEY DEFAULT nextval('hub_pushes_seq'),
    export_id     BIGINT NOT NULL,                      -- exports.id
    repo_id       VARCHAR NOT NULL,                     -- owner/name on the Hub
    repo_type     VARCHAR NOT NULL CHECK (repo_type IN ('model', 'dataset')),
    private       BOOLEAN NOT NULL,
    endpoint      VARCHAR NOT NULL,                     -- https://huggingface.co or HF_ENDPOINT
    commit_url    VARCHAR NOT NULL,
    commit_oid    VARCHAR NOT NULL,
    pushed_by     BIGINT,                               -- users.id
    pushed_at     TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
