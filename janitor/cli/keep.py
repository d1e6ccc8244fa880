"""``janitor keep``: protect one session from every policy for a while; list and remove keeps.

``janitor keep SESSION --for 3d --reason TEXT`` is short for ``janitor keep add ...``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from janitor.cli.common import (
    OUTPUT_OPTION,
    WIDE_OPTION,
    Output,
    cli_actor,
    config,
    emit_json,
    emit_table,
    format_time,
    guarded,
    open_store,
    require_targets,
    short_duration,
)
from janitor.clock import SystemClock
from janitor.durations import parse_duration
from janitor.errors import ConfigError, NotFound
from janitor.lookup import list_targets, matching, one
from janitor.model import Keep
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.store import Store

#: The longest keep: protection for longer belongs in a policy's ``exempt`` block.
MAX_KEEP = timedelta(days=365)


class KeepGroup(TyperGroup):
    """``keep SESSION ...`` runs ``keep add SESSION ...``; ``keep list|remove`` as usual."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Insert ``add`` when the first word is not a subcommand (or help)."""
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=KeepGroup,
    help="Protect a session from every policy for a while (janitor keep SESSION --for 3d).",
    no_args_is_help=True,
)

TARGET = typer.Option("--target", "-t", help="the session's target (needed when names clash)")
ACTOR = typer.Option("--actor", help="who keeps it, for the audit trail (default: the OS user)")


@app.command()
@guarded
def add(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="the session's id or name")],
    for_: Annotated[str, typer.Option("--for", help="how long: 90m, 8h, 3d (at most 365d)")],
    reason: Annotated[str, typer.Option(help="why, for the audit trail and explain")],
    target: Annotated[str | None, TARGET] = None,
    actor: Annotated[str | None, ACTOR] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Protect SESSION from every policy until the time is up (audited; shown by explain).

    The session is looked up by id, or else by name, in a live listing of the targets. A
    session that is not listed now can be kept by its exact id with --target.
    """
    try:
        lasting = parse_duration(for_)
    except ValueError as exc:
        raise ConfigError(f"--for: {exc}") from None
    if not timedelta(0) < lasting <= MAX_KEEP:
        raise ConfigError("--for: must be more than 0s and at most 365d (use a policy exempt)")
    if not reason.strip():
        raise ConfigError("--reason: say why the session is kept")
    cfg = config(ctx)
    require_targets(cfg)
    if target is not None:
        cfg.target(target)
    store = open_store(ctx, cfg)
    found = asyncio.run(_find(cfg, store, session, target))
    now = SystemClock().now()
    keep = Keep(
        target=found.target,
        session_id=found.id,
        session_name=found.name,
        until=now + lasting,
        reason=reason.strip(),
        actor=actor or cli_actor(),
        created_at=now,
    )
    earlier = store.keeps.add(keep, lasting=short_duration(lasting) or for_)
    if output is Output.JSON:
        emit_json(_keep_json(keep, now) | {"replaced_until": earlier.until if earlier else None})
        return
    if found.note:
        typer.echo(f"janitor: warning: {found.note}", err=True)
    replaced = f" (replacing the keep until {format_time(earlier.until)})" if earlier else ""
    typer.echo(
        f"kept {found.name} ({found.target}/{found.id}) until {format_time(keep.until)}"
        f"{replaced}: no policy acts on it until then"
    )


@dataclass(frozen=True, slots=True)
class _Found:
    target: str
    id: str
    name: str
    note: str | None = None  # why it was kept by id, unlisted


async def _find(cfg: Config, store: Store, query: str, target: str | None) -> _Found:
    rt = Runtime.build(cfg, store=store)
    try:
        listed = await list_targets(rt, target)
    finally:
        await rt.aclose()
    found = matching(listed, query)
    if not found and target is not None:
        # not listed now (or the listing failed): keep it by its exact id, as asked
        item = listed[0]
        why = f"the listing failed: {item.error}" if item.error else "it is not listed now"
        return _Found(target, query, query, f"{target}/{query}: {why}; kept by id")
    session = one(found, query, listed)
    return _Found(session.target, session.id, session.name)


@app.command("list")
@guarded
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="expired keeps too")] = False,
    wide: Annotated[bool, WIDE_OPTION] = False,
    output: Output = OUTPUT_OPTION,
) -> None:
    """The sessions kept now, soonest expiry first."""
    now = SystemClock().now()
    keeps = open_store(ctx, config(ctx), read_only=True).keeps.all(now, expired=all_)
    if output is Output.JSON:
        emit_json([_keep_json(k, now) for k in keeps])
        return
    rows = [
        {
            "target": k.target,
            "session": k.session_name,
            "id": k.session_id,
            "until": format_time(k.until),
            "left": short_duration(k.until - now) if k.holds(now) else "expired",
            "by": k.actor,
            "reason": k.reason,
        }
        for k in keeps
    ]
    emit_table(
        rows,
        ["target", "session", "id", "until", "left", "by", "reason"],
        widths={"session": 30, "id": 36, "reason": 60},
        wrap=True,
        wide=wide,
    )


def _keep_json(keep: Keep, now: datetime) -> dict[str, Any]:
    return {
        "target": keep.target,
        "session_id": keep.session_id,
        "session_name": keep.session_name,
        "until": keep.until,
        "active": keep.holds(now),
        "reason": keep.reason,
        "actor": keep.actor,
        "created_at": keep.created_at,
    }


@app.command()
@guarded
def remove(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="the kept session's id or name")],
    target: Annotated[str | None, TARGET] = None,
    actor: Annotated[str | None, ACTOR] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """End a keep before it expires (audited): the policies apply to the session again."""
    store = open_store(ctx, config(ctx))
    now = SystemClock().now()
    keeps = [k for k in store.keeps.all(now, expired=True) if target in (None, k.target)]
    found = [k for k in keeps if k.session_id == session] or [
        k for k in keeps if k.session_name == session
    ]
    if not found:
        raise NotFound(f"no keep for a session with the id or name {session!r}")
    if len(found) > 1:
        options = ", ".join(f"{k.target}/{k.session_id}" for k in found)
        raise ConfigError(f"{len(found)} kept sessions match {session!r} ({options}); pass the id")
    removed = store.keeps.remove(
        found[0].target, found[0].session_id, actor=actor or cli_actor(), now=now
    )
    if output is Output.JSON:
        emit_json(_keep_json(removed, now) | {"removed": True})
        return
    typer.echo(
        f"keep of {removed.session_name} ({removed.target}/{removed.session_id}) removed: "
        "the policies apply to it again"
    )
