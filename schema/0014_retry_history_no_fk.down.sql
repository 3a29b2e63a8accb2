-- 0014 rolled back: the history's foreign key again (ON DELETE CASCADE). History rows whose
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
