-- 0014: no foreign-key check on the retry pipeline's hot path (issue 15).
--
-- Every history row is written by one of the queue's own functions, in the statement that
-- updates or locks its queue row (completion, failure, hand-back, lock expiry, replay), so
-- the item exists when its row is written, and a DELETE of the item waits for that lock.
-- The foreign key checked it again for every row: a `SELECT ... FOR KEY SHARE` of the
-- queue row, which also writes a lock record to the WAL (about 10 us of PostgreSQL CPU and
-- 55 bytes of WAL per job, bench/README.md). What the key did on delete (ON DELETE
-- CASCADE: an item's history goes with it) is now a statement-level trigger, and a
-- TRUNCATE of the queue empties the history too (the key used to refuse it).
--
-- What the key also did, and nothing does now: refuse a history row written by hand for
-- an item that does not exist. Only the queue's functions write history.

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
