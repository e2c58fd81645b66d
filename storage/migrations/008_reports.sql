-- 008: "what changed" reports. One row per report of a version against another (its parent by default),
-- computed in the background after every training job and on demand. The JSON holds every figure, the
-- warnings and the example answers; verdict and summary are columns so lists can show them without parsing.

CREATE SEQUENCE version_reports_seq START 1;
CREATE TABLE version_reports (
    id            BIGINT PRIMARY KEY DEFAULT nextval('version_reports_seq'),
    policy_id     BIGINT NOT NULL,                      -- policies.id of the version reported on
    against_id    BIGINT NOT NULL,                      -- policies.id it is compared with (its parent by default)
    verdict       VARCHAR NOT NULL CHECK (verdict IN ('learned', 'no_change', 'regressed', 'unmeasured')),
    summary       VARCHAR NOT NULL,                     -- the one verdict line in plain words
    report        JSON NOT NULL,
    created_by    BIGINT,                               -- users.id (NULL: computed after a job)
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
