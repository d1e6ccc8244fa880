"""``janitor policy``: apply, validate, list, show, export, enable, disable, history."""

from __future__ import annotations

import asyncio
import fnmatch
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from janitor.cli.common import (
    OUTPUT_OPTION,
    Output,
    cli_actor,
    config,
    emit_json,
    emit_table,
    format_time,
    guarded,
    json_time,
    open_store,
)
from janitor.clock import SystemClock
from janitor.errors import PolicyError
from janitor.impact import TargetImpact, impact, proposed_policies
from janitor.policy.spec import (
    Policy,
    PolicySpec,
    check_actions,
    dump_document,
    load_policy_files,
)
from janitor.providers import load_provider, provider_actions
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.store import Store
from janitor.store.policies import Change

app = typer.Typer(help="Manage the policies stored in the database.", no_args_is_help=True)

FILE_OPTION = typer.Option("--file", "-f", help="a policy YAML file, or a directory of them")
STRICT_OPTION = typer.Option(
    "--strict", help="treat warnings (a policy matching no target, ...) as errors"
)


def validated_specs(cfg: Config, path: Path, *, strict: bool = False) -> list[PolicySpec]:
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
    output: Output = OUTPUT_OPTION,
) -> None:
    """Check a policy file without storing anything."""
    specs = validated_specs(config(ctx), file, strict=strict)
    if output is Output.JSON:
        emit_json({"file": str(file), "valid": [s.name for s in specs]})
        return
    typer.echo(f"{file}: {len(specs)} valid {'policy' if len(specs) == 1 else 'policies'}")


ACTOR_OPTION = typer.Option(
    "--actor", help="who makes the change, for the audit trail (default: the OS user)"
)


@app.command()
@guarded
def apply(
    ctx: typer.Context,
    file: Annotated[Path, FILE_OPTION],
    plan: Annotated[
        bool,
        typer.Option(
            "--plan", help="show what would change and what it would act on; store nothing"
        ),
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="disable stored policies that are not in the file")
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="with --plan: do not list the targets")
    ] = False,
    strict: Annotated[bool, STRICT_OPTION] = False,
    actor: Annotated[str | None, ACTOR_OPTION] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Store the policies of a file (or directory) as new versions where they changed.

    With --plan, nothing is stored: each added or changed policy is shown with its mode, a
    diff, and, per target, how many sessions it would act on now (from a live listing,
    decided like a sweep would; --offline skips the listing). The apply itself is atomic
    and checks versions: if a policy changed since it was read (another admin applied), it
    stops with a conflict naming the policy and both versions, and stores nothing.
    """
    cfg = config(ctx)
    specs = validated_specs(cfg, file, strict=strict)
    store = open_store(ctx, cfg)
    changes = store.policies.plan(specs, prune=prune)
    if not plan:
        store.policies.commit(
            changes, actor=actor or cli_actor(), now=SystemClock().now(), source=str(file)
        )
        _print_applied(changes, output)
        return
    impacts: list[TargetImpact] | None = None
    # only the targets a changed policy applies to are listed
    names = [t.name for t in cfg.targets if any(_applies(c, t.name) for c in changes if c.changes)]
    if not offline and names:
        proposed = proposed_policies(store.policies.load(), changes)
        impacts = asyncio.run(_impact(cfg, store, proposed, names))
    _print_plan(changes, impacts, output, offline=offline)
    failed = [i for i in impacts or [] if i.error]
    for item in failed:
        typer.echo(f"janitor: error: target {item.target}: {item.error}", err=True)
    raise typer.Exit(1 if failed else 0)


async def _impact(
    cfg: Config, store: Store, proposed: list[Policy], targets: list[str]
) -> list[TargetImpact]:
    rt = Runtime.build(cfg, store=store)
    try:
        return await impact(rt, proposed, targets=targets)
    finally:
        await rt.aclose()


def _print_applied(changes: list[Change], output: Output) -> None:
    changed = sum(1 for c in changes if c.changes)
    if output is Output.JSON:
        emit_json(
            {
                "changes": [
                    {"name": c.name, "change": c.change, "version": c.version, "base": c.base}
                    for c in changes
                ],
                "changed": changed,
                "unchanged": len(changes) - changed,
            }
        )
        return
    for change in changes:
        typer.echo(f"{change.name}: {change.change} (v{change.version})")
    typer.echo(f"{changed} changed, {len(changes) - changed} unchanged")


_VERBS = {"created": "create", "updated": "update", "disabled": "disable", "unchanged": "keep"}


def _print_plan(
    changes: list[Change], impacts: list[TargetImpact] | None, output: Output, *, offline: bool
) -> None:
    changed = sum(1 for c in changes if c.changes)
    if output is Output.JSON:
        emit_json(
            {
                "changes": [_plan_json(c, impacts) for c in changes],
                "changed": changed,
                "unchanged": len(changes) - changed,
                "impact": "offline" if offline else "listed",
            }
        )
        return
    for change in changes:
        typer.echo(_plan_head(change))
        for line in _impact_lines(change, impacts):
            typer.echo(f"  {line}")
        if change.diff:
            typer.echo(change.diff)
    note = " (impact not listed: --offline)" if offline and changed else ""
    typer.echo(f"plan: {changed} changed, {len(changes) - changed} unchanged{note}")


def _plan_head(change: Change) -> str:
    verb = _VERBS.get(change.change, change.change)
    if not change.changes:
        return f"would {verb} {change.name} (v{change.version})"
    base = f"v{change.base} -> " if change.base is not None else ""
    mode = (change.spec or {}).get("mode", "dry-run")
    return f"would {verb} {change.name} ({base}v{change.version}, {mode})"


def _applies(change: Change, target: str) -> bool:
    patterns = (change.spec or {}).get("targets", ["*"])
    return any(fnmatch.fnmatchcase(target, p) for p in patterns)


def _impact_rows(change: Change, impacts: list[TargetImpact] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not change.changes or impacts is None:
        return rows
    for item in impacts:
        if not _applies(change, item.target) and not item.before[change.name]:
            continue
        rows.append(
            {
                "target": item.target,
                "listed": item.listed if item.error is None else None,
                "acts_on": item.after[change.name] if item.error is None else None,
                "acted_on_before": item.before[change.name] if item.error is None else None,
                "held": item.blocked.get(change.name) or item.blocked.get("*"),
                "error": item.error,
            }
        )
    return rows


def _impact_lines(change: Change, impacts: list[TargetImpact] | None) -> list[str]:
    lines = []
    for row in _impact_rows(change, impacts):
        if row["error"]:
            lines.append(f"{row['target']}: not listed ({row['error']})")
            continue
        now, was = row["acts_on"], row["acted_on_before"]
        if change.change == "disabled":
            text = f"{row['target']}: would act on none (acts on {was} now)"
        else:
            text = f"{row['target']}: would act on {now} of {row['listed']} sessions now"
            if change.change != "created":
                text += f" (the stored version: {was})"
        if row["held"] and now:
            text += f"; held: {row['held']}"
        lines.append(text)
    return lines


def _plan_json(change: Change, impacts: list[TargetImpact] | None) -> dict[str, Any]:
    spec = change.spec or {}
    return {
        "name": change.name,
        "change": change.change,
        "version": change.version,
        "base": change.base,
        "mode": spec.get("mode", "dry-run") if change.spec is not None else None,
        "action": spec.get("action"),
        "diff": change.diff,
        "impact": _impact_rows(change, impacts) if impacts is not None else None,
    }


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
                "updated": json_time(stored.at),
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
                "updated": json_time(stored.at),
                "spec": stored.spec,
            }
        )
        return
    typer.echo(
        f"# {stored.name} v{stored.version} ({'enabled' if stored.enabled else 'disabled'}"
        f", updated {format_time(stored.at)})"
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
            "at": v.at,
            "spec": v.spec,
        }
        for v in versions
    ]
    if output is Output.JSON:
        emit_json(rows)
    else:
        table = [row | {"at": format_time(v.at)} for row, v in zip(rows, versions, strict=True)]
        emit_table(table, ["version", "change", "enabled", "actor", "at"])


def _toggle(
    ctx: typer.Context, name: str, enabled: bool, actor: str | None, output: Output
) -> None:
    store = open_store(ctx, config(ctx))
    change = store.policies.set_enabled(
        name, enabled, actor=actor or cli_actor(), now=SystemClock().now()
    )
    state = "enabled" if enabled else "disabled"
    if output is Output.JSON:
        emit_json({"name": name, "change": change.change, "version": change.version})
    elif change.change == "unchanged":
        typer.echo(f"{name} is already {state} (v{change.version})")
    else:
        typer.echo(f"{name}: {state} (v{change.version})")


@app.command()
@guarded
def enable(
    ctx: typer.Context,
    name: str,
    actor: Annotated[str | None, ACTOR_OPTION] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Enable a policy (a new version)."""
    _toggle(ctx, name, True, actor, output)


