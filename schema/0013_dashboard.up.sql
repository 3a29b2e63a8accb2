-- 0013: the operators' dashboard (issue 18).
--
-- * A requeue of a dead letter is recorded in the item's history like a replay (0006):
--   outcome 'requeued', worker_id naming who asked. requeue_retry_items(ids, by) does it
--   for dead letters only, with one notification.
-- * daz_retry_actions: every operator action (requeue, replay, purge), who did it, on which
--   items and with which filter. A purge deletes the items and their history, so this table
--   is where a purge stays on record.
-- * Indexes for the dashboard: finished attempts by time (the per-minute chart), and items
--   by status then id (a status filter's keyset page reads the newest first).
--
-- The outcome check is extended in place (its list read from the catalogue), so outcomes
-- that other migrations add are kept.

DO $$
DECLARE
    def text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def
    FROM pg_constraint WHERE conname = 'daz_retry_history_outcome_check';
    IF def IS NULL OR position('ARRAY[' IN def) = 0 THEN
        RAISE EXCEPTION '0013: unexpected daz_retry_history_outcome_check: %', def;
    END IF;
    ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
    EXECUTE 'ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check '
        || replace(def, 'ARRAY[', 'ARRAY[''requeued''::text, ');
END
$$;

CREATE FUNCTION requeue_retry_items(p_item_ids bigint[], p_by text)
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    WITH requeued AS (
        UPDATE daz_retry_queue q
        SET status = 'pending',
            retry_count = 0,
            next_retry_at = now(),
            updated_at = now()
        WHERE q.id = ANY (p_item_ids) AND q.status = 'dead_letter'
        RETURNING q.id, q.event_id, q.correlation_id
    ), recorded AS (
        INSERT INTO daz_retry_history (item_id, event_id, attempt, worker_id, lock_token,
                                       correlation_id, started_at, finished_at, outcome, error)
        SELECT r.id, r.event_id, 0, p_by, gen_random_uuid(), r.correlation_id, now(), now(),
               'requeued', 'requeued by ' || p_by
        FROM requeued r
    ), notified AS (
        SELECT pg_notify('daz_retry_enqueued', count(*)::text)
        FROM requeued HAVING count(*) > 0
    )
    SELECT r.id FROM requeued r LEFT JOIN notified ON true ORDER BY r.id
$$;

CREATE TABLE daz_retry_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL CHECK (action IN ('requeue', 'replay', 'purge')),
    done_by     text NOT NULL,
    item_count  integer NOT NULL,
    -- the items acted on (a purge's no longer exist)
    item_ids    bigint[] NOT NULL,
    -- the filter as the operator gave it; NULL for one item
    filter      text
);
CREATE INDEX daz_retry_actions_at_idx ON daz_retry_actions (at);

CREATE INDEX daz_retry_history_finished_at_idx ON daz_retry_history (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX daz_retry_queue_status_id_idx ON daz_retry_queue (status, id);
