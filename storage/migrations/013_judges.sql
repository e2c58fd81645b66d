-- 013: AI feedback. A judge labels as its own labeler: a users row of kind 'ai' named 'ai:<judge>', never
-- mistaken for a person (training sets take human labels unless asked otherwise). Its votes carry the judge's
-- confidence and the run that wrote them. judge_runs records every run: what, on what, how far, how it ended.

ALTER TABLE users ADD COLUMN kind VARCHAR NOT NULL DEFAULT 'human';      -- human | ai
ALTER TABLE preferences ADD COLUMN confidence DOUBLE;                    -- AI judges: P(verdict), 0.5..1
ALTER TABLE preferences ADD COLUMN judge_run_id BIGINT;                  -- judge_runs.id

CREATE SEQUENCE judge_runs_seq START 1;
CREATE TABLE judge_runs (
    id            BIGINT PRIMARY KEY DEFAULT nextval('judge_runs_seq'),
    judge         VARCHAR NOT NULL,                     -- the judge's labeler name (ai:...)
    spec          VARCHAR NOT NULL,                     -- the judge as asked for (never a key)
    source        VARCHAR NOT NULL,                     -- unlabeled | queue:<name>
    status        VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    total         INTEGER NOT NULL DEFAULT 0,           -- pairs to judge when it started
    done          INTEGER NOT NULL DEFAULT 0,           -- pairs judged and saved
    ties          INTEGER NOT NULL DEFAULT 0,           -- of which the two orders disagreed (position bias)
    unreadable    INTEGER NOT NULL DEFAULT 0,           -- of which a reply named neither answer
    tokens        BIGINT NOT NULL DEFAULT 0,            -- endpoint tokens (prompt + completion)
    error         VARCHAR,
    started_by    BIGINT,                               -- users.id
    started_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    finished_at   TIMESTAMPTZ
);
