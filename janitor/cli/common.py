"""What every command shares: loading config, opening the store, printing, error mapping."""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

import typer

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


def _json_default(value: Any) -> Any:
    """ISO 8601 for times (``2026-11-22T10:00:00+00:00``), str() for the rest."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    widths: Mapping[str, int] | None = None,
    wrap: bool = False,
) -> None:
    """Print an aligned text table.

    A cell longer than its column's limit (``widths``, default 60) is cut with "…", except
    in the last column with ``wrap``: it continues on the next lines, aligned, so nothing is
    lost. A column without a limit in ``widths`` set to 0 is never cut.
    """
    if not rows:
        typer.echo("(nothing)")
        return
    limits = dict.fromkeys(columns, 60) | dict(widths or {})
    last = columns[-1]
    cells = [
        [_cell(row.get(col), 0 if wrap and col == last else limits[col]) for col in columns]
        for row in rows
    ]
    shown = [min(len(r[-1]), limits[last] or len(r[-1])) for r in cells] if wrap else []
    sizes = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    if wrap:
        sizes[-1] = max(len(last), *shown)
    typer.echo("  ".join(col.upper().ljust(sizes[i]) for i, col in enumerate(columns)).rstrip())
    indent = sum(sizes[:-1]) + 2 * (len(columns) - 1)
    for r in cells:
        head = "  ".join(r[i].ljust(sizes[i]) for i in range(len(columns) - 1))
        pieces = _wrapped(r[-1], sizes[-1]) if wrap else [r[-1]]
        typer.echo((head + "  " + pieces[0]).rstrip() if head else pieces[0])
        for piece in pieces[1:]:
            typer.echo(" " * indent + piece)


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
