"""``janitor audit``: list, export, verify and prune the audit trail."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from janitor.cli.common import (
    OUTPUT_OPTION,
    WIDE_OPTION,
    Output,
    Progress,
    cli_actor,
    config,
    emit_json,
    emit_table,
    format_time,
    guarded,
    json_line,
    json_time,
    open_store,
    parse_when,
)
from janitor.clock import SystemClock
from janitor.errors import ConfigError
from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.store.audit import AuditQuery

app = typer.Typer(help="The audit trail.", no_args_is_help=True)

#: The columns of ``audit export`` and the keys of ``audit list -o json``, in this order.
FIELDS = (
    "id",
    "at",
    "sweep_id",
    "kind",
    "target",
    "session_id",
    "session_name",
    "session_kind",
    "policy",
    "policy_version",
    "action",
    "dry_run",
    "outcome",
    "reason",
    "http_status",
    "provider_request_id",
    "error",
    "actor",
    "fencing_token",
    "intent_id",
    "details",
    "prev_hash",
    "hash",
)

SINCE = typer.Option(help="only rows at or after this: a duration ago (1h, 7d) or a time")
UNTIL = typer.Option(help="only rows at or before this: a duration ago (1d) or a time")
TARGET = typer.Option(help="only this target")
SESSION = typer.Option(help="only this session: its id or name, or a glob over either ('etl-*')")
POLICY = typer.Option(help="only rows of this policy")
KIND = typer.Option(help="only these kinds (repeatable)")
OUTCOME = typer.Option(help="only these outcomes (repeatable)")


def record(event: AuditEvent) -> dict[str, Any]:
    """An audit row as a flat mapping in :data:`FIELDS` order (values as stored)."""
    values = {name: getattr(event, name) for name in FIELDS}
    for name in ("kind", "action", "outcome"):
        values[name] = str(values[name]) if values[name] is not None else None
    return values


def _query(
    *,
    since: str | None,
    until: str | None,
    target: str | None,
    session: str | None,
    policy: str | None,
    kind: list[AuditKind] | None,
    outcome: list[Outcome] | None,
) -> AuditQuery:
    now = SystemClock().now()
    return AuditQuery(
        since=parse_when(since, option="--since", now=now),
        until=parse_when(until, option="--until", now=now),
        target=target,
        session=session,
        policy=policy,
        kinds=[str(k) for k in kind or []],
        outcomes=[str(o) for o in outcome or []],
    )


@app.command("list")
@guarded
def list_(
    ctx: typer.Context,
    since: Annotated[str | None, SINCE] = None,
    until: Annotated[str | None, UNTIL] = None,
    target: Annotated[str | None, TARGET] = None,
    session: Annotated[str | None, SESSION] = None,
    policy: Annotated[str | None, POLICY] = None,
    kind: Annotated[list[AuditKind] | None, KIND] = None,
    outcome: Annotated[list[Outcome] | None, OUTCOME] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many rows (the newest)")] = None,
    wide: Annotated[bool, WIDE_OPTION] = False,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List audit rows, oldest first."""
    query = _query(
        since=since,
        until=until,
        target=target,
        session=session,
        policy=policy,
        kind=kind,
        outcome=outcome,
    )
    store = open_store(ctx, config(ctx), read_only=True)
    events = store.audit.events(query, last=limit)
    if output is Output.JSON:
        emit_json([record(e) for e in events])
        return
    emit_table(
        [_row(event) for event in events],
        ["id", "at", "kind", "target", "session", "policy", "action", "outcome", "reason"],
        widths={"session": 30, "reason": 90},
        wrap=True,
        wide=wide,
        coloured=("outcome",),
    )


def _row(event: AuditEvent) -> dict[str, Any]:
    policy = event.policy
    if policy and event.policy_version:
        policy = f"{policy} v{event.policy_version}"
    return {
        "id": event.id,
        "at": format_time(event.at),
        "kind": str(event.kind),
        "target": event.target,
        "session": event.session_name or event.session_id,
        "policy": policy,
        "action": str(event.action) if event.action else None,
        "outcome": str(event.outcome) if event.outcome else None,
        "reason": event.reason,
    }


class ExportFormat(StrEnum):
    """Format of ``audit export``."""

    JSONL = "jsonl"
    CSV = "csv"


