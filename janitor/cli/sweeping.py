"""``janitor run``, ``sweep``, ``explain`` and ``demo``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from janitor import gc_tuning
from janitor.cli.common import (
    OUTPUT_OPTION,
    WIDE_OPTION,
    Output,
    config,
    emit_json,
    emit_table,
    format_time,
    guarded,
    open_store,
    require_targets,
    short_duration,
)
from janitor.durations import parse_duration
from janitor.explain import explain_session, explain_targets
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
    gc_tuning.tune_for_sweeping()
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
    gc_tuning.tune_for_sweeping()
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
    session: Annotated[
        str | None,
        typer.Argument(
            help="one session's id or name: why (or why not) in detail", show_default=False
        ),
    ] = None,
    target: Annotated[str | None, TARGET_OPTION] = None,
    wide: Annotated[bool, WIDE_OPTION] = False,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show every session with the policy that matches and why. Acts on nothing.

    With SESSION: every policy in evaluation order with each condition's observed value,
    threshold and result, the exemptions, the keep, janitor's memory (streak, warning,
    grace), each guard, and the session's last audit rows.
    """
    cfg = config(ctx)
    setup_logging(cfg.settings.log_format, "WARNING")
    require_targets(cfg)
    if target is not None:
        cfg.target(target)
    store = open_store(ctx, cfg, read_only=True)
    if session is not None:
        data = asyncio.run(_explain_one(cfg, store, session, target))
        if output is Output.JSON:
            emit_json(data)
        else:
            _print_session(data, wide=wide)
        return
    rows, failures = asyncio.run(_explain(cfg, store, target))
    if output is Output.JSON:
        emit_json({"sessions": rows, "failures": failures})
    elif rows or not failures:  # no "(nothing)" ahead of a failure
        emit_table(
            [r | {"idle": _short(r["idle"]) if r.get("idle") else None} for r in rows],
            ["target", "session", "state", "idle", "verdict", "policy", "reason"],
            widths={"session": 36, "reason": 110},
            wrap=True,
            wide=wide,
            coloured=("verdict",),
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


async def _explain_one(
    cfg: Config, store: Store, session: str, target: str | None
) -> dict[str, Any]:
    rt = Runtime.build(cfg, store=store)
    try:
        return await explain_session(rt, session, only=target)
    finally:
        await rt.aclose()


def _print_session(data: dict[str, Any], *, wide: bool) -> None:
    """``explain SESSION`` for people: sections, aligned, the same facts as -o json."""
    echo = typer.echo
    echo(f"session   {data['session']} ({data['target']}/{data['session_id']})")
    if not data["listed"]:
        echo(f"          {data['note']}")
        _print_audit(data["audit"], wide=wide)
        return
    record = data["record"]
    facts = [f"{record['kind']}", f"state {record['state']} ({record['provider_state']})"]
    if record["idle"]:
        facts.append(f"idle {_short(record['idle'])}")
    if record["connections"] is not None:
        facts.append(f"{record['connections']} connections")
    if record["owner"]:
        facts.append(f"owner {record['owner']}")
    echo("record    " + ", ".join(facts))
    if record["anomalies"]:
        echo("          not trusted: " + "; ".join(record["anomalies"]))
    echo(f"verdict   {data['verdict']}" + (f" ({data['action']})" if data["action"] else ""))
    echo(f"why       {data['reason']}")
    kept = data["kept"]
    if kept:
        echo(
            f"kept      until {format_time(kept['until'])} ({_short(kept['left'])} left) by "
            f"{kept['actor']}: {kept['reason']}"
        )
    echo("")
    echo("POLICIES, in evaluation order")
    for number, policy in enumerate(data["policies"], 1):
        note = f"  ({policy['note']})" if policy.get("note") else ""
        echo(f"{number:>2}. {policy['policy']}  {policy['mode']} {policy['action']}: "
             f"{policy['result']}{note}")  # fmt: skip
        checks = policy.get("checks") or []
        if checks:
            rows = [
                {
                    "condition": c["key"] if c["block"] == "match" else f"exempt {c['key']}",
                    "observed": c["observed"] or "unknown",
                    "threshold": c["threshold"],
                    "result": c["result"],
                }
                for c in checks
            ]
            emit_table(
                rows, ["condition", "observed", "threshold", "result"], wide=wide,
                coloured=("result",), indent=4,
            )  # fmt: skip
    memory = data["memory"]
    echo("")
    echo("MEMORY (janitor's observations)")
    if memory is None:
        echo("  none yet: no recorded sweep has seen it")
    else:
        echo(f"  first seen {format_time(memory['first_seen'])}, in state {memory['state']} "
             f"since {format_time(memory['state_since'])}")  # fmt: skip
        streak = memory["streak"]
        if streak:
            needed = f" of {streak['needed']} needed" if streak["needed"] else ""
            echo(f"  matched by {streak['policy']} in {streak['sweeps']} consecutive sweeps"
                 f"{needed}")  # fmt: skip
        mark = memory["mark"]
        if mark:
            warned = (
                f"warned {format_time(mark['warned_at'])}"
                if mark["warned_at"]
                else "warning not delivered yet"
            )
            grace = (
                f", grace {mark['grace']} until {format_time(mark['act_after'])}"
                if mark["act_after"]
                else ""
            )
            echo(f"  marked by {mark['policy']} at {format_time(mark['marked_at'])}: {warned}"
                 f"{grace}")  # fmt: skip
    echo("")
    echo("GUARDS")
    emit_table(data["guards"], ["guard", "state", "reason"], wrap=True, wide=wide,
               coloured=("state",))  # fmt: skip
    _print_audit(data["audit"], wide=wide)


def _print_audit(rows: list[dict[str, Any]], *, wide: bool) -> None:
    typer.echo("")
    if not rows:
        typer.echo("AUDIT: no rows about this session yet")
        return
    typer.echo(f"AUDIT, the last {len(rows)} rows about this session")
    emit_table(
        [r | {"at": format_time(r["at"])} for r in rows],
        ["id", "at", "kind", "policy", "outcome", "reason"],
        widths={"reason": 90},
        wrap=True,
        wide=wide,
        coloured=("outcome",),
    )


def _short(text: str) -> str:
    """``3h12m5s`` as ``3h12m``: the two largest units."""
    return short_duration(parse_duration(text)) or text


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
