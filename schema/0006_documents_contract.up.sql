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
