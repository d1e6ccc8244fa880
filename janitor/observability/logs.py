"""Logging set-up: stdlib logging, JSON or text, journald priority prefixes.

Every record carries ``sweep_id`` and ``target`` (see :mod:`janitor.logcontext`). Under
journald (``$JOURNAL_STREAM`` matches stderr) lines start with ``<N>`` so ``journalctl -p err``
works. ``auto`` picks text on a terminal and JSON otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import stamina

from janitor.logcontext import ContextFilter

PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "sweep_id",
    "target",
    "taskName",
    "context",
}


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is connected to the journal (systemd.exec(5), $JOURNAL_STREAM)."""
    value = os.environ.get("JOURNAL_STREAM")
    if not value or ":" not in value:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    dev, _, ino = value.partition(":")
    return f"{stat.st_dev}:{stat.st_ino}" == f"{dev}:{ino}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, sweep_id, target, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as JSON."""
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "sweep_id": getattr(record, "sweep_id", None),
            "target": getattr(record, "target", None),
        }
        body.update(
            {
                key: value
                for key, value in record.__dict__.items()
                if key not in _STANDARD and not key.startswith("_")
            }
        )
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-22 10:00:00 INFO janitor.sweep [sweep=abcd1234 target=nb] message``."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s%(context)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
        )

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one text line with its sweep context."""
        parts = []
        sweep_id, target = getattr(record, "sweep_id", None), getattr(record, "target", None)
        if sweep_id:
            parts.append(f"sweep={str(sweep_id)[:8]}")
        if target:
            parts.append(f"target={target}")
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


class JournaldPrefix(logging.Formatter):
    """Wraps a formatter and prefixes the syslog priority (``<3>`` for errors)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """Prefix every line of the rendered record with its priority."""
        priority = PRIORITIES.get(record.levelno, 6)
        text = self.inner.format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (test runners and CLI runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def setup_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the root logger (idempotent: replaces janitor's own handler).

    Without ``stream``, lines go to the current ``sys.stderr``.
    """
    target = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if target.isatty() else "json"
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    if under_journald(target):
        formatter = JournaldPrefix(formatter)
    handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.set_name("janitor")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "janitor"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "sqlalchemy.engine", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # janitor logs its own retries ("retrying GET URL (1/3) after ..."); stamina's events
    # would repeat them with library fields (stamina.callable, stamina.args)
    stamina.instrumentation.set_on_retry_hooks([])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
