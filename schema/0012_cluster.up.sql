-- 0012: several processes on one PostgreSQL (issue 17).
--
-- daz_cluster_nodes: one row per running process (`daz-actors run` with [cluster] enabled):
--   who it is, the channels it is configured for, and its heartbeat. A node whose
--   heartbeat is older than the lease TTL is dead for placement; stopped_at marks an
--   orderly stop (SIGTERM), so the others move its channels at once.
-- daz_leases: who may act for a resource now. kind 'channel' (a CyTube channel: only its
--   holder joins it) or 'singleton' (work run once per database, e.g. the queue cleanup).
--   A lease is valid while expires_at > now() (the database's clock, the only one that
--   counts); its holder renews it every renew interval. The token comes from one sequence
--   and is drawn anew on every claim: it increases on every change of holder, so a write
--   fenced by it can tell a stale holder from the current one (daz_lease_is_current).

CREATE TABLE daz_cluster_nodes (
    node_id      text PRIMARY KEY CHECK (node_id <> ''),
    name         text NOT NULL,                 -- what pins refer to (several nodes may share it)
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at   timestamptz,                   -- set by an orderly stop
    weight       double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
    channels     text[] NOT NULL DEFAULT '{}'   -- the channels its config lets it serve
);

CREATE SEQUENCE daz_lease_token_seq;

CREATE TABLE daz_leases (
    kind        text NOT NULL CHECK (kind IN ('channel', 'singleton')),
    name        text NOT NULL CHECK (name <> ''),
    holder      text,                           -- a node_id; NULL once released
    token       bigint NOT NULL,                -- increases on every change of holder
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE INDEX daz_leases_holder ON daz_leases (holder) WHERE holder IS NOT NULL;

-- Claim a lease that is free, expired, or already ours: a fresh token, valid for p_ttl.
-- NULL when another node holds it.
CREATE FUNCTION daz_lease_claim(p_kind text, p_name text, p_node text, p_ttl interval)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_token bigint;
BEGIN
    IF p_node IS NULL OR p_node = '' THEN
        RAISE EXCEPTION 'daz_lease_claim: node must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' THEN
        RAISE EXCEPTION 'daz_lease_claim: ttl must be positive, got %', p_ttl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO daz_leases AS l (kind, name, holder, token, expires_at, acquired_at, renewed_at)
    VALUES (p_kind, p_name, p_node, nextval('daz_lease_token_seq'), now() + p_ttl, now(), now())
    ON CONFLICT (kind, name) DO UPDATE
        SET holder = EXCLUDED.holder,
            token = EXCLUDED.token,
            expires_at = EXCLUDED.expires_at,
            acquired_at = EXCLUDED.acquired_at,
            renewed_at = EXCLUDED.renewed_at
        WHERE l.holder IS NULL OR l.expires_at <= now() OR l.holder = EXCLUDED.holder
    RETURNING token INTO v_token;
    RETURN v_token;
END;
$$;

-- Extend the leases (p_kinds[i], p_names[i]) that p_node still validly holds; the ones
-- renewed (a lease not returned is lost: it expired, or was released). Only the leases
-- the node still uses are named: one it holds but no longer uses runs out (or is released).
CREATE FUNCTION daz_lease_renew(p_node text, p_ttl interval, p_kinds text[], p_names text[])
RETURNS TABLE (kind text, name text, token bigint)
LANGUAGE sql
AS $$
    UPDATE daz_leases AS l
    SET expires_at = now() + p_ttl, renewed_at = now()
    FROM unnest(p_kinds, p_names) AS wanted (kind, name)
    WHERE l.holder = p_node AND l.expires_at > now()
      AND l.kind = wanted.kind AND l.name = wanted.name
    RETURNING l.kind, l.name, l.token
$$;

-- Give leases back at once (an orderly stop, or a channel moving to another node).
CREATE FUNCTION daz_lease_release(p_node text, p_kind text, p_names text[])
RETURNS integer
LANGUAGE sql
AS $$
    WITH released AS (
        UPDATE daz_leases AS l
        SET holder = NULL, expires_at = now()
        WHERE l.holder = p_node AND l.kind = p_kind AND l.name = ANY (p_names)
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

-- The fence: true while p_token is the valid lease of (p_kind, p_name). A write made on
-- behalf of a lease checks it in the same statement.
CREATE FUNCTION daz_lease_is_current(p_kind text, p_name text, p_token bigint)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM daz_leases
        WHERE kind = p_kind AND name = p_name AND token = p_token
          AND holder IS NOT NULL AND expires_at > now()
    )
$$;

-- A lease given back (released, or its node stopped) wakes the other nodes at once
-- (LISTEN daz_leases), so they need not wait for their next renewal to take it. One
-- notification per transaction: identical notifications are folded by PostgreSQL.
CREATE FUNCTION daz_leases_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('daz_leases', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER daz_leases_released
    AFTER UPDATE OF holder ON daz_leases
    FOR EACH ROW WHEN (OLD.holder IS NOT NULL AND NEW.holder IS NULL)
    EXECUTE FUNCTION daz_leases_notify();
