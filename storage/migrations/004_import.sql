-- 004: provenance of imported data. Imported pairs and labeled answers are stored like chat labels
-- (conversation + messages + candidates + preference or thumb) so the training-set builders read them
-- unchanged; the conversation remembers where it came from, so answers labeled without a vote (KTO
-- imports: a lone thumb) keep their source name too. Votes already carry it in preferences.source.
ALTER TABLE conversations ADD COLUMN source VARCHAR NOT NULL DEFAULT 'chat';   -- chat | import:<name>
