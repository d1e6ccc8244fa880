"""Benchmarks against loopback fake servers: ``make bench`` runs ``python -m benchmarks``.

Each benchmark measures one path of janitor at scale and reports the time as a ratio to a
lower bound computed in the same run (see ``benchmarks/README.md``).
"""
