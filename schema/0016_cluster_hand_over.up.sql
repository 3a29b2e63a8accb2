-- 0016: a retry item for a channel another node holds is handed over, not lost (issue 17).
--
-- Several nodes share one retry queue, so a worker may claim an item that only the node
-- holding the item's channel can carry out (say a line there, run a command there). That
-- worker hands the item back with daz_retry_hand_over: released like an orderly stop's
-- hand-back (release_retry_items: no attempt counted, the history row closed as
-- 'released'), due again after a short delay (so the worker that handed it back does not
-- take it again at once), its hand-overs counted in event_metadata.hand_overs; and a
-- NOTIFY daz_retry_handed_over (payload {"channel": ..., "delay": seconds}) lets the
-- holding node wake its own workers when the item is due, so they, not the others (which
-- only poll), take it next. The claim itself is unchanged.
--
-- Verdicts (nothing is changed but for 'handed_over'):
--   handed_over  released, due after p_delay_held (a valid lease is held by a live node:
--                another one, or this one while its room is still starting) or after
--                p_delay_unheld (a failover or a handover is under way: no valid lease but
--                a live node lists the channel in its config, or the lease's holder is no
--                longer heard from, its lease not yet run out)
--   stay         p_only_elsewhere and no other node holds a valid lease: the caller keeps
--                the item (what it does in a single process)
--   unserved     no valid lease and no live node (heard from within p_live, not stopped)
--                lists the channel: nobody could ever carry it out
--   exhausted    already handed over p_max_hand_overs times: the caller fails the attempt
--                (counted), so an item no holder takes ends as a dead letter, not bouncing
--   lost         the worker's lease on the item is gone (stale token): nothing to do

CREATE FUNCTION daz_retry_hand_over(
    p_item_id bigint,
    p_worker_id text,
    p_lock_token uuid,
    p_channel text,
    p_node text,
    p_live interval,
    p_delay_held interval,
    p_delay_unheld interval,
    p_max_hand_overs integer,
    p_only_elsewhere boolean DEFAULT false
)
RETURNS TABLE (verdict text, holder text, hand_overs integer)
LANGUAGE plpgsql
AS $$
DECLARE
    v_holder text;
    v_holder_live boolean;
    v_count integer;
    v_delay interval;
BEGIN
    IF p_channel IS NULL OR p_channel = '' THEN
        RAISE EXCEPTION 'daz_retry_hand_over: channel must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_max_hand_overs IS NULL OR p_max_hand_overs < 0 THEN
        RAISE EXCEPTION 'daz_retry_hand_over: max hand-overs must be >= 0, got %',
            p_max_hand_overs USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT l.holder, n.node_id IS NOT NULL INTO v_holder, v_holder_live
    FROM daz_leases l
    LEFT JOIN daz_cluster_nodes n
        ON n.node_id = l.holder AND n.stopped_at IS NULL AND n.heartbeat_at > now() - p_live
    WHERE l.kind = 'channel' AND l.name = p_channel
      AND l.holder IS NOT NULL AND l.expires_at > now();
    IF p_only_elsewhere AND (v_holder IS NULL OR v_holder = p_node) THEN
        RETURN QUERY SELECT 'stay'::text, v_holder, NULL::integer;
        RETURN;
    END IF;
    IF v_holder IS NULL AND NOT EXISTS (
        SELECT 1 FROM daz_cluster_nodes n
        WHERE n.stopped_at IS NULL AND n.heartbeat_at > now() - p_live
          AND p_channel = ANY (n.channels)
    ) THEN
        RETURN QUERY SELECT 'unserved'::text, NULL::text, NULL::integer;
        RETURN;
    END IF;
    SELECT coalesce((q.event_metadata ->> 'hand_overs')::integer, 0) INTO v_count
    FROM daz_retry_queue q
    WHERE q.id = p_item_id AND q.status = 'processing'
      AND q.lock_token = p_lock_token AND q.locked_by = p_worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lost'::text, v_holder, NULL::integer;
        RETURN;
    END IF;
    IF v_count >= p_max_hand_overs THEN
        RETURN QUERY SELECT 'exhausted'::text, v_holder, v_count;
        RETURN;
    END IF;
    PERFORM 1 FROM release_retry_items(ARRAY[p_item_id], p_worker_id, ARRAY[p_lock_token]);
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lost'::text, v_holder, NULL::integer;
        RETURN;
    END IF;
    v_delay := CASE WHEN v_holder_live THEN p_delay_held ELSE p_delay_unheld END;
    UPDATE daz_retry_queue q
    SET next_retry_at = now() + v_delay,
        event_metadata = jsonb_set(
            CASE WHEN jsonb_typeof(q.event_metadata) = 'object' THEN q.event_metadata
                 ELSE '{}'::jsonb END,
            '{hand_overs}', to_jsonb(v_count + 1))
    WHERE q.id = p_item_id;
    PERFORM pg_notify(
        'daz_retry_handed_over',
        json_build_object('channel', p_channel,
                          'delay', extract(epoch FROM v_delay))::text);
    RETURN QUERY SELECT 'handed_over'::text, v_holder, v_count + 1;
END;
$$;