@app.command()
@guarded
def export(
    ctx: typer.Context,
    format_: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl (one JSON object a line) or csv")
    ] = ExportFormat.JSONL,
    since: Annotated[str | None, SINCE] = None,
    until: Annotated[str | None, UNTIL] = None,
    target: Annotated[str | None, TARGET] = None,
    session: Annotated[str | None, SESSION] = None,
    policy: Annotated[str | None, POLICY] = None,
    kind: Annotated[list[AuditKind] | None, KIND] = None,
    outcome: Annotated[list[Outcome] | None, OUTCOME] = None,
) -> None:
    """Stream audit rows to stdout, oldest first, with every field (hashes included).

    Rows are read a thousand at a time, so an export of the whole trail needs little memory
    and holds no transaction open. Times are RFC 3339 UTC; in CSV, ``details`` is a JSON
    string and an empty cell is a missing value. A count goes to stderr on a terminal.
    """
    query = _query(
        since=since,
        until=until,
        target=target,
        session=session,
        policy=policy,
        kind=kind,
        outcome=outcome,
    )
    store = open_store(ctx, config(ctx), read_only=True)
    progress = Progress("exported")
    if format_ is ExportFormat.CSV:
        typer.echo(_csv_row(list(FIELDS)), nl=False)
    for event in store.audit.stream(query):
        if format_ is ExportFormat.CSV:
            typer.echo(_csv_row([_csv_cell(value) for value in record(event).values()]), nl=False)
        else:
            typer.echo(json_line(record(event)))
        progress.step()
    progress.done()


def _csv_row(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json_line(value)
    if hasattr(value, "astimezone"):
        return json_time(value)
    return str(value)


@app.command()
@guarded
def verify(ctx: typer.Context, output: Output = OUTPUT_OPTION) -> None:
    """Check the hash chain; exit 1 if any row was altered, removed, inserted or reordered.

    After ``audit prune`` the walk starts at the newest checkpoint: the first remaining row
    must link to the hash of the last row removed.
    """
    result = open_store(ctx, config(ctx), read_only=True).audit.verify()
    pruned = result.pruned
    if output is Output.JSON:
        emit_json(
            {
                "ok": result.ok,
                "rows": result.rows,
                "head": result.head,
                "last_id": result.last_id,
                "pruned_through_id": pruned.through_id if pruned else None,
                "checkpoint_row": pruned.row_id if pruned else None,
                "problems": list(result.problems),
            }
        )
        raise typer.Exit(0 if result.ok else 1)
    for problem in result.problems:
        typer.echo(f"janitor: error: {problem}", err=True)
    start = (
        f", from checkpoint row {pruned.row_id} (rows up to {pruned.through_id} pruned at "
        f"{format_time(pruned.at)})"
        if pruned
        else ""
    )
    if not result.ok:
        typer.echo(f"audit chain BROKEN ({result.rows} rows checked{start})")
        raise typer.Exit(1)
    typer.echo(f"audit chain OK: {result.rows} rows{start}, head {result.head}")


#: The youngest rows ``audit prune`` may remove: the daemon still reconciles and alerts on them.
MIN_PRUNE_AGE = timedelta(days=1)


@app.command()
@guarded
def prune(
    ctx: typer.Context,
    before: Annotated[
        str, typer.Option(help="remove rows written before this: a duration ago (400d) or a time")
    ],
    actor: Annotated[str | None, typer.Option(help="who prunes (default: the OS user)")] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Remove the oldest audit rows, keeping the remaining chain verifiable.

    The rows removed are the oldest ones up to the first written at or after --before, and
    never an intent without a final outcome (nor anything after it). A checkpoint row records
    the last removed row's hash, and `audit verify` starts from it. Nothing is removed while
    the chain does not verify. The prune is itself an audit row (kind checkpoint).
    """
    now = SystemClock().now()
    cutoff = parse_when(before, option="--before", now=now)
    assert cutoff is not None
    if now - cutoff < MIN_PRUNE_AGE:
        raise ConfigError("--before: must be at least 1d ago (the daemon still uses newer rows)")
    store = open_store(ctx, config(ctx))
    result = store.audit.prune(before=cutoff, actor=actor or cli_actor(), now=now)
    checkpoint = result.checkpoint
    if output is Output.JSON:
        emit_json(
            {
                "removed": result.removed,
                "checkpoint": record(checkpoint) if checkpoint else None,
                "held_by_open_intent": result.held_by,
                "problem": result.problem,
            }
        )
    elif result.problem:
        typer.echo(f"janitor: error: {result.problem}", err=True)
    elif checkpoint is None:
        held = (
            f" (intent {result.held_by} has no final outcome yet; it and later rows stay)"
            if result.held_by
            else ""
        )
        typer.echo(f"nothing to prune before {format_time(cutoff)}{held}")
    else:
        typer.echo(f"{checkpoint.reason} (checkpoint row {checkpoint.id})")
    raise typer.Exit(1 if result.problem else 0)
