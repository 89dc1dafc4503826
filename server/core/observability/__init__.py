"""Metrics, traces, the access log and log redaction, startup progress: what operators watch (README, Observability)."""
