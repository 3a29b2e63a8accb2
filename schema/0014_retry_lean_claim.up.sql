-- 0014: less PostgreSQL work per job on the retry pipeline's hot path (issue 15).
--
-- 1. No foreign-key check per history row. Every history row is written by one of the
--    queue's own functions, in the statement that updates or locks its queue row
--    (completion, failure, hand-back, lock expiry, replay), so the item exists when its
--    row is written, and a DELETE of the item waits for that lock. The key checked it
--    again for every row: a `SELECT ... FOR KEY SHARE` of the queue row, which also writes
--    a lock record to the WAL (55 bytes and a few us of PostgreSQL CPU per job,
--    bench/README.md). What the key did on delete (ON DELETE CASCADE: an item's history
--    goes with it) is now a statement-level trigger, and a TRUNCATE of the queue empties
--    the history too (the key used to refuse it). What the key also did, and nothing does
--    now: refuse a history row written by hand for an item that does not exist. Only the
--    queue's functions write history.
-- 2. The claim's two rescues (expired items, expired locks) run only when a probe of
--    their partial index finds something to rescue. Each is an UPDATE joined to a
--    locking CTE (the lock rescue also writes history rows), run on every claim even when
--    there is nothing to do, which is nearly always: about 12% of PostgreSQL's CPU per job
--    (bench/README.md). The probe takes no lock; the rescue itself still takes its rows
--    with FOR UPDATE SKIP LOCKED, so what it does is unchanged, and a row that becomes
--    rescuable just after the probe is rescued by the next claim.

ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_item_id_fkey;

-- an item's history goes with it (what ON DELETE CASCADE did): one DELETE per statement
CREATE FUNCTION daz_retry_history_follow_delete() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM daz_retry_history h USING daz_retry_deleted_items d WHERE h.item_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER daz_retry_queue_history_follows_delete
AFTER DELETE ON daz_retry_queue
REFERENCING OLD TABLE AS daz_retry_deleted_items
FOR EACH STATEMENT
EXECUTE FUNCTION daz_retry_history_follow_delete();

-- a TRUNCATE of the queue empties the history (the key refused one without it). A DELETE,
-- not a TRUNCATE: `TRUNCATE daz_retry_queue, daz_retry_history` must keep working, and a
-- TRUNCATE here would find the history in use by that very statement.
CREATE FUNCTION daz_retry_history_follow_truncate() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM daz_retry_history;
    RETURN NULL;
END
$$;

CREATE TRIGGER daz_retry_queue_history_follows_truncate
AFTER TRUNCATE ON daz_retry_queue
FOR EACH STATEMENT
EXECUTE FUNCTION daz_retry_history_follow_truncate();

-- 0008's claim, the rescues behind their probes (item 2 above)
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

    IF EXISTS (
        SELECT 1 FROM daz_retry_queue
        WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()
    ) THEN
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
    END IF;

    IF EXISTS (
        SELECT 1 FROM daz_retry_queue
        WHERE status = 'processing' AND locked_at < now() - p_lock_timeout
    ) THEN
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
        SET status = CASE WHEN q.retry_count + 1 > q.max_retries THEN 'dead_letter'
                      ELSE 'pending' END,
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
    END IF;

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
