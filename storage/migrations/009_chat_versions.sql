-- 009: one definition of "a trained chat version and what it is compared with". Live versions with an
-- adapter that chat can serve (reward models excluded), each with the version its "what changed" report
-- is measured against by default: its parent, or the base for versions trained from the base model.

CREATE VIEW chat_versions AS
SELECT p.id, p.name, p.job_id, p.parent_id,
       coalesce(p.parent_id, base.id)       AS against_id,
       coalesce(parent.name, base.name)     AS against_name,
       coalesce(j.created_at, p.created_at) AS trained_at
FROM policies p
JOIN policies base ON base.name = 'base'
LEFT JOIN policies parent ON parent.id = p.parent_id
LEFT JOIN jobs j ON j.id = p.job_id
WHERE p.deleted_at IS NULL AND p.adapter_path IS NOT NULL AND p.name <> 'base'
  AND coalesce(p.algorithm, '') <> 'reward';
