-- 010: scored feedback records who sent it (labeler_id, filled by the API from the login) and accepts an
-- idempotency key like votes: a client that repeats a request with the same key stores it once. Keys are
-- per sender, so two labelers cannot collide (or probe each other's keys).

ALTER TABLE feedback ADD COLUMN idempotency_key VARCHAR;
CREATE UNIQUE INDEX feedback_idempotency ON feedback (labeler_id, idempotency_key);
