"""``janitor db``: schema upgrades and status."""

from __future__ import annotations

import typer

from janitor.cli.common import OUTPUT_OPTION, Output, config, emit_json, guarded
from janitor.errors import DatabaseMissing
from janitor.runtime import database_url
from janitor.store import Database

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
@guarded
def upgrade(ctx: typer.Context) -> None:
    """Apply every pending migration (alembic upgrade head)."""
    db = Database(database_url(config(ctx)))
    ctx.call_on_close(db.dispose)
    before = db.current_revision()
    db.upgrade()
    after = db.current_revision()
    if before == after:
        typer.echo(f"{db.display_url}: already at {after}")
    else:
        typer.echo(f"{db.display_url}: upgraded {before or 'empty'} -> {after}")


@app.command()
@guarded
def status(ctx: typer.Context, output: Output = OUTPUT_OPTION) -> None:
    """Show the schema revision; exit 1 when an upgrade is pending (or there is no database)."""
    try:
        db = Database(database_url(config(ctx)), create=False)
    except DatabaseMissing as exc:
        typer.echo(f"janitor: error: {exc}", err=True)
        raise typer.Exit(1) from None
    ctx.call_on_close(db.dispose)
    current, head = db.current_revision(), db.head_revision()
    if output is Output.JSON:
        emit_json({"database": db.display_url, "revision": current, "needs": head})
    else:
        typer.echo(f"{db.display_url}: at {current or 'empty'}, janitor needs {head}")
    if current != head:
        raise typer.Exit(1)
