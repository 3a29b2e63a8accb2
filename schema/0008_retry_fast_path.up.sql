-- 0008: the retry pipeline's fast path (issue 15).
--
-- 1. One history write per attempt instead of two. The claim no longer inserts an open
--    history row: while an attempt runs, the queue row itself records it (locked_by,
--    locked_at, lock_token; `queue.history` shows it as the open attempt). The row is
--    written once, when the attempt ends, with started_at = the claim time (locked_at):
--      success      'completed'   (worker, token, start, end)
--      failure      'failed' or 'dead_letter' with the error
--      hand-back    'released'
--      lock expiry  'lock_expired' (written by the rescue in the next acquire)
--    Every attempt still has exactly one row once it is over (the token is unique). An
--    attempt claimed before this migration already has its open row: the outcome closes it
--    (INSERT ... ON CONFLICT (lock_token) DO UPDATE).
-- 2. daz_complete_and_acquire: the completions of one batch and the claim of the next in
--    one statement and one commit (a worker's steady state: one round trip per batch).

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

-- One item, by lock token: the history row of the attempt is written here.
CREATE OR REPLACE FUNCTION complete_retry_item(p_item_id bigint, p_worker_id text, p_lock_token uuid)
RETURNS boolean
LANGUAGE sql
AS $$
    SELECT EXISTS (
        SELECT 1 FROM complete_retry_items(ARRAY[p_item_id], p_worker_id, ARRAY[p_lock_token])
    )
$$;

-- Batched completion: p_item_ids[i] goes with p_lock_tokens[i]. Returns the ids completed;
-- the others had stale tokens (nothing changed there). `held` reads the row as claimed
-- (its start time); the UPDATE re-checks the token on the row's latest version.
CREATE OR REPLACE FUNCTION complete_retry_items(
    p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[]
)
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
        FROM input i, daz_retry_queue held
        WHERE q.id = i.item_id
          AND held.id = i.item_id
          AND q.status = 'processing'
          AND q.lock_token = i.lock_token
          AND q.locked_by = p_worker_id
        RETURNING q.id, q.event_id, q.retry_count, q.correlation_id, i.lock_token,
                  held.locked_at
    ), recorded AS (
        INSERT INTO daz_retry_history AS h
            (item_id, event_id, attempt, worker_id, lock_token, correlation_id, started_at,
             finished_at, outcome)
        SELECT d.id, d.event_id, d.retry_count + 1, p_worker_id, d.lock_token,
               d.correlation_id, coalesce(d.locked_at, now()), now(), 'completed'
        FROM done d
        ON CONFLICT (lock_token) DO UPDATE
        SET finished_at = excluded.finished_at, outcome = excluded.outcome
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

    INSERT INTO daz_retry_history AS h
        (item_id, event_id, attempt, worker_id, lock_token, correlation_id, started_at,
         finished_at, outcome, error, error_code)
    VALUES (r.id, r.event_id, r.retry_count + 1, p_worker_id, p_lock_token, r.correlation_id,
            r.locked_at, now(), CASE WHEN v_dead THEN 'dead_letter' ELSE 'failed' END,
            p_error_msg, p_error_code)
    ON CONFLICT (lock_token) DO UPDATE
    SET finished_at = excluded.finished_at, outcome = excluded.outcome,
        error = excluded.error, error_code = excluded.error_code;

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

CREATE OR REPLACE FUNCTION release_retry_items(
    p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[]
)
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
        FROM leases l, daz_retry_queue held
        WHERE q.id = l.item_id
          AND held.id = l.item_id
          AND q.lock_token = l.lock_token
          AND q.locked_by = p_worker_id
          AND q.status = 'processing'
        RETURNING q.id, q.event_id, q.retry_count, q.correlation_id, l.lock_token,
                  held.locked_at
    ), recorded AS (
        INSERT INTO daz_retry_history AS h
            (item_id, event_id, attempt, worker_id, lock_token, correlation_id, started_at,
             finished_at, outcome)
        SELECT r.id, r.event_id, r.retry_count + 1, p_worker_id, r.lock_token,
               r.correlation_id, coalesce(r.locked_at, now()), now(), 'released'
        FROM released r
        ON CONFLICT (lock_token) DO UPDATE
        SET finished_at = excluded.finished_at, outcome = excluded.outcome
    )
    SELECT id FROM released
$$;

-- The completions of a worker's last batch and the claim of its next one, in one
-- statement (one round trip, one commit). Every row carries the ids completed (the same
-- array); the claimed items follow as the row's other columns. With nothing to claim, one
-- row whose item columns are NULL. The completions run first (a materialized CTE the
-- claim depends on).
CREATE FUNCTION daz_complete_and_acquire(
    p_worker_id text,
    p_item_ids bigint[],
    p_lock_tokens uuid[],
    p_batch_size integer,
    p_lock_timeout_seconds double precision DEFAULT 300
) RETURNS TABLE (completed_ids bigint[], item daz_retry_queue)
LANGUAGE plpgsql
AS $$
DECLARE
    v_done bigint[];
    v_any boolean := false;
BEGIN
    SELECT coalesce(array_agg(c), '{}') INTO v_done
    FROM complete_retry_items(coalesce(p_item_ids, '{}'), p_worker_id,
                              coalesce(p_lock_tokens, '{}')) AS c;
    FOR item IN
        SELECT * FROM daz_acquire_retry_items(
            p_worker_id, p_batch_size, make_interval(secs => p_lock_timeout_seconds))
    LOOP
        completed_ids := v_done;
        v_any := true;
        RETURN NEXT;
    END LOOP;
    IF NOT v_any THEN
        completed_ids := v_done;
        item := NULL;
        RETURN NEXT;
    END IF;
END
$$;
