-- 0015: the dashboard's status index off the retry hot path (issue 15).
--
-- 0013 added a full index on daz_retry_queue (status, id) so that a status filter's keyset
-- page reads the newest items of that status first. Every claim (pending -> processing)
-- and every completion (processing -> completed) writes a new row version that is not HOT
-- (status is in other indexes' predicates), so each entered that index again: about 264
-- bytes of WAL and 10 us of PostgreSQL CPU per job (bench/README.md).
--
-- Now the index holds only the statuses no worker writes in its steady state: 'failed'
-- (expired items) and 'dead_letter', the rare ones a pkey scan would have to walk far to
-- find. The hot statuses page without it: 'completed' and 'pending' are most rows (a
-- backward scan of the primary key finds a page at once), 'processing' rows are few
-- (at most workers x batch per process) and are found through the partial
-- daz_retry_queue_processing_idx of 0001.

DROP INDEX daz_retry_queue_status_id_idx;
CREATE INDEX daz_retry_queue_status_id_idx ON daz_retry_queue (status, id)
    WHERE status IN ('failed', 'dead_letter');
