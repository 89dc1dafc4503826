"""Metrics, the access log and log redaction: what operators watch (README, Observability)."""
