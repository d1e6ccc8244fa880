"""``janitor backtest -f DRAFT --since 7d``: what draft policies would have done."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from janitor.backtest import TargetReplay, replay_target
from janitor.cli.common import (
    OUTPUT_OPTION,
    WIDE_OPTION,
    Output,
    Progress,
    config,
    emit_json,
    emit_table,
    format_time,
    guarded,
    open_store,
    parse_when,
    require_targets,
    short_duration,
)
from janitor.cli.policy import FILE_OPTION, validated_specs
from janitor.clock import SystemClock
from janitor.durations import parse_duration
from janitor.errors import ConfigError
from janitor.impact import proposed_policies
from janitor.policy.spec import Policy, compile_policy
from janitor.runtime import Runtime, db
from janitor.settings import Config
from janitor.store import Store
from janitor.targets import TargetConfig


def register(app: typer.Typer) -> None:
    """Add ``backtest`` to the root app."""
    app.command()(backtest)


@guarded
def backtest(
    ctx: typer.Context,
    file: Annotated[Path, FILE_OPTION],
    since: Annotated[str, typer.Option(help="replay from: a duration ago (7d) or a time")] = "7d",
    until: Annotated[
        str | None, typer.Option(help="replay until: a duration ago or a time (default: now)")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="only this target")] = None,
    step: Annotated[
        str | None, typer.Option(help="one replayed sweep every STEP (default: sweep_interval)")
    ] = None,
    alone: Annotated[
        bool,
        typer.Option("--alone", help="replay the file's policies only, not with the stored ones"),
    ] = False,
    sessions: Annotated[
        bool, typer.Option("--sessions", help="list every session acted on, with when")
    ] = False,
    wide: Annotated[bool, WIDE_OPTION] = False,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Replay the session history log against draft policies: what they would have done.

    Per policy, target and day: the sessions a policy would have acted on (each once;
    would_act for a dry-run policy), warned, or had held back by a guard. The drafts replace
    the stored policies of the same names, the others still apply (--alone: only the file's).
    Nothing is acted on, nothing is written. The log is written by the daemon's sweeps, when
    a session's fields change, and kept for history_retention (30d by default).
    """
    cfg = config(ctx)
    require_targets(cfg)
    if target is not None:
        cfg.target(target)
    specs = validated_specs(cfg, file)
    now = SystemClock().now()
    start = parse_when(since, option="--since", now=now)
    end = parse_when(until, option="--until", now=now) or now
    assert start is not None
    if start >= end:
        raise ConfigError("--since: must be before --until")
    try:
        every = parse_duration(step) if step else cfg.settings.sweep_interval
    except ValueError as exc:
        raise ConfigError(f"--step: {exc}") from None
    if every < timedelta(seconds=10):
        raise ConfigError("--step: must be at least 10s")
    store = open_store(ctx, cfg, read_only=True)
    if alone:
        drafts: list[Policy] = [compile_policy(s, 0, where=str(file)) for s in specs]
    else:
        drafts = proposed_policies(store.policies.load(), store.policies.plan(specs))
    targets = [cfg.target(target)] if target else list(cfg.targets)
    progress = Progress("replayed sweeps")
    replays = asyncio.run(_replay(cfg, store, targets, drafts, (start, end, every), progress))
    progress.done()
    window = {"since": start, "until": end, "step": short_duration(every)}
    if output is Output.JSON:
        emit_json(_json(replays, drafts, window))
        return
    _print(replays, drafts, window, sessions=sessions, wide=wide)


async def _replay(
    cfg: Config,
    store: Store,
    targets: list[TargetConfig],
    drafts: list[Policy],
    window: tuple[datetime, datetime, timedelta],
    progress: Progress,
) -> list[TargetReplay]:
    """Replay each target; the runtime is built for the providers' declarations only (the
    guards read them): no request is sent."""
    since, until, step = window
    rt = Runtime.build(cfg, store=store)
    try:
        return [
            replay_target(
                target,
                rt.providers[target.name],
                drafts,
                await db(store.history.load, target.name, since, until),
                since=since,
                until=until,
                step=step,
                progress=progress.step,
            )
            for target in targets
        ]
    finally:
        for provider in rt.providers.values():
            await provider.aclose()


def _modes(drafts: list[Policy]) -> dict[str, str]:
    return {
        p.name: f"{'dry-run' if p.dry_run else 'enforce'} {p.action}" for p in drafts if p.enabled
    }


def _rows(replays: list[TargetReplay]) -> list[dict[str, Any]]:
    rows = []
    for replay in replays:
        for (policy, day), tally in sorted(replay.tallies.items()):
            rows.append(
                {
                    "policy": policy,
                    "target": replay.target,
                    "day": day,
                    "acted": tally.acts,
                    "warned": tally.warns,
                    "held": tally.held,
                }
            )
    return sorted(rows, key=lambda r: (r["policy"], r["target"], r["day"]))


def _json(
    replays: list[TargetReplay], drafts: list[Policy], window: dict[str, Any]
) -> dict[str, Any]:
    return {
        "window": window,
        "policies": _modes(drafts),
        "targets": [
            {"target": r.target, "sweeps": r.sweeps, "sessions": r.sessions, "held": r.held}
            for r in replays
        ],
        "rows": _rows(replays),
        "sessions": [
            {
                "policy": a.policy,
                "target": a.target,
                "session_id": a.session_id,
                "session": a.session,
                "at": a.at,
                "action": str(a.action),
                "dry_run": a.dry_run,
            }
            for r in replays
            for a in r.acts
        ],
    }


def _print(
    replays: list[TargetReplay],
    drafts: list[Policy],
    window: dict[str, Any],
    *,
    sessions: bool,
    wide: bool,
) -> None:
    echo = typer.echo
    echo(
        f"backtest from {format_time(window['since'])} to {format_time(window['until'])}, one "
        f"sweep every {window['step']}; nothing was acted on"
    )
    for replay in replays:
        if replay.sessions == 0:
            echo(f"{replay.target}: the session history log has nothing in this window")
        else:
            echo(
                f"{replay.target}: {replay.sweeps} sweeps replayed over "
                f"{replay.sessions} sessions in the log"
            )
    echo("")
    emit_table(_rows(replays), ["policy", "target", "day", "acted", "warned", "held"], wide=wide)
    modes = _modes(drafts)
    acted: dict[str, int] = {}
    for replay in replays:
        for act in replay.acts:
            acted[act.policy] = acted.get(act.policy, 0) + 1
    echo("")
    for name, mode in modes.items():
        echo(f"{name} ({mode}): would have acted on {acted.get(name, 0)} sessions")
    for replay in replays:
        for _name, reason in sorted(replay.held.items()):
            echo(f"held on {replay.target}: {reason}")
    if sessions:
        echo("")
        emit_table(
            [
                {
                    "at": format_time(a.at),
                    "policy": a.policy,
                    "target": a.target,
                    "session": a.session,
                    "action": f"would {a.action}" if a.dry_run else str(a.action),
                }
                for r in replays
                for a in r.acts
            ],
            ["at", "policy", "target", "action", "session"],
            wide=wide,
        )
