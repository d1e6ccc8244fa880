"""``janitor audit``: list and verify the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer

from janitor.cli.common import (
    OUTPUT_OPTION,
    Output,
    config,
    emit_json,
    emit_table,
    guarded,
    open_store,
)
from janitor.clock import SystemClock
from janitor.durations import parse_duration
from janitor.errors import ConfigError
from janitor.model import AuditKind

app = typer.Typer(help="The audit trail.", no_args_is_help=True)


def _since(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None


@app.command("list")
@guarded
def list_(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="only rows newer than this, e.g. 1h")] = None,
    target: Annotated[str | None, typer.Option(help="only this target")] = None,
    session: Annotated[str | None, typer.Option(help="only this session id")] = None,
    kind: Annotated[
        list[AuditKind] | None, typer.Option(help="only these kinds (repeatable)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many rows (the newest)")] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List audit rows, oldest first."""
    store = open_store(ctx, config(ctx), read_only=True)
    window = _since(since)
    events = store.audit.events(
        since=SystemClock().now() - window if window else None,
        target=target,
        session_id=session,
        kinds=[str(k) for k in kind or []],
    )
    if limit is not None:
        events = events[-limit:]
    rows = [asdict(e) for e in events]
    if output is Output.JSON:
        emit_json(rows)
        return
    for row in rows:
        row["at"] = row["at"].strftime("%Y-%m-%d %H:%M:%S")
        row["session"] = row["session_name"] or row["session_id"]
        row["policy"] = f"{row['policy']} v{row['policy_version']}" if row["policy"] else None
    emit_table(
        rows,
        ["id", "at", "kind", "target", "session", "policy", "action", "outcome", "reason"],
        widths={"reason": 90, "session": 30},
    )


@app.command()
@guarded
def verify(ctx: typer.Context) -> None:
    """Check the hash chain; exit 1 if any row was altered, removed, inserted or reordered."""
    result = open_store(ctx, config(ctx), read_only=True).audit.verify()
    for problem in result.problems:
        typer.echo(f"janitor: error: {problem}", err=True)
    if not result.ok:
        typer.echo(f"audit chain BROKEN ({result.rows} rows checked)")
        raise typer.Exit(1)
    typer.echo(f"audit chain OK: {result.rows} rows, head {result.head}")
