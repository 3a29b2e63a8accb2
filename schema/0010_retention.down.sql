-- 0010 rolled back: no batched queue pruning, no indexes for retention.

DROP FUNCTION daz_prune_retry_queue(double precision, double precision, integer);
DROP INDEX daz_channel_events_at_idx;
DROP INDEX daz_private_messages_received_at_idx;
DROP INDEX daz_chat_messages_received_at_idx;
