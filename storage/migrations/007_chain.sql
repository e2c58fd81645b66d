-- 007: proof-of-contribute. Contributions derived from the labeling/training tables, batched into
-- Merkle roots anchored by the ledger contract; wallet links by signed EIP-4361 message.
-- No secret lives here: salts are per contribution (never on chain), the operator key is never stored.

CREATE SEQUENCE contributions_seq START 1;
CREATE TABLE contributions (
    id            BIGINT PRIMARY KEY DEFAULT nextval('contributions_seq'),
    user_id       BIGINT NOT NULL,                    -- users.id of the contributor
    kind          VARCHAR NOT NULL,                   -- vote | arena_vote | rating | gold_edit | training | admin_validation
    source_table  VARCHAR NOT NULL,                   -- preferences | ratings | gold_answers | jobs | audit_log
    source_id     BIGINT NOT NULL,                    -- that table's id: one contribution per source row
    weight        DOUBLE NOT NULL,                    -- quality score in [0, 1] (agreement with the majority)
    amount        HUGEINT NOT NULL,                   -- reward in token base units (18 decimals)
    salt          VARCHAR NOT NULL,                   -- hex; with the content it gives content_hash
    content_hash  VARCHAR NOT NULL,                   -- 0x keccak256(salt || canonical content): all the chain sees
    batch_id      BIGINT,                             -- chain_batches.id once batched
    created_at    TIMESTAMPTZ NOT NULL,               -- when the contribution was made (source row time)
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    UNIQUE (source_table, source_id)
);

CREATE SEQUENCE chain_batches_seq START 1;
CREATE TABLE chain_batches (
    id              BIGINT PRIMARY KEY DEFAULT nextval('chain_batches_seq'),  -- also the on-chain batch id
    status          VARCHAR NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'anchored')),
    trigger         VARCHAR NOT NULL,                 -- count | age | admin | cli
    root            VARCHAR NOT NULL,                 -- 0x batch Merkle root
    contributors    INTEGER NOT NULL,
    contributions   INTEGER NOT NULL,
    total_amount    HUGEINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    last_error      VARCHAR,                          -- why the last anchoring attempt failed (retried)
    chain_id        BIGINT,                           -- where it was anchored
    contract        VARCHAR,
    tx_hash         VARCHAR,
    block_number    BIGINT,
    gas_used        BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    anchored_at     TIMESTAMPTZ
);

-- ONE leaf per contributor per batch: (address, amount, sub-root of their contributions).
CREATE TABLE batch_leaves (
    batch_id      BIGINT NOT NULL,                    -- chain_batches.id
    user_id       BIGINT NOT NULL,                    -- users.id
    address       VARCHAR NOT NULL,                   -- checksummed wallet address at batching time
    amount        HUGEINT NOT NULL,
    subroot       VARCHAR NOT NULL,
    claim_tx      VARCHAR,
    claim_block   BIGINT,
    claimed_at    TIMESTAMPTZ,
    PRIMARY KEY (batch_id, user_id)
);

-- Every transaction the studio sent, in order: gas accounting, and the replay log that rebuilds the
-- embedded chain after a restart (same transactions, same order -> same state).
CREATE SEQUENCE chain_txs_seq START 1;
CREATE TABLE chain_txs (
    id            BIGINT PRIMARY KEY DEFAULT nextval('chain_txs_seq'),
    chain_key     VARCHAR NOT NULL,                   -- '<chain id>:<contract>'
    kind          VARCHAR NOT NULL,                   -- anchor | claim
    args          JSON NOT NULL,                      -- call arguments (hex strings), enough to replay
    tx_hash       VARCHAR NOT NULL,
    block_number  BIGINT,
    gas_used      BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE wallet_links (
    user_id    BIGINT PRIMARY KEY,                    -- users.id
    address    VARCHAR NOT NULL UNIQUE,               -- checksummed
    message    VARCHAR NOT NULL,                      -- the signed EIP-4361 text
    signature  VARCHAR NOT NULL,
    linked_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Server-issued sign-in messages; a nonce is used at most once.
CREATE TABLE wallet_challenges (
    nonce       VARCHAR PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    address     VARCHAR NOT NULL,
    message     VARCHAR NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
