DROP INDEX daz_retry_queue_status_id_idx;
DROP INDEX daz_retry_history_finished_at_idx;
DROP TABLE daz_retry_actions;
DROP FUNCTION requeue_retry_items(bigint[], text);
DELETE FROM daz_retry_history WHERE outcome = 'requeued';
DO $$
DECLARE
    def text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def
    FROM pg_constraint WHERE conname = 'daz_retry_history_outcome_check';
    ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
    EXECUTE 'ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check '
        || replace(def, '''requeued''::text, ', '');
END
$$;
