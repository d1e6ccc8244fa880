"""``janitor policy``: apply, validate, list, show, export, enable, disable, history."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from janitor.cli.common import (
    OUTPUT_OPTION,
    Output,
    cli_actor,
    config,
    emit_json,
    emit_table,
    guarded,
    open_store,
)
from janitor.clock import SystemClock
from janitor.errors import PolicyError
from janitor.policy.spec import PolicySpec, check_actions, dump_document, load_policy_files
from janitor.providers import load_provider, provider_actions
from janitor.settings import Config

app = typer.Typer(help="Manage the policies stored in the database.", no_args_is_help=True)

FILE_OPTION = typer.Option("--file", "-f", help="a policy YAML file, or a directory of them")
STRICT_OPTION = typer.Option(
    "--strict", help="treat warnings (a policy matching no target, ...) as errors"
)


def _validated(cfg: Config, path: Path, *, strict: bool = False) -> list[PolicySpec]:
    """Load and validate the file(s), including actions against the configured targets."""
    specs = load_policy_files(path)
    providers = {t.name: t.provider for t in cfg.targets}
    kinds = set(providers.values())
    actions = {p: provider_actions(p) for p in kinds}
    tables = {p: load_provider(p).state_table for p in kinds}
    warnings = check_actions(specs, providers, actions, where=str(path), state_tables=tables)
    if strict and warnings:
        raise PolicyError("\n".join(warnings) + "\n(--strict: warnings are errors)")
    for warning in warnings:
        typer.echo(f"janitor: warning: {warning}", err=True)
    return specs


@app.command()
@guarded
def validate(
    ctx: typer.Context,
    file: Annotated[Path, FILE_OPTION],
    strict: Annotated[bool, STRICT_OPTION] = False,
) -> None:
    """Check a policy file without storing anything."""
    specs = _validated(config(ctx), file, strict=strict)
    typer.echo(f"{file}: {len(specs)} valid {'policy' if len(specs) == 1 else 'policies'}")


@app.command()
@guarded
def apply(
    ctx: typer.Context,
    file: Annotated[Path, FILE_OPTION],
    plan: Annotated[
        bool, typer.Option("--plan", help="show what would change; store nothing")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="disable stored policies that are not in the file")
    ] = False,
    strict: Annotated[bool, STRICT_OPTION] = False,
) -> None:
    """Store the policies of a file (or directory) as new versions where they changed."""
    cfg = config(ctx)
    specs = _validated(cfg, file, strict=strict)
    modes = {spec.name: spec.mode for spec in specs}
    store = open_store(ctx, cfg)
    changes = store.policies.apply(
        specs, actor=cli_actor(), now=SystemClock().now(), prune=prune, plan=plan, source=str(file)
    )
    for change in changes:
        verb = {
            "created": "create",
            "updated": "update",
            "disabled": "disable",
            "unchanged": "keep",
        }[change.change]
        if plan:
            mode = f", {modes[change.name]}" if change.change == "created" else ""
            typer.echo(
                f"would {verb} {change.name}"
                + (f" (v{change.version}{mode})" if change.change != "unchanged" else "")
            )
            if change.diff:
                typer.echo(change.diff)
        else:
            typer.echo(f"{change.name}: {change.change} (v{change.version})")
    changed = sum(1 for c in changes if c.change != "unchanged")
    typer.echo(f"{'plan: ' if plan else ''}{changed} changed, {len(changes) - changed} unchanged")


@app.command("list")
@guarded
def list_(ctx: typer.Context, output: Output = OUTPUT_OPTION) -> None:
    """List the stored policies in evaluation order."""
    store = open_store(ctx, config(ctx), read_only=True)
    rows = []
    for stored in store.policies.current():
        spec = PolicySpec.model_validate(stored.spec)
        rows.append(
            {
                "name": stored.name,
                "version": stored.version,
                "enabled": stored.enabled,
                "priority": spec.priority,
                "mode": spec.mode,
                "action": str(spec.action),
                "targets": ",".join(spec.targets),
                "updated": stored.at.isoformat(),
            }
        )
    rows.sort(key=lambda r: (r["priority"], r["name"]))
    if output is Output.JSON:
        emit_json(rows)
    else:
        emit_table(rows, ["name", "version", "enabled", "priority", "mode", "action", "targets"])


@app.command()
@guarded
def show(ctx: typer.Context, name: str, output: Output = OUTPUT_OPTION) -> None:
    """Show one policy's current version."""
    stored = open_store(ctx, config(ctx), read_only=True).policies.get(name)
    if output is Output.JSON:
        emit_json(
            {
                "name": stored.name,
                "version": stored.version,
                "enabled": stored.enabled,
                "updated": stored.at.isoformat(),
                "spec": stored.spec,
            }
        )
        return
    typer.echo(
        f"# {stored.name} v{stored.version} ({'enabled' if stored.enabled else 'disabled'}"
        f", updated {stored.at:%Y-%m-%d %H:%M:%S} UTC)"
    )
    typer.echo(yaml.safe_dump(stored.spec, sort_keys=False, allow_unicode=True).rstrip())


class ExportFormat(StrEnum):
    """Output format of ``policy export``."""

    YAML = "yaml"
    JSON = "json"


@app.command()
@guarded
def export(
    ctx: typer.Context,
    output: Annotated[
        ExportFormat, typer.Option("--output", "-o", help="yaml (default) or json")
    ] = ExportFormat.YAML,
) -> None:
    """Print every stored policy as one document (``apply`` takes it back unchanged)."""
    store = open_store(ctx, config(ctx), read_only=True)
    specs = [PolicySpec.model_validate(s.spec) for s in store.policies.current()]
    if output is ExportFormat.JSON:
        emit_json({"policies": [spec.canonical() for spec in specs]})
    else:
        typer.echo(dump_document(specs).rstrip())


@app.command()
@guarded
def history(ctx: typer.Context, name: str, output: Output = OUTPUT_OPTION) -> None:
    """Every version of one policy, oldest first."""
    versions = open_store(ctx, config(ctx), read_only=True).policies.history(name)
    rows = [
        {
            "version": v.version,
            "change": v.change,
            "enabled": v.enabled,
            "actor": v.actor,
            "at": v.at.isoformat(),
            "spec": v.spec,
        }
        for v in versions
    ]
    if output is Output.JSON:
        emit_json(rows)
    else:
        emit_table(rows, ["version", "change", "enabled", "actor", "at"])


def _toggle(ctx: typer.Context, name: str, enabled: bool) -> None:
    store = open_store(ctx, config(ctx))
    change = store.policies.set_enabled(name, enabled, actor=cli_actor(), now=SystemClock().now())
    state = "enabled" if enabled else "disabled"
    if change.change == "unchanged":
        typer.echo(f"{name} is already {state} (v{change.version})")
    else:
        typer.echo(f"{name}: {state} (v{change.version})")


@app.command()
@guarded
def enable(ctx: typer.Context, name: str) -> None:
    """Enable a policy (a new version)."""
    _toggle(ctx, name, True)


@app.command()
@guarded
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a policy (a new version; its history stays)."""
    _toggle(ctx, name, False)
