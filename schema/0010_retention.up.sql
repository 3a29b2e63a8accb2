-- 0010: retention (issue 19). The periodic cleanup deletes old rows in bounded batches,
-- each batch its own short transaction, so a huge table never holds one long lock.
--
-- 1. Chat and event tables may be pruned by age (off unless [retention] says so): chat
--    lines and private messages by when the bot received them (received_at: the bot's
--    clock, not a time the server claims), channel events by `at` (also the bot's receipt
--    time). One index per table on that column lets each batch find its oldest rows
--    without scanning the table. Building them takes a lock that holds back writes to
--    these tables while `daz-actors migrate` runs (a large chat log: seconds to minutes).
-- 2. daz_prune_retry_queue: cleanup_retry_queue's rule (finished items past the retention,
--    dead letters only with a dead-letter retention), at most p_batch_size items per
--    call. History rows go with their items (daz_retry_history.item_id ON DELETE CASCADE,
--    0001; the queue's delete trigger since 0014). cleanup_retry_queue itself stays as it
--    was (the documents' contract).

CREATE INDEX daz_chat_messages_received_at_idx ON daz_chat_messages (received_at);
CREATE INDEX daz_private_messages_received_at_idx ON daz_private_messages (received_at);
CREATE INDEX daz_channel_events_at_idx ON daz_channel_events (at);

CREATE FUNCTION daz_prune_retry_queue(
    p_retention_days double precision,
    p_dead_letter_retention_days double precision,
    p_batch_size integer
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_deleted integer;
BEGIN
    IF p_retention_days IS NULL OR p_retention_days < 0 THEN
        RAISE EXCEPTION 'daz_prune_retry_queue: retention_days must be >= 0, got %',
            p_retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dead_letter_retention_days < 0 THEN
        RAISE EXCEPTION 'daz_prune_retry_queue: dead_letter_retention_days must be >= 0, got %',
            p_dead_letter_retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'daz_prune_retry_queue: batch_size must be at least 1, got %',
            p_batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the partial index daz_retry_queue_finished_idx (updated_at, finished statuses)
    -- finds the batch; SKIP LOCKED: an item an operator is replaying right now waits
    WITH doomed AS MATERIALIZED (
        SELECT id FROM daz_retry_queue
        WHERE (status IN ('completed', 'failed')
               AND updated_at < now() - make_interval(secs => p_retention_days * 86400))
           OR (p_dead_letter_retention_days IS NOT NULL
               AND status = 'dead_letter'
               AND updated_at < now() - make_interval(secs => p_dead_letter_retention_days * 86400))
        ORDER BY updated_at
        LIMIT p_batch_size
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM daz_retry_queue q USING doomed d WHERE q.id = d.id;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;
