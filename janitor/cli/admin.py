"""``janitor pause``, ``resume`` and ``healthcheck``."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Annotated

import typer

from janitor.cli.common import (
    OUTPUT_OPTION,
    Output,
    cli_actor,
    config,
    emit_json,
    guarded,
    open_store,
)
from janitor.clock import SystemClock


def register(app: typer.Typer) -> None:
    """Add the admin commands to the root app."""
    app.command()(pause)
    app.command()(resume)
    app.command()(healthcheck)


@guarded
def pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="why (stored and audited)")] = "",
    actor: Annotated[str | None, typer.Option(help="who (default: the OS user)")] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Kill switch: stop every destructive call (all replicas, within a second)."""
    store = open_store(ctx, config(ctx))
    state = store.pause.set(
        True, reason=reason, actor=actor or cli_actor(), now=SystemClock().now()
    )
    if output is Output.JSON:
        emit_json({"paused": True, "reason": state.reason, "actor": state.actor})
        return
    typer.echo("janitor is paused: no destructive calls until `janitor resume`")


@guarded
def resume(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="who (default: the OS user)")] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Release the kill switch."""
    store = open_store(ctx, config(ctx))
    was = store.pause.get().paused
    if was:
        store.pause.set(False, reason="", actor=actor or cli_actor(), now=SystemClock().now())
    if output is Output.JSON:
        emit_json({"paused": False, "resumed": was})
    elif not was:
        typer.echo("janitor is not paused: nothing to resume (no audit row written)")
    else:
        typer.echo("janitor resumed")


@guarded
def healthcheck(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="default: http://<listen>/healthz")] = None,
    timeout: Annotated[float, typer.Option(help="seconds")] = 5.0,
) -> None:
    """Exit 0 when the daemon's loop is alive (/healthz), else 1. For container HEALTHCHECK."""
    if url is None:
        listen = config(ctx).settings.listen
        host, _, port = listen.rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host  # noqa: S104
        url = f"http://{host}:{port}/healthz"
    if not url.startswith(("http://", "https://")):
        typer.echo(f"janitor: error: --url must be http(s): {url}", err=True)
        raise typer.Exit(2)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            ok = response.status == 200
    except urllib.error.HTTPError as exc:  # 503: answered, unhealthy; close its connection
        exc.close()
        typer.echo(f"unhealthy: {exc}", err=True)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        typer.echo(f"unhealthy: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("healthy" if ok else "unhealthy")
    raise typer.Exit(0 if ok else 1)
