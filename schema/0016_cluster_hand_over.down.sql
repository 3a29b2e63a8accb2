-- 0016 rolled back: a retry item for a channel this node does not hold is no longer
-- handed over (items handed over keep their event_metadata.hand_overs count).
DROP FUNCTION daz_retry_hand_over(bigint, text, uuid, text, text, interval, interval, interval,
                                  integer, boolean);
