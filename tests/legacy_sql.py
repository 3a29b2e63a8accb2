"""The chat log's insert as versions before the intents queued it (migration 0005 rewrites
items holding exactly this statement into ``chat.log`` intents)."""

LEGACY_CHAT_SQL = """\
INSERT INTO daz_chat_messages
    (event_id, channel, username, message, sent_at, is_history, received_at, meta)
VALUES ($1, $2, $3, $4, to_timestamp($5::bigint / 1000.0), $6,
        to_timestamp($7::bigint / 1000.0), $8::jsonb)
ON CONFLICT (event_id) DO NOTHING"""
