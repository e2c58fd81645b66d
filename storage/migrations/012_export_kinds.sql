-- 012: two more export kinds. `gguf`: a merged version written as one GGUF file for llama.cpp / Ollama /
-- LM Studio, `dtype` is its tensor type (f16 | bf16 | q8_0 | q4_0). `quantized`: a merged version saved with
-- bitsandbytes (CUDA only), `dtype` is nf4 | int8. DuckDB cannot alter a CHECK constraint, so the table is
-- rebuilt with the same columns and rows; ids keep coming from exports_seq.

CREATE TABLE exports_new (
    id            BIGINT PRIMARY KEY DEFAULT nextval('exports_seq'),
    kind          VARCHAR NOT NULL CHECK (kind IN ('adapter', 'merged', 'dataset', 'gguf', 'quantized')),
    policy_id     BIGINT,                               -- policies.id (adapter / merged / gguf / quantized)
    version       VARCHAR,                              -- the policy's name at export time (v1, ...)
    base_model    VARCHAR,                              -- base model spec or Hub id the adapter belongs to
    dtype         VARCHAR,                              -- merged: float32 | float16 | bfloat16; gguf: f16 | bf16 |
                                                        -- q8_0 | q4_0; quantized: nf4 | int8
    dataset_kind  VARCHAR,                              -- dataset: preference | reward | unpaired | sft
    filters       JSON,                                 -- dataset: the builder filters
    rows          INTEGER,                              -- dataset: number of rows
    data_hash     VARCHAR,                              -- training data (adapter) or exported rows (dataset)
    path          VARCHAR NOT NULL,                     -- the export directory under <data-dir>/exports/
    created_by    BIGINT,                               -- users.id
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
INSERT INTO exports_new SELECT id, kind, policy_id, version, base_model, dtype, dataset_kind, filters, rows, data_hash,
    path, created_by, created_at FROM exports;
DROP TABLE exports;
ALTER TABLE exports_new RENAME TO exports;
