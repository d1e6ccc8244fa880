"""What every command shares: loading config, opening the store, printing, error mapping."""

from __future__ import annotations

import functools
import getpass
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

import typer

from janitor.durations import format_short, parse_duration
from janitor.errors import (
    ConfigError,
    DatabaseMissing,
    JanitorError,
    PolicyError,
    UnknownProvider,
)
from janitor.settings import Config, load_config
from janitor.store import Store

P = ParamSpec("P")
R = TypeVar("R")

#: Errors that mean "bad usage, config or policy": exit code 2 (DESIGN 2.1).
USAGE_ERRORS = (ConfigError, PolicyError, UnknownProvider, DatabaseMissing)


class Output(StrEnum):
    """Output format of listing commands."""

    TABLE = "table"
    JSON = "json"


OUTPUT_OPTION = typer.Option(Output.TABLE, "--output", "-o", help="table (default) or json")


@dataclass
class CliState:
    """Set by the top-level callback; read by each command."""

    config_path: str | None = None
    warned: bool = False


def state(ctx: typer.Context) -> CliState:
    """The CLI state stored on the root context."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def config(ctx: typer.Context) -> Config:
    """Load and validate the configuration named by --config / JANITOR_CONFIG; print its
    warnings (once per command) to stderr."""
    cli = state(ctx)
    cfg = load_config(cli.config_path)
    if not cli.warned:
        cli.warned = True
        for warning in cfg.warnings:
            typer.echo(f"janitor: warning: {warning}", err=True)
    return cfg


def require_targets(cfg: Config) -> None:
    """A command that lists providers needs targets: say where the config was looked for."""
    if cfg.targets:
        return
    if cfg.source == "environment":
        raise ConfigError(
            "no configuration file: janitor looked for /etc/janitor/janitor.toml; pass "
            "--config FILE or set JANITOR_CONFIG (targets come only from the file)"
        )
    raise ConfigError(f"{cfg.source}: no [[targets]] configured: there is nothing to look at")


def open_store(ctx: typer.Context, cfg: Config, *, read_only: bool = False) -> Store:
    """Open the database (closed when the command ends) and make sure its schema is current.

    SQLite databases are upgraded automatically unless ``auto_upgrade = false``; PostgreSQL
    only with ``auto_upgrade = true`` (otherwise: run ``janitor db upgrade``). A command that
    only reads (``read_only``) never creates a database, a directory or a table: it says
    where it looked and what to run instead.
    """
    from janitor.runtime import database_url

    store = Store.open(database_url(cfg), create=not read_only)
    ctx.call_on_close(store.close)
    auto = cfg.settings.auto_upgrade
    if auto is None:
        auto = store.db.dialect == "sqlite"
    if not read_only and auto and not store.db.schema_is_current():
        store.db.upgrade()
    store.db.check_schema()
    return store


def cli_actor() -> str:
    """Who is running the command, for audit rows: the sudo user, else the login name."""
    user = os.environ.get("SUDO_USER") or os.environ.get("USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid:{os.getuid()}"
    return f"{user} (cli)"


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Map janitor errors to messages and exit codes: 2 for usage/config/policy, else 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except USAGE_ERRORS as exc:
            error(str(exc))
            raise typer.Exit(2) from None
        except JanitorError as exc:
            error(str(exc))
            raise typer.Exit(1) from None

    return wrapper


def error(message: str) -> None:
    """Print an error to stderr, one ``janitor: error:`` prefix per line."""
    for line in message.splitlines() or [""]:
        typer.echo(f"janitor: error: {line}", err=True)


def emit_json(data: Any) -> None:
    """Print JSON for scripts."""
    typer.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def json_line(data: Any) -> str:
    """One compact JSON document on one line (JSON Lines), times as in :func:`emit_json`."""
    return json.dumps(data, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    """RFC 3339 UTC for times (``2026-11-22T10:00:00.123456Z``), str() for the rest."""
    if isinstance(value, datetime):
        return json_time(value)
    return str(value)


# --- times and durations: one format everywhere ----------------------------------------------


def json_time(value: datetime) -> str:
    """A time for scripts: RFC 3339 in UTC with ``Z``, microseconds when there are any."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_time(value: datetime | None) -> str | None:
    """A time for people: ``2026-11-22 10:00:05Z``, always UTC (the same instant as JSON)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short_duration(value: timedelta | None) -> str | None:
    """A duration for people, its two largest units: ``3h12m``, ``2d4h``, ``45s``."""
    return format_short(value) if value is not None else None


def parse_when(value: str | None, *, option: str, now: datetime) -> datetime | None:
    """``--since``/``--until``: a duration ago (``7d``) or a time (``2026-11-22T10:00:00Z``).

    Raises:
        ConfigError: neither a duration nor a time with a zone (exit 2).
    """
    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ConfigError(
            f"{option}: invalid duration {value!r}: use a duration ago (90s, 15m, 2h, 7d) or "
            "a time with a zone (2026-11-22T10:00:00Z)"
        )
    return parsed.astimezone(UTC)


# --- tables -----------------------------------------------------------------------------------

WIDE_OPTION = typer.Option("--wide", help="never cut or wrap long values (for wide terminals)")

#: Colours of well-known values, used only when printing to a terminal.
COLOURS: Mapping[str, str] = {
    "act": "red",
    "executed": "red",
    "failed": "red",
    "unknown": "red",
    "held": "yellow",
    "blocked": "yellow",
    "would_act": "yellow",
    "warn": "yellow",
    "wait": "cyan",
    "accepted": "cyan",
    "kept": "green",
    "skip": "bright_black",
}


def colour_enabled() -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set or ``TERM=dumb``."""
    return stdout_is_tty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    widths: Mapping[str, int] | None = None,
    wrap: bool = False,
    wide: bool = False,
    coloured: Sequence[str] = (),
    indent: int = 0,
) -> None:
    """Print an aligned text table (``indent`` spaces to the left of every line).

    A cell longer than its column's limit (``widths``, default 60) is cut with "…", except
    in the last column with ``wrap``: it continues on the next lines, aligned, so nothing is
    lost (to the terminal's width on a terminal). A column whose limit in ``widths`` is 0 is
    never cut; ``wide`` cuts and wraps nothing. Cells of the ``coloured`` columns get the
    colour of their value (:data:`COLOURS`) on a terminal.
    """
    margin = " " * indent
    if not rows:
        typer.echo(margin + "(nothing)")
        return
    limits = dict.fromkeys(columns, 0 if wide else 60) | ({} if wide else dict(widths or {}))
    wrap = wrap and not wide
    last = columns[-1]
    cells = [
        [_cell(row.get(col), 0 if wrap and col == last else limits[col]) for col in columns]
        for row in rows
    ]
    sizes = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    hanging = indent + sum(sizes[:-1]) + 2 * (len(columns) - 1)
    if wrap:
        room = limits[last]
        if stdout_is_tty():
            room = max(30, shutil.get_terminal_size().columns - hanging - 1)
        shown = [min(len(r[-1]), room or len(r[-1])) for r in cells]
        sizes[-1] = max(len(last), *shown)
    paint = colour_enabled()
    header = "  ".join(col.upper().ljust(sizes[i]) for i, col in enumerate(columns))
    typer.echo(margin + header.rstrip())
    for r in cells:
        padded = [
            _paint(r[i], r[i].ljust(sizes[i]), paint and columns[i] in coloured)
            for i in range(len(columns) - 1)
        ]
        head = "  ".join(padded)
        pieces = _wrapped(r[-1], sizes[-1]) if wrap else [r[-1]]
        first = _paint(r[-1], pieces[0], paint and last in coloured)
        typer.echo(margin + ((head + "  " + first).rstrip() if head else first))
        for piece in pieces[1:]:
            typer.echo(" " * hanging + piece)


