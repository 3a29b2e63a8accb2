-- Handing leased items back without counting an attempt: a worker that stops in order
-- returns the items it acquired but did not finish. They are due again at once, their
-- retry count unchanged; the open history row is closed with the outcome 'released'.
-- A stale token changes nothing (the item was reclaimed by another worker).

ALTER TABLE daz_retry_history DROP CONSTRAINT daz_retry_history_outcome_check;
ALTER TABLE daz_retry_history ADD CONSTRAINT daz_retry_history_outcome_check
    CHECK (outcome IS NULL
           OR outcome IN ('completed', 'failed', 'dead_letter', 'lock_expired', 'released'));

CREATE FUNCTION release_retry_items(p_item_ids bigint[], p_worker_id text, p_lock_tokens uuid[])
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
