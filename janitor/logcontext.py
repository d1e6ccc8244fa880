"""Context carried by every log line of a sweep: its sweep id and target (contextvars)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

SWEEP_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sweep_id", default=None)
TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


@contextmanager
def bind(*, sweep_id: str | None = None, target: str | None = None) -> Iterator[None]:
    """Set the sweep id and/or target for log lines inside the block (and tasks it starts)."""
    tokens = []
    if sweep_id is not None:
        tokens.append((SWEEP_ID, SWEEP_ID.set(sweep_id)))
    if target is not None:
        tokens.append((TARGET, TARGET.set(target)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``sweep_id`` and ``target`` attributes to every record (None outside a sweep)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        if not hasattr(record, "sweep_id"):
            record.sweep_id = SWEEP_ID.get()
        if not hasattr(record, "target"):
            record.target = TARGET.get()
        return True
