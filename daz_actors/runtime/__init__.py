"""The actor runtime: actors, mailboxes, refs, registry, supervisors, backoff, breaker, bus,
events, errors, tree, actor kinds and the strict config reader. Knows nothing of PostgreSQL,
CyTube or HTTP; imports no other layer.
"""
