DROP INDEX daz_retry_queue_status_id_idx;
CREATE INDEX daz_retry_queue_status_id_idx ON daz_retry_queue (status, id);
