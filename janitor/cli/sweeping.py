"""``janitor run``, ``sweep``, ``explain`` and ``demo``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from janitor.cli.common import (
    OUTPUT_OPTION,
    Output,
    config,
    emit_json,
    emit_table,
    guarded,
    open_store,
    require_targets,
)
from janitor.explain import explain_targets
from janitor.observability.logs import setup_logging
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep

TARGET_OPTION = typer.Option("--target", "-t", help="only this target")


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""
    app.command()(run)
    app.command()(sweep)
    app.command()(explain)
    app.command()(demo)


@guarded
def run(ctx: typer.Context) -> None:
    """Run the daemon: sweep on an interval, serve /healthz /readyz /metrics."""
    from janitor.daemon import run_daemon

    cfg = config(ctx)
    setup_logging(cfg.settings.log_format, cfg.settings.log_level)
    raise typer.Exit(run_daemon(cfg))


@guarded
def sweep(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report only; act on nothing")] = False,
    target: Annotated[str | None, TARGET_OPTION] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Run one sweep now and print its summary; exit 1 if a target or an action failed."""
    cfg = config(ctx)
    setup_logging(cfg.settings.log_format, "WARNING")
    require_targets(cfg)
    if target is not None:
        cfg.target(target)
    store = open_store(ctx, cfg)
    report = asyncio.run(_sweep_once(cfg, store, dry_run=dry_run, target=target))
    if output is Output.JSON:
        emit_json(report.summary())
    else:
        _print_report(report)
    if report.store_error:
        typer.echo(f"janitor: error: {report.store_error}", err=True)
    for item in report.targets:
        if item.lease_holder:
            typer.echo(
                f"janitor: error: target {item.target} is being swept by {item.lease_holder}",
                err=True,
            )
    raise typer.Exit(1 if report.failed else 0)


async def _sweep_once(
    cfg: Config, store: Store, *, dry_run: bool, target: str | None
) -> SweepReport:
    rt = Runtime.build(cfg, store=store)
    try:
        return await run_sweep(rt, dry_run=dry_run, only=target, record=not dry_run)
    finally:
        await rt.aclose()


def _print_report(report: SweepReport) -> None:
    mode = "dry-run sweep" if report.dry_run else "sweep"
    typer.echo(f"{mode} {report.sweep_id} took {report.seconds:.2f}s")
    rows: list[dict[str, Any]] = []
    for item in report.targets:
        sessions = ", ".join(f"{n} {s}" for s, n in sorted(item.sessions.items())) or "-"
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(item.outcomes.items())) or "-"
        status = (
            "held by " + item.lease_holder
            if item.lease_holder
            else item.error or item.halted or ("blocked" if item.blocked else "ok")
        )
        rows.append(
            {
                "target": item.target,
                "sessions": sessions,
                "outcomes": outcomes,
                "warned": item.warned,
                "seconds": f"{item.seconds:.2f}",
                "status": status,
            }
        )
    emit_table(
        rows,
        ["target", "sessions", "outcomes", "warned", "seconds", "status"],
        widths={"status": 100},
    )
    for item in report.targets:
        for reason in item.blocked:
            typer.echo(f"blocked on {item.target}: {reason}")


@guarded
def explain(
    ctx: typer.Context,
    target: Annotated[str | None, TARGET_OPTION] = None,
    wide: Annotated[bool, typer.Option("--wide", help="never cut long reasons")] = False,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show every session with the policy that matches and why. Acts on nothing."""
    cfg = config(ctx)
    setup_logging(cfg.settings.log_format, "WARNING")
    require_targets(cfg)
    if target is not None:
        cfg.target(target)
    rows, failures = asyncio.run(_explain(cfg, open_store(ctx, cfg, read_only=True), target))
    if output is Output.JSON:
        emit_json({"sessions": rows, "failures": failures})
    elif rows or not failures:  # no "(nothing)" ahead of a failure
        emit_table(
            rows,
            ["target", "session", "state", "idle", "verdict", "policy", "reason"],
            widths={"session": 36} if wide else {"reason": 110, "session": 36},
            wrap=not wide,
        )
    for failure in failures:
        typer.echo(f"janitor: error: {failure}", err=True)
    raise typer.Exit(1 if failures else 0)


async def _explain(
    cfg: Config, store: Store, target: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    rt = Runtime.build(cfg, store=store)
    try:
        return await explain_targets(rt, only=target)
    finally:
        await rt.aclose()


@guarded
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo keeps its files")] = Path(
        ".janitor-demo"
    ),
    listen: Annotated[
        str, typer.Option(help="address of /healthz /readyz /metrics")
    ] = "127.0.0.1:9465",
) -> None:
    """Run janitor against a simulated Jupyter server on this machine (no cloud account)."""
    from janitor.sim.demo import run_demo

    setup_logging("text", "INFO")
    raise typer.Exit(run_demo(directory, listen))
