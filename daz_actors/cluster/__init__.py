"""The cluster layer: several processes (nodes) sharing one PostgreSQL.

Nodes heartbeat and hold leases in the database (schema 0012): a channel's lease lets one
node join it; a singleton lease lets one node run a once-per-database job. See
docs/operating.md ("Several nodes on one PostgreSQL") and docs/architecture.md.
"""
