-- 0002: the retry queue's functions, views and enqueue notification (DESIGN section 7).
--
-- Lock tokens fence stale workers: every acquisition sets a fresh token, and completing or
-- failing an item needs the current one. A worker whose lock expired (and whose item was
-- reclaimed) gets "refused" (false / no row) and changes nothing.

-- Seconds to wait before retry number retry_count + 1:
-- min(max_delay, delay * multiplier ^ retry_count); delay 60, multiplier 2 gives
-- 60, 120, 240, 480, ... Computed through logarithms first so that a large retry_count
-- caps at max_delay instead of overflowing.
CREATE FUNCTION calculate_next_retry(
    p_retry_count integer,
    p_delay double precision,
    p_multiplier double precision,
    p_max_delay double precision
) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_delay <= 0 OR p_max_delay <= 0 THEN 0::double precision
        WHEN p_retry_count <= 0 OR p_multiplier <= 1 THEN least(p_delay, p_max_delay)
        WHEN ln(p_delay) + p_retry_count * ln(p_multiplier) >= ln(p_max_delay) THEN p_max_delay
        ELSE least(p_max_delay, p_delay * power(p_multiplier, p_retry_count))
    END
$$;

-- Claims up to p_batch_size due items for p_worker_id, highest priority first, then by due
-- time. Before claiming it
--   * marks pending items whose expires_at has passed as 'failed' (error code 'expired'):
--     expired work is never handed out, and is pruned by cleanup like completed work;
--   * rescues items whose worker's lock is older than p_lock_timeout: the open history row
--     is closed as 'lock_expired', the attempt counts as a failure (so an item that kills
--     its workers cannot loop forever), and the item becomes due at once (or dead_letter when
--     its retries are used up). The rescue locks with SKIP LOCKED and the fenced
--     complete/fail re-check the token, so it never overwrites an outcome another worker
--     wrote first.
-- Each claimed item gets a fresh lock_token and a history row for the attempt.
CREATE FUNCTION acquire_retry_items(
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

-- Marks one item completed if p_worker_id still holds it under p_lock_token.
-- Returns false (and changes nothing) for a stale token or an item not in processing.
CREATE FUNCTION complete_retry_item(p_item_id bigint, p_worker_id text, p_lock_token uuid)
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

-- Batched completion: one call for many items held by one worker; p_item_ids[i] goes with
-- p_lock_tokens[i]. Returns the ids it completed; the others had stale tokens.
CREATE FUNCTION complete_retry_items(p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[])
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

-- Records a failed attempt if p_worker_id still holds the item under p_lock_token.
-- Retryable failures with retries left go back to pending, due after
-- calculate_next_retry(retry_count, ...) seconds; a permanent failure, or one past
-- max_retries, moves the item to dead_letter. Returns the updated item, or no row when the
-- token is stale (nothing is changed then).
CREATE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_lock_token uuid,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT true
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

-- Puts a dead letter back in the queue, due now, with its retry count reset. Returns false
-- when the item does not exist or is not a dead letter.
CREATE FUNCTION requeue_dead_letter(p_item_id bigint)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE daz_retry_queue
    SET status = 'pending',
        retry_count = 0,
        next_retry_at = now(),
        updated_at = now()
    WHERE id = p_item_id AND status = 'dead_letter';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('daz_retry_enqueued', '1');
    RETURN true;
END
$$;

-- Deletes completed and failed (expired) items last updated more than p_retention_days ago,
-- and dead letters older than p_dead_letter_retention_days when that is given (by default
-- dead letters stay until an operator acts). History rows go with their items.
-- Returns the number of items deleted.
CREATE FUNCTION cleanup_retry_queue(
    p_retention_days double precision,
    p_dead_letter_retention_days double precision DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_deleted integer;
BEGIN
    IF p_retention_days IS NULL OR p_retention_days < 0 THEN
        RAISE EXCEPTION 'cleanup_retry_queue: retention_days must be >= 0, got %', p_retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dead_letter_retention_days < 0 THEN
        RAISE EXCEPTION 'cleanup_retry_queue: dead_letter_retention_days must be >= 0, got %',
            p_dead_letter_retention_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM daz_retry_queue
    WHERE (status IN ('completed', 'failed')
           AND updated_at < now() - make_interval(secs => p_retention_days * 86400))
       OR (p_dead_letter_retention_days IS NOT NULL
           AND status = 'dead_letter'
           AND updated_at < now() - make_interval(secs => p_dead_letter_retention_days * 86400));
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

-- Counts by status, event type and plugin.
CREATE VIEW daz_retry_queue_stats AS
SELECT status,
       event_type,
       plugin,
       count(*) AS item_count,
       min(created_at) AS oldest_created_at,
       min(next_retry_at) AS earliest_next_retry_at,
       max(retry_count) AS max_retry_count,
       avg(retry_count)::double precision AS avg_retry_count
FROM daz_retry_queue
GROUP BY status, event_type, plugin;

-- What an operator should look at, one row per item and reason:
--   dead_letter       every dead letter
--   stuck_processing  processing for longer than twice its attempt timeout plus a minute
--   near_max_retries  pending with at most one retry left after the next failure
--   old_pending       due for more than 15 minutes and still not picked up
CREATE VIEW daz_retry_queue_alerts AS
SELECT 'dead_letter'::text AS alert_type, 'error'::text AS severity,
       id AS item_id, event_id, event_type, plugin, status, retry_count, max_retries,
       last_error, last_error_code, updated_at AS since
FROM daz_retry_queue
WHERE status = 'dead_letter'
UNION ALL
SELECT 'stuck_processing', 'warning',
       id, event_id, event_type, plugin, status, retry_count, max_retries,
       last_error, last_error_code, locked_at
FROM daz_retry_queue
WHERE status = 'processing'
  AND locked_at < now() - make_interval(secs => attempt_timeout_seconds * 2 + 60)
UNION ALL
SELECT 'near_max_retries', 'warning',
       id, event_id, event_type, plugin, status, retry_count, max_retries,
       last_error, last_error_code, updated_at
FROM daz_retry_queue
WHERE status = 'pending' AND retry_count > 0 AND retry_count >= max_retries - 1
UNION ALL
SELECT 'old_pending', 'warning',
       id, event_id, event_type, plugin, status, retry_count, max_retries,
       last_error, last_error_code, next_retry_at
FROM daz_retry_queue
WHERE status = 'pending' AND next_retry_at < now() - interval '15 minutes';

-- One NOTIFY per INSERT statement (not per row) on channel daz_retry_enqueued; the payload is
-- the number of new rows. Conflicting rows of an idempotent enqueue are not new and do not
-- notify. PostgreSQL folds identical payloads within a transaction into one notification.
CREATE FUNCTION daz_retry_queue_notify_enqueued()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_count bigint;
BEGIN
    SELECT count(*) INTO v_count FROM new_rows;
    IF v_count > 0 THEN
        PERFORM pg_notify('daz_retry_enqueued', v_count::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER daz_retry_queue_enqueued
    AFTER INSERT ON daz_retry_queue
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION daz_retry_queue_notify_enqueued();
