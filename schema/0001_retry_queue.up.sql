-- 0001: the durable retry queue's tables and indexes (DESIGN section 7).
--
-- Statuses:
--   pending      waiting for next_retry_at (new items and items whose last attempt failed
--                retryably, or whose worker's lock expired)
--   processing   claimed by a worker: locked_by, locked_at and lock_token are set
--   completed    done; pruned by cleanup_retry_queue after the retention period
--   failed       terminal without an operator's attention: the item expired (expires_at
--                passed) before it could be handed out; pruned like completed items
--   dead_letter  gave up: permanent error, or max_retries exhausted; kept for an operator
--                to requeue (requeue_dead_letter) or to prune explicitly

CREATE TABLE daz_retry_queue (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id                text NOT NULL,
    event_type              text NOT NULL,
    channel                 text,
    plugin                  text,
    operation_type          text NOT NULL DEFAULT 'default',
    event_data              jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                  text NOT NULL DEFAULT 'pending',
    priority                smallint NOT NULL DEFAULT 5,
    retry_count             integer NOT NULL DEFAULT 0,
    max_retries             integer NOT NULL DEFAULT 3,
    retry_delay_seconds     double precision NOT NULL DEFAULT 60,
    backoff_multiplier      double precision NOT NULL DEFAULT 2,
    max_delay_seconds       double precision NOT NULL DEFAULT 3600,
    attempt_timeout_seconds double precision NOT NULL DEFAULT 30,
    next_retry_at           timestamptz NOT NULL DEFAULT now(),
    locked_by               text,
    locked_at               timestamptz,
    lock_token              uuid,
    last_error              text,
    last_error_code         text,
    correlation_id          text,
    tags                    text[] NOT NULL DEFAULT '{}',
    checkpoint              jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    completed_at            timestamptz,
    expires_at              timestamptz,
    CONSTRAINT daz_retry_queue_event_id_key UNIQUE (event_id),
    CONSTRAINT daz_retry_queue_event_id_nonempty CHECK (event_id <> ''),
    CONSTRAINT daz_retry_queue_event_type_nonempty CHECK (event_type <> ''),
    CONSTRAINT daz_retry_queue_status_check
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead_letter')),
    CONSTRAINT daz_retry_queue_priority_check CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT daz_retry_queue_retry_count_check CHECK (retry_count >= 0),
    CONSTRAINT daz_retry_queue_max_retries_check CHECK (max_retries >= 0),
    CONSTRAINT daz_retry_queue_delay_check CHECK (retry_delay_seconds >= 0),
    CONSTRAINT daz_retry_queue_multiplier_check CHECK (backoff_multiplier >= 1),
    CONSTRAINT daz_retry_queue_max_delay_check CHECK (max_delay_seconds >= 0),
    CONSTRAINT daz_retry_queue_attempt_timeout_check CHECK (attempt_timeout_seconds > 0),
    -- a processing item always carries its lock; no other status does
    CONSTRAINT daz_retry_queue_lock_check CHECK (
        (status = 'processing')
        = (locked_by IS NOT NULL AND locked_at IS NOT NULL AND lock_token IS NOT NULL)
    )
);

-- The claim: due pending items, highest priority first, then oldest due time.
-- Shaped like acquire_retry_items' ORDER BY and partial on the claimable state, so it
-- holds only the live backlog, however many finished rows wait for cleanup.
CREATE INDEX daz_retry_queue_claim_idx
    ON daz_retry_queue (priority DESC, next_retry_at, id)
    WHERE status = 'pending';

-- The rescue of items whose worker died: processing items by lock age.
CREATE INDEX daz_retry_queue_processing_idx
    ON daz_retry_queue (locked_at)
    WHERE status = 'processing';

-- Expiry sweep of pending items that carry an expiry.
CREATE INDEX daz_retry_queue_expiry_idx
    ON daz_retry_queue (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;

-- Cleanup of finished items by age, and the dead-letter listing.
CREATE INDEX daz_retry_queue_finished_idx
    ON daz_retry_queue (updated_at)
    WHERE status IN ('completed', 'failed', 'dead_letter');

CREATE INDEX daz_retry_queue_correlation_idx
    ON daz_retry_queue (correlation_id)
    WHERE correlation_id IS NOT NULL;

CREATE TABLE daz_retry_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id         bigint NOT NULL REFERENCES daz_retry_queue (id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    attempt         integer NOT NULL,
    worker_id       text NOT NULL,
    lock_token      uuid NOT NULL,
    correlation_id  text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- NULL while the attempt runs; then completed, failed, dead_letter or lock_expired
    outcome         text,
    error           text,
    error_code      text,
    CONSTRAINT daz_retry_history_outcome_check
        CHECK (outcome IS NULL OR outcome IN ('completed', 'failed', 'dead_letter', 'lock_expired')),
    CONSTRAINT daz_retry_history_finished_check CHECK ((outcome IS NULL) = (finished_at IS NULL))
);

CREATE INDEX daz_retry_history_item_idx ON daz_retry_history (item_id, started_at);
-- every acquisition has a fresh token: it names one attempt
CREATE UNIQUE INDEX daz_retry_history_token_idx ON daz_retry_history (lock_token);
