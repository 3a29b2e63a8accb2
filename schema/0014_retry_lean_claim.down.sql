-- 0014 rolled back: the claim runs both rescues on every call again (as in 0008), and
-- the history's foreign key is back (ON DELETE CASCADE). History rows whose
-- item is gone (none unless written by hand while 0014 was applied) are deleted first, as
-- the key would not be valid over them.

DROP TRIGGER daz_retry_queue_history_follows_truncate ON daz_retry_queue;
DROP FUNCTION daz_retry_history_follow_truncate();
DROP TRIGGER daz_retry_queue_history_follows_delete ON daz_retry_queue;
DROP FUNCTION daz_retry_history_follow_delete();

DELETE FROM daz_retry_history h
WHERE NOT EXISTS (SELECT 1 FROM daz_retry_queue q WHERE q.id = h.item_id);

ALTER TABLE daz_retry_history
    ADD CONSTRAINT daz_retry_history_item_id_fkey
    FOREIGN KEY (item_id) REFERENCES daz_retry_queue (id) ON DELETE CASCADE;

CREATE OR REPLACE FUNCTION daz_acquire_retry_items(
    p_worker_id text,
    p_batch_size integer,
    p_lock_timeout interval DEFAULT interval '5 minutes'
) RETURNS SETOF daz_retry_queue
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'acquire_retry_items: worker_id must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'acquire_retry_items: batch_size must be at least 1, got %', p_batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lock_timeout IS NULL OR p_lock_timeout <= interval '0' THEN
        RAISE EXCEPTION 'acquire_retry_items: lock_timeout must be positive, got %', p_lock_timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WITH expired AS MATERIALIZED (
        SELECT id FROM daz_retry_queue
        WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()
        FOR UPDATE SKIP LOCKED
    )
    UPDATE daz_retry_queue q
    SET status = 'failed',
        last_error = 'expired at ' || q.expires_at::text || ' before it could be processed',
        last_error_code = 'expired',
        updated_at = now()
    FROM expired e
    WHERE q.id = e.id;

    WITH stale AS MATERIALIZED (
        SELECT id, event_id, retry_count, correlation_id, lock_token, locked_by, locked_at
        FROM daz_retry_queue
        WHERE status = 'processing' AND locked_at < now() - p_lock_timeout
        FOR UPDATE SKIP LOCKED
    ), closed AS (
        INSERT INTO daz_retry_history AS h
            (item_id, event_id, attempt, worker_id, lock_token, correlation_id, started_at,
             finished_at, outcome, error, error_code)
        SELECT s.id, s.event_id, s.retry_count + 1, s.locked_by, s.lock_token,
               s.correlation_id, s.locked_at, now(), 'lock_expired',
               'lock held by ' || s.locked_by || ' expired after ' || p_lock_timeout::text,
               'lock_expired'
        FROM stale s
        ON CONFLICT (lock_token) DO UPDATE
        SET finished_at = excluded.finished_at, outcome = excluded.outcome,
            error = excluded.error, error_code = excluded.error_code
    )
    UPDATE daz_retry_queue q
    SET status = CASE WHEN q.retry_count + 1 > q.max_retries THEN 'dead_letter' ELSE 'pending' END,
        retry_count = q.retry_count + 1,
        next_retry_at = now(),
        locked_by = NULL,
        locked_at = NULL,
        lock_token = NULL,
        last_error = 'lock held by ' || s.locked_by || ' expired after ' || p_lock_timeout::text,
        last_error_code = 'lock_expired',
        updated_at = now()
    FROM stale s
    WHERE q.id = s.id;

    RETURN QUERY
    WITH candidates AS MATERIALIZED (
        SELECT id FROM daz_retry_queue
        WHERE status = 'pending'
          AND next_retry_at <= now()
          AND (expires_at IS NULL OR expires_at > now())
        ORDER BY priority DESC, next_retry_at, id
        LIMIT p_batch_size
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE daz_retry_queue q
        SET status = 'processing',
            locked_by = p_worker_id,
            locked_at = now(),
            lock_token = gen_random_uuid(),
            updated_at = now()
        FROM candidates c
        WHERE q.id = c.id
        RETURNING q.*
    )
    SELECT * FROM claimed cl ORDER BY cl.priority DESC, cl.next_retry_at, cl.id;
END
$$;
