-- Rollback of 0001: drops the retry queue's tables (and with them every queued item).
DROP TABLE IF EXISTS daz_retry_history;
DROP TABLE IF EXISTS daz_retry_queue;
