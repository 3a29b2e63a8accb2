-- 0005: queue items carry intents, not SQL; the worker computes each retry's delay.
--
-- 1. `jitter`: the retry policy's spread of each delay, applied by the worker, which now
--    passes the delay it computed to fail_retry_item (p_next_delay_seconds). Without one
--    (an operator's call) the function falls back to calculate_next_retry, without jitter.
-- 2. Items queued by earlier versions are rewritten as intents: a `sql.exec` item whose
--    statement is one of the chat log's inserts becomes `chat.log`, `pm.log` or
--    `channel_event.log` v1 with the row's fields; `cytube.send_chat` / `cytube.send_pm`
--    become `cytube.say` v1; `command.run` and `actor.poison` get their version. Any other
--    `sql.exec` item is dead-lettered with the reason, and its statement is removed: the
--    queue never runs SQL text. A trigger applies the same rewriting to rows inserted in
--    the old form later (a spool written by an earlier version, an older process).

ALTER TABLE daz_retry_queue
    ADD COLUMN jitter text NOT NULL DEFAULT 'none'
    CONSTRAINT daz_retry_queue_jitter_check
        CHECK (jitter IN ('none', 'proportional', 'full', 'decorrelated'));

DROP FUNCTION fail_retry_item(bigint, text, uuid, text, text, boolean);

-- Records a failed attempt if p_worker_id still holds the item under p_lock_token.
-- Retryable failures with retries left go back to pending, due p_next_delay_seconds from
-- now (the worker computes it from the item's policy, jitter included; NULL: the
-- jitter-free calculate_next_retry); a permanent failure, or one past max_retries, moves
-- the item to dead_letter. Returns the updated item, or no row when the token is stale.
CREATE FUNCTION fail_retry_item(
    p_item_id bigint,
    p_worker_id text,
    p_lock_token uuid,
    p_error_msg text,
    p_error_code text DEFAULT NULL,
    p_retryable boolean DEFAULT true,
    p_next_delay_seconds double precision DEFAULT NULL
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
            WHEN p_next_delay_seconds IS NOT NULL
                THEN now() + make_interval(secs => greatest(p_next_delay_seconds, 0))
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

-- The intent an item in an earlier version's form stands for. `problem` is set (and the
-- data emptied of its statement) when it stands for none.
CREATE FUNCTION daz_retry_legacy_intent(
    p_type text, p_data jsonb, OUT new_type text, OUT new_data jsonb, OUT problem text
)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_sql text := regexp_replace(coalesce(p_data->>'sql', ''), '\s+', ' ', 'g');
    a jsonb := p_data->'args';
BEGIN
    new_type := p_type;
    new_data := p_data;
    IF p_type = 'sql.exec' THEN
        IF jsonb_typeof(a) = 'array' AND v_sql = 'INSERT INTO daz_chat_messages (event_id, '
            'channel, username, message, sent_at, is_history, received_at, meta) VALUES ($1, '
            '$2, $3, $4, to_timestamp($5::bigint / 1000.0), $6, to_timestamp($7::bigint / '
            '1000.0), $8::jsonb) ON CONFLICT (event_id) DO NOTHING' THEN
            new_type := 'chat.log';
            new_data := jsonb_build_object('version', 1, 'args', jsonb_build_object(
                'event_id', a->0, 'channel', a->1, 'username', a->2, 'message', a->3,
                'sent_ms', a->4, 'is_history', a->5, 'received_ms', a->6,
                'meta', (a->>7)::jsonb));
        ELSIF jsonb_typeof(a) = 'array' AND v_sql = 'INSERT INTO daz_private_messages '
            '(event_id, channel, from_user, to_user, message, sent_at, received_at) VALUES '
            '($1, $2, $3, $4, $5, to_timestamp($6::bigint / 1000.0), to_timestamp($7::bigint '
            '/ 1000.0)) ON CONFLICT (event_id) DO NOTHING' THEN
            new_type := 'pm.log';
            new_data := jsonb_build_object('version', 1, 'args', jsonb_build_object(
                'event_id', a->0, 'channel', a->1, 'from_user', a->2, 'to_user', a->3,
                'message', a->4, 'sent_ms', a->5, 'received_ms', a->6));
        ELSIF jsonb_typeof(a) = 'array' AND v_sql = 'INSERT INTO daz_channel_events '
            '(event_id, kind, channel, username, title, payload, at) VALUES ($1, $2, $3, $4, '
            '$5, $6::jsonb, to_timestamp($7::bigint / 1000.0)) ON CONFLICT (event_id) DO '
            'NOTHING' THEN
            new_type := 'channel_event.log';
            new_data := jsonb_build_object('version', 1, 'args', jsonb_build_object(
                'event_id', a->0, 'kind', a->1, 'channel', a->2, 'username', a->3,
                'title', a->4, 'payload', (a->>5)::jsonb, 'at_ms', a->6));
        ELSE
            new_data := jsonb_build_object('legacy_statement_removed',
                                           length(coalesce(p_data->>'sql', '')));
            problem := 'legacy sql.exec item: its statement is not one of the bot''s own '
                'writes, and the queue no longer runs SQL text (statement removed)';
        END IF;
    ELSIF p_type IN ('cytube.send_chat', 'cytube.send_pm') THEN
        new_type := 'cytube.say';
        new_data := jsonb_build_object('version', 1, 'args', jsonb_build_object(
            'channel', p_data->'channel', 'msg', p_data->'msg',
            'to', CASE WHEN p_type = 'cytube.send_pm' THEN p_data->'to' ELSE 'null'::jsonb END,
            'connection', '', 'delivered_parts', 0));
    ELSIF p_type IN ('command.run', 'actor.poison') AND NOT (p_data ? 'version') THEN
        new_data := jsonb_build_object('version', 1, 'args', p_data);
    END IF;
EXCEPTION WHEN others THEN  -- e.g. a meta that is not JSON text: dead letter, not a failed insert
    new_type := p_type;
    new_data := jsonb_build_object('legacy_statement_removed', true);
    problem := 'legacy ' || p_type || ' item could not be read as an intent: ' || SQLERRM;
END
$$;

CREATE FUNCTION daz_retry_queue_upgrade_legacy() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    u record;
BEGIN
    SELECT * INTO u FROM daz_retry_legacy_intent(NEW.event_type, NEW.event_data);
    NEW.event_type := u.new_type;
    NEW.event_data := u.new_data;
    IF u.problem IS NOT NULL THEN
        NEW.status := 'dead_letter';
        NEW.last_error := u.problem;
        NEW.last_error_code := 'legacy_item';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER daz_retry_queue_upgrade_legacy
BEFORE INSERT ON daz_retry_queue
FOR EACH ROW
WHEN (NEW.event_type IN ('sql.exec', 'cytube.send_chat', 'cytube.send_pm')
      OR (NEW.event_type IN ('command.run', 'actor.poison') AND NOT (NEW.event_data ? 'version')))
EXECUTE FUNCTION daz_retry_queue_upgrade_legacy();

UPDATE daz_retry_queue q
SET event_type = u.new_type,
    event_data = u.new_data,
    status = CASE WHEN u.problem IS NOT NULL AND q.status IN ('pending', 'processing')
                  THEN 'dead_letter' ELSE q.status END,
    locked_by = CASE WHEN u.problem IS NOT NULL THEN NULL ELSE q.locked_by END,
    locked_at = CASE WHEN u.problem IS NOT NULL THEN NULL ELSE q.locked_at END,
    lock_token = CASE WHEN u.problem IS NOT NULL THEN NULL ELSE q.lock_token END,
    last_error = coalesce(u.problem, q.last_error),
    last_error_code = CASE WHEN u.problem IS NOT NULL THEN 'legacy_item'
                           ELSE q.last_error_code END,
    updated_at = now()
FROM daz_retry_queue src
CROSS JOIN LATERAL daz_retry_legacy_intent(src.event_type, src.event_data) u
WHERE src.id = q.id
  AND (q.event_type IN ('sql.exec', 'cytube.send_chat', 'cytube.send_pm')
       OR (q.event_type IN ('command.run', 'actor.poison') AND NOT (q.event_data ? 'version')));