@app.command()
@guarded
def disable(
    ctx: typer.Context,
    name: str,
    actor: Annotated[str | None, ACTOR_OPTION] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Disable a policy (a new version; its history stays)."""
    _toggle(ctx, name, False, actor, output)


@app.command()
@guarded
def rollback(
    ctx: typer.Context,
    name: str,
    to: Annotated[int, typer.Option("--to", help="the version to bring back")],
    plan: Annotated[bool, typer.Option("--plan", help="show the diff; store nothing")] = False,
    actor: Annotated[str | None, ACTOR_OPTION] = None,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Bring back an earlier version of a policy, as a new version (audited with its diff)."""
    store = open_store(ctx, config(ctx))
    change = store.policies.rollback(
        name, to, actor=actor or cli_actor(), now=SystemClock().now(), plan=plan
    )
    if output is Output.JSON:
        emit_json(
            {
                "name": name,
                "change": change.change,
                "version": change.version,
                "base": change.base,
                "rolled_back_to": to,
                "stored": not plan and change.changes,
                "diff": change.diff,
            }
        )
        return
    if not change.changes:
        typer.echo(f"{name} v{change.version} is already the same as v{to}: nothing to do")
        return
    verb = "would roll back" if plan else "rolled back"
    typer.echo(f"{name}: {verb} to v{to} as v{change.version} (was v{change.base})")
    typer.echo(change.diff)


@app.command()
@guarded
def diff(
    ctx: typer.Context,
    name: str,
    first: Annotated[int, typer.Argument(help="the older version")],
    second: Annotated[int, typer.Argument(help="the newer version")],
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show what changed in a policy between two of its versions."""
    store = open_store(ctx, config(ctx), read_only=True)
    old, new = store.policies.version(name, first), store.policies.version(name, second)
    text = store.policies.diff(name, first, second)
    if output is Output.JSON:
        emit_json(
            {
                "name": name,
                "from": first,
                "to": second,
                "diff": text,
                "changes": spec_changes(old.spec, new.spec),
            }
        )
        return
    typer.echo(text or f"{name} v{first} and v{second} are the same")


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Key by key (dotted paths), what differs between two specs: for scripts."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    return [
        {"key": key, "from": flat_old.get(key), "to": flat_new.get(key)}
        for key in sorted(flat_old.keys() | flat_new.keys())
        if flat_old.get(key) != flat_new.get(key)
    ]


def _flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
