-- 003: blind A/B arena battles (the FastChat clean-battle shape), one row per vote in the arena.
-- Each battle is also a preference record (source = 'arena', preferences.id in preference_id) whose two
-- candidates hold the answers, so training builders read it like any other vote.
-- The texts live once, in prompts / candidates: an admin redaction there removes them from the battle
-- view below too, and a redacted or undone vote drops out of the leaderboard.

CREATE SEQUENCE battles_seq START 1;
CREATE TABLE battles (
    id             BIGINT PRIMARY KEY DEFAULT nextval('battles_seq'),
    model_a        VARCHAR NOT NULL,                  -- policy name shown as A when the battle was fought
    model_b        VARCHAR NOT NULL,                  -- policy name shown as B
    policy_a_id    BIGINT,                            -- policies.id of A (names may change later)
    policy_b_id    BIGINT,                            -- policies.id of B
    winner         VARCHAR NOT NULL CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
    judge          VARCHAR,                           -- users.name of the voter
    judge_id       BIGINT,                            -- users.id of the voter
    prompt_id      BIGINT,                            -- prompts.id (source 'arena')
    candidate_a    BIGINT,                            -- candidates.id of the answer shown as A
    candidate_b    BIGINT,                            -- candidates.id of the answer shown as B
    preference_id  BIGINT,                            -- preferences.id of the same vote
    tstamp         TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    CHECK (model_a <> model_b)
);

-- Battles with their prompt and both answers, as people read them.
CREATE VIEW battle_records AS
SELECT b.id, b.model_a, b.model_b, b.winner, b.judge, b.tstamp,
       pr.text AS prompt, ca.text AS answer_a, cb.text AS answer_b,
       b.policy_a_id, b.policy_b_id, b.judge_id, b.prompt_id, b.candidate_a, b.candidate_b, b.preference_id
FROM battles b
LEFT JOIN prompts pr ON pr.id = b.prompt_id
LEFT JOIN candidates ca ON ca.id = b.candidate_a
LEFT JOIN candidates cb ON cb.id = b.candidate_b;