def _paint(value: str, text: str, on: bool) -> str:
    colour = COLOURS.get(value) if on else None
    return typer.style(text, fg=colour) if colour else text


def _wrapped(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces where possible."""
    import textwrap

    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _cell(value: Any, limit: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = text.replace("\n", " ")
    return text if not limit or len(text) <= limit else text[: limit - 1] + "…"


def stdout_is_tty() -> bool:
    """True when printing to a terminal."""
    return sys.stdout.isatty()


class Progress:
    """A one-line counter on stderr for long work (export, backtest), on a terminal only.

    Scripts and pipes see nothing of it; the line is redrawn at most ten times a second and
    ended by :meth:`done`.
    """

    def __init__(self, label: str, *, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.count = 0
        self._drawn = 0.0

    def step(self, count: int = 1, *, note: str = "") -> None:
        """Count ``count`` more items; redraw when due."""
        self.count += count
        if self.enabled and time.monotonic() - self._drawn >= 0.1:
            self._drawn = time.monotonic()
            extra = f" ({note})" if note else ""
            typer.echo(f"\r{self.label}: {self.count}{extra}\033[K", err=True, nl=False)

    def done(self) -> None:
        """End the line (when one was drawn)."""
        if self.enabled and self._drawn:
            typer.echo(f"\r{self.label}: {self.count}, done\033[K", err=True)
