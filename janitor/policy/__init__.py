"""Policies: the YAML spec (``spec``), the condition registry (``conditions``), the pure engine."""
