"""Telemetry: access logs, metrics, log formatting, request ids, tracing."""
