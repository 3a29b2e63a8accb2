"""Operations: the health monitor, the HTTP endpoints (health, readiness, metrics), Prometheus
metrics and structured logging.
"""
