"""The command line (Typer): one module per command group; ``main`` is the entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from janitor import __version__
from janitor.cli import admin, audit, backtest, database, keep, policy, sweeping
from janitor.cli.common import CliState

app = typer.Typer(
    name="janitor",
    help="Finds idle or stuck sessions on data platforms and cleans them up, with an audit trail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags without a <bool> metavar, no box drawing
)
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(database.app, name="db")
app.add_typer(keep.app, name="keep")
sweeping.register(app)
backtest.register(app)
admin.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"janitor {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="TOML config file (or set JANITOR_CONFIG)", show_default=False
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """janitor: idle-session cleanup daemon."""
    ctx.obj = CliState(config_path=config)


def main() -> None:
    """Console-script entry point."""
    app()
