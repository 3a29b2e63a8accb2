DROP FUNCTION replay_retry_items(bigint[], text);
DELETE FROM daz_retry_history WHERE outcome = 'replayed';
ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check
    CHECK (outcome IS NULL
           OR outcome IN ('completed', 'failed', 'dead_letter', 'lock_expired', 'released'));
DROP FUNCTION cleanup_retry_queue();
DROP FUNCTION calculate_next_retry(integer, double precision, double precision);
DROP FUNCTION fail_retry_item(bigint, text, text, text);
DROP FUNCTION complete_retry_item(bigint, text);
DROP FUNCTION acquire_retry_items(text, integer, double precision);
ALTER FUNCTION daz_acquire_retry_items(text, integer, interval) RENAME TO acquire_retry_items;
ALTER TABLE daz_retry_queue ALTER COLUMN event_id DROP DEFAULT;
ALTER TABLE daz_retry_queue RENAME COLUMN plugin_name TO plugin;
ALTER TABLE daz_retry_queue RENAME COLUMN channel_name TO channel;
