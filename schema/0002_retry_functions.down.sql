-- Rollback of 0002: drops the retry queue's functions, views and notification trigger.
DROP TRIGGER IF EXISTS daz_retry_queue_enqueued ON daz_retry_queue;
DROP FUNCTION IF EXISTS daz_retry_queue_notify_enqueued();
DROP VIEW IF EXISTS daz_retry_queue_alerts;
DROP VIEW IF EXISTS daz_retry_queue_stats;
DROP FUNCTION IF EXISTS cleanup_retry_queue(double precision, double precision);
DROP FUNCTION IF EXISTS requeue_dead_letter(bigint);
DROP FUNCTION IF EXISTS fail_retry_item(bigint, text, uuid, text, text, boolean);
DROP FUNCTION IF EXISTS complete_retry_items(bigint[], text, uuid[]);
DROP FUNCTION IF EXISTS complete_retry_item(bigint, text, uuid);
DROP FUNCTION IF EXISTS acquire_retry_items(text, integer, interval);
DROP FUNCTION IF EXISTS calculate_next_retry(integer, double precision, double precision, double precision);
