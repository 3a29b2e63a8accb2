DROP FUNCTION release_retry_items(bigint[], text, uuid[]);
DELETE FROM daz_retry_history WHERE outcome = 'released';
ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check
    CHECK (outcome IS NULL OR outcome IN ('completed', 'failed', 'dead_letter', 'lock_expired'));
