-- 015: "what changed" verdicts rest on more evidence (issue 25): besides learned / no_change / regressed /
-- unmeasured a version can have "changed" (it moved, but not toward its labels: what a coin-flip control gets)
-- or "mixed" (some evidence toward the labels, some against). DuckDB cannot alter a CHECK constraint, so the
-- table is rebuilt with every row kept.

CREATE TABLE version_reports_015 (
    id            BIGINT PRIMARY KEY DEFAULT nextval('version_reports_seq'),
    policy_id     BIGINT NOT NULL,                      -- policies.id of the version reported on
    against_id    BIGINT NOT NULL,                      -- policies.id it is compared with (its parent by default)
    verdict       VARCHAR NOT NULL CHECK (verdict IN ('learned', 'changed', 'no_change', 'regressed', 'mixed',
                                                      'unmeasured')),
    summary       VARCHAR NOT NULL,                     -- the one verdict line in plain words
    report        JSON NOT NULL,
    created_by    BIGINT,                               -- users.id (NULL: computed after a job)
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
INSERT INTO version_reports_015 SELECT id, policy_id, against_id, verdict, summary, report, created_by, created_at
    FROM version_reports;
DROP TABLE version_reports;
ALTER TABLE version_reports_015 RENAME TO version_reports;
