-- Rolls 0005 back: items go back to the forms the earlier version reads (the chat log's
-- intents to its `sql.exec` inserts, `cytube.say` to `cytube.send_chat`/`_pm`), the
-- legacy trigger and the jitter column go, and fail_retry_item computes delays again.
-- A `cytube.say` that had delivered some parts is sent whole by the earlier version.

DROP TRIGGER daz_retry_queue_upgrade_legacy ON daz_retry_queue;
DROP FUNCTION daz_retry_queue_upgrade_legacy();
DROP FUNCTION daz_retry_legacy_intent(text, jsonb);

UPDATE daz_retry_queue q
SET event_type = 'sql.exec',
    event_data = jsonb_build_object(
        'sql', CASE q.event_type
            WHEN 'chat.log' THEN E'INSERT INTO daz_chat_messages\n    (event_id, channel, username, message, sent_at, is_history, received_at, meta)\nVALUES ($1, $2, $3, $4, to_timestamp($5::bigint / 1000.0), $6,\n        to_timestamp($7::bigint / 1000.0), $8::jsonb)\nON CONFLICT (event_id) DO NOTHING'
            WHEN 'pm.log' THEN E'INSERT INTO daz_private_messages\n    (event_id, channel, from_user, to_user, message, sent_at, received_at)\nVALUES ($1, $2, $3, $4, $5, to_timestamp($6::bigint / 1000.0),\n        to_timestamp($7::bigint / 1000.0))\nON CONFLICT (event_id) DO NOTHING'
            ELSE E'INSERT INTO daz_channel_events (event_id, kind, channel, username, title, payload, at)\nVALUES ($1, $2, $3, $4, $5, $6::jsonb, to_timestamp($7::bigint / 1000.0))\nON CONFLICT (event_id) DO NOTHING'
        END,
        'args', CASE q.event_type
            WHEN 'chat.log' THEN jsonb_build_array(
                a->'event_id', a->'channel', a->'username', a->'message', a->'sent_ms',
                a->'is_history', a->'received_ms', to_jsonb((a->'meta')::text))
            WHEN 'pm.log' THEN jsonb_build_array(
                a->'event_id', a->'channel', a->'from_user', a->'to_user', a->'message',
                a->'sent_ms', a->'received_ms')
            ELSE jsonb_build_array(
                a->'event_id', a->'kind', a->'channel', a->'username', a->'title',
                to_jsonb((a->'payload')::text), a->'at_ms')
        END)
FROM (SELECT id, event_data->'args' AS a FROM daz_retry_queue) src
WHERE src.id = q.id AND q.event_type IN ('chat.log', 'pm.log', 'channel_event.log');

UPDATE daz_retry_queue
SET event_type = CASE WHEN event_data->'args'->'to' = 'null'::jsonb
                      THEN 'cytube.send_chat' ELSE 'cytube.send_pm' END,
    event_data = jsonb_strip_nulls(jsonb_build_object(
        'channel', event_data->'args'->'channel', 'msg', event_data->'args'->'msg',
        'to', nullif(event_data->'args'->'to', 'null'::jsonb)))
WHERE event_type = 'cytube.say';

UPDATE daz_retry_queue
SET event_data = event_data->'args'
WHERE event_type IN ('command.run', 'actor.poison') AND event_data ? 'version';

DROP FUNCTION fail_retry_item(bigint, text, uuid, text, text, boolean, double precision);

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

ALTER TABLE daz_retry_queue DROP COLUMN jitter;
