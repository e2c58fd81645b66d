-- 011: personal API tokens (REST `Authorization: Bearer ...`). Only a SHA-256 of each token is stored: the
-- token itself is shown once, when it is created. `scope` caps what a token may do: 'label' acts as a labeler
-- even for an admin; 'admin' acts as an admin only while its owner still is one.

CREATE SEQUENCE api_tokens_seq START 1;
CREATE TABLE api_tokens (
    id            BIGINT PRIMARY KEY DEFAULT nextval('api_tokens_seq'),
    user_id       BIGINT NOT NULL,                      -- users.id of the owner
    name          VARCHAR NOT NULL,                     -- what it is for, e.g. "labeling script"
    scope         VARCHAR NOT NULL CHECK (scope IN ('label', 'admin')),
    token_hash    VARCHAR NOT NULL UNIQUE,              -- hex SHA-256 of the token
    prefix        VARCHAR NOT NULL,                     -- first characters, to recognise it in lists
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    revoked_by    BIGINT                                -- users.id of who revoked it
);
