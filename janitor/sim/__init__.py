"""Simulated providers for ``janitor demo`` and the test suite (no cloud account needed)."""
