-- 0008 rolled back: the claim opens the attempt's history row again and the outcome
-- closes it (0002-0006). Attempts claimed under 0008 and finished after the rollback get
-- no history row (they have no open row to close).

DROP FUNCTION daz_complete_and_acquire(text, bigint[], uuid[], integer, double precision);

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
        SELECT id, lock_token, locked_by FROM daz_retry_queue
        WHERE status = 'processing' AND locked_at < now() - p_lock_timeout
        FOR UPDATE SKIP LOCKED
    ), closed AS (
        UPDATE daz_retry_history h
        SET finished_at = now(),
            outcome = 'lock_expired',
            error = 'lock held by ' || s.locked_by || ' expired after ' || p_lock_timeout::text,
            error_code = 'lock_expired'
        FROM stale s
        WHERE h.lock_token = s.lock_token
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
    ), started AS (
        INSERT INTO daz_retry_history
            (item_id, event_id, attempt, worker_id, lock_token, correlation_id, started_at)
        SELECT cl.id, cl.event_id, cl.retry_count + 1, p_worker_id, cl.lock_token,
               cl.correlation_id, now()
        FROM claimed cl
    )
    SELECT * FROM claimed cl ORDER BY cl.priority DESC, cl.next_retry_at, cl.id;
END
$$;

CREATE OR REPLACE FUNCTION complete_retry_item(p_item_id bigint, p_worker_id text, p_lock_token uuid)
RETURNS boolean
LANGUAGE sql
AS $$
    WITH done AS (
        UPDATE daz_retry_queue
        SET status = 'completed',
            completed_at = now(),
            updated_at = now(),
            locked_by = NULL,
            locked_at = NULL,
            lock_token = NULL
        WHERE id = p_item_id
          AND status = 'processing'
          AND lock_token = p_lock_token
          AND locked_by = p_worker_id
        RETURNING id
    ), finished AS (
        UPDATE daz_retry_history
        SET finished_at = now(), outcome = 'completed'
        WHERE lock_token = p_lock_token AND EXISTS (SELECT 1 FROM done)
    )
    SELECT EXISTS (SELECT 1 FROM done)
$$;

CREATE OR REPLACE FUNCTION complete_retry_items(p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[])
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    WITH input AS (
        SELECT t.item_id, t.lock_token
        FROM unnest(p_item_ids, p_lock_tokens) AS t(item_id, lock_token)
    ), done AS (
        UPDATE daz_retry_queue q
        SET status = 'completed',
            completed_at = now(),
            updated_at = now(),
            locked_by = NULL,
            locked_at = NULL,
            lock_token = NULL
        FROM input i
        WHERE q.id = i.item_id
          AND q.status = 'processing'
          AND q.lock_token = i.lock_token
          AND q.locked_by = p_worker_id
        RETURNING q.id, i.lock_token
    ), finished AS (
        UPDATE daz_retry_history h
        SET finished_at = now(), outcome = 'completed'
        FROM done d
        WHERE h.lock_token = d.lock_token
    )
    SELECT id FROM done
$$;

CREATE OR REPLACE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_lock_token uuid,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT true,
    p_next_delay_seconds double precision DEFAULT NULL
) RETURNS SETOF daz_retry_queue
LANGUAGE plpgsql
AS $$
DECLARE
    r daz_retry_queue%ROWTYPE;
    v_dead boolean;
BEGIN
    SELECT * INTO r FROM daz_retry_queue q
    WHERE q.id = p_item_id
      AND q.status = 'processing'
      AND q.lock_token = p_lock_token
      AND q.locked_by = p_worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    v_dead := NOT coalesce(p_retryable, true) OR r.retry_count + 1 > r.max_retries;

    UPDATE daz_retry_history h
    SET finished_at = now(),
        outcome = CASE WHEN v_dead THEN 'dead_letter' ELSE 'failed' END,
        error = p_error_msg,
        error_code = p_error_code
    WHERE h.lock_token = p_lock_token;

    RETURN QUERY
    UPDATE daz_retry_queue q
    SET status = CASE WHEN v_dead THEN 'dead_letter' ELSE 'pending' END,
        retry_count = r.retry_count + 1,
        next_retry_at = CASE
            WHEN v_dead THEN r.next_retry_at
            WHEN p_next_delay_seconds IS NOT NULL
                THEN now() + make_interval(secs => greatest(p_next_delay_seconds, 0))
            ELSE now() + make_interval(secs => calculate_next_retry(
                r.retry_count, r.retry_delay_seconds, r.backoff_multiplier, r.max_delay_seconds))
        END,
        locked_by = NULL,
        locked_at = NULL,
        lock_token = NULL,
        last_error = p_error_msg,
        last_error_code = p_error_code,
        updated_at = now()
    WHERE q.id = p_item_id
    RETURNING q.*;
END
$$;

CREATE OR REPLACE FUNCTION release_retry_items(p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[])
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    WITH leases AS (
        SELECT * FROM unnest(p_item_ids, p_lock_tokens) AS l(item_id, lock_token)
    ), released AS (
        UPDATE daz_retry_queue q
        SET status = 'pending',
            next_retry_at = now(),
            updated_at = now(),
            locked_by = NULL,
            locked_at = NULL,
            lock_token = NULL
        FROM leases l
        WHERE q.id = l.item_id
          AND q.lock_token = l.lock_token
          AND q.locked_by = p_worker_id
          AND q.status = 'processing'
        RETURNING q.id, l.lock_token
    ), finished AS (
        UPDATE daz_retry_history h
        SET finished_at = now(), outcome = 'released'
        FROM released r
        WHERE h.lock_token = r.lock_token
    )
    SELECT id FROM released
$$;
