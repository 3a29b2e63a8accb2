"""PostgreSQL: the embedded server, migrations, the SQL gateway and its messages, the queue API
and its types, the local spool, error classification. Imports `runtime` only.
"""
