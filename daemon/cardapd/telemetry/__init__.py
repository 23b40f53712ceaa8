"""Telemetry: Prometheus metrics, structured logs (journald or JSON lines) with per-call
context, and the recorder that audits and counts every operation."""
