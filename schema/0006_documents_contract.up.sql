-- 0006: the Daz documents' SQL runs as written (the retry queue schema document and the Go
-- integration guide are the contract operators and other programs already know).
--
-- * Columns take the documents' names: channel -> channel_name, plugin -> plugin_name (one
--   column each; the views keep their output names).
-- * An INSERT without event_id gets a generated one (`RETURNING id, event_id` hands it back).
-- * acquire_retry_items takes its lock timeout in seconds (`..., 10, 300)`); the interval
--   form lives on as daz_acquire_retry_items. One function, so a prepared `($1, $2, $3)`
--   with untyped parameters resolves.
-- * complete_retry_item(item_id, worker_id) and fail_retry_item(item_id, worker_id,
--   error_msg, error_code): the documents' forms, fenced by worker id only (the item must be
--   processing and locked by that worker). They are weaker than the lock-token forms the
--   project itself uses: a worker whose lock expired and was reclaimed by ANOTHER worker is
--   refused either way, but a worker id reused across restarts could finish an attempt it no
--   longer holds. Prefer the token forms.
-- * calculate_next_retry(retry_count, delay, multiplier) (no cap) and cleanup_retry_queue()
--   (7 days; dead letters are kept unless a dead-letter retention is given, as before).

ALTER TABLE daz_retry_queue RENAME COLUMN channel TO channel_name;
ALTER TABLE daz_retry_queue RENAME COLUMN plugin TO plugin_name;
ALTER TABLE daz_retry_queue ALTER COLUMN event_id SET DEFAULT gen_random_uuid()::text;

ALTER FUNCTION acquire_retry_items(text, integer, interval) RENAME TO daz_acquire_retry_items;

CREATE FUNCTION acquire_retry_items(
    p_worker_id text,
    p_batch_size integer,
    p_lock_timeout_seconds double precision DEFAULT 300
) RETURNS SETOF daz_retry_queue
LANGUAGE sql
AS $$
    SELECT * FROM daz_acquire_retry_items(
        p_worker_id, p_batch_size, make_interval(secs => p_lock_timeout_seconds))
$$;

CREATE FUNCTION complete_retry_item(p_item_id bigint, p_worker_id text)
RETURNS boolean
LANGUAGE sql
AS $$
    SELECT coalesce((
        SELECT complete_retry_item(q.id, q.locked_by, q.lock_token)
        FROM daz_retry_queue q
        WHERE q.id = p_item_id AND q.status = 'processing' AND q.locked_by = p_worker_id
    ), false)
$$;

CREATE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_error_msg text,
    p_error_code text
) RETURNS boolean
LANGUAGE sql
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM daz_retry_queue q
        CROSS JOIN LATERAL fail_retry_item(
            q.id, q.locked_by, q.lock_token, p_error_msg, p_error_code, true, NULL) f
        WHERE q.id = p_item_id AND q.status = 'processing' AND q.locked_by = p_worker_id
    )
$$;

-- the documents' three-argument form: no cap on the delay
CREATE FUNCTION calculate_next_retry(
    p_retry_count integer,
    p_delay double precision,
    p_multiplier double precision
) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT calculate_next_retry(p_retry_count, p_delay, p_multiplier, 'infinity'::double precision)
$$;

-- the documents' form without arguments: 7 days
CREATE FUNCTION cleanup_retry_queue()
RETURNS integer
LANGUAGE sql
AS $$
    SELECT cleanup_retry_queue(7::double precision)
$$;

-- Replay (the documents' "event replay"): a finished item (completed, or failed because it
-- expired) is run again from scratch: pending, due now, retry count reset, checkpoint
-- cleared. Each replay is a history row (outcome 'replayed', worker_id: who asked).
ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check
    CHECK (outcome IS NULL OR outcome IN
           ('completed', 'failed', 'dead_letter', 'lock_expired', 'released', 'replayed'));

CREATE FUNCTION replay_retry_items(p_item_ids bigint[], p_by text)
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    WITH replayed AS (
        UPDATE daz_retry_queue q
        SET status = 'pending',
            retry_count = 0,
            next_retry_at = now(),
            completed_at = NULL,
            checkpoint = NULL,
            updated_at = now()
        WHERE q.id = ANY (p_item_ids) AND q.status IN ('completed', 'failed')
        RETURNING q.id, q.event_id, q.correlation_id
    ), recorded AS (
        INSERT INTO daz_retry_history (item_id, event_id, attempt, worker_id, lock_token,
                                       correlation_id, started_at, finished_at, outcome, error)
        SELECT r.id, r.event_id, 0, p_by, gen_random_uuid(), r.correlation_id, now(), now(),
               'replayed', 'replayed by ' || p_by
        FROM replayed r
    ), notified AS (
        SELECT pg_notify('daz_retry_enqueued', count(*)::text)
        FROM replayed HAVING count(*) > 0
    )
    SELECT r.id FROM replayed r LEFT JOIN notified ON true ORDER BY r.id
$$;
