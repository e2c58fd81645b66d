-- 017: whether a sampled answer ended by itself or was cut at the length limit (max_new_tokens). A cut answer is
-- shown to the labeler as cut and trained on as the start of an answer, never as a finished one: trained with the
-- chat template's end-of-turn after it, a chosen cut answer taught the policy to stop mid-sentence.
-- TRUE: cut at the limit; FALSE: ended by itself; NULL: unknown (imported answers, answers stored before 017).
ALTER TABLE candidates ADD COLUMN cut BOOLEAN;
