"""Logging, systemd notification, the health/metrics HTTP server and Sentry."""
