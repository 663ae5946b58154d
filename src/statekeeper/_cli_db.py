"""``statekeeper db``: create, upgrade and inspect statekeeper's tables."""

from __future__ import annotations

import click
import sqlalchemy as sa
from rich.table import Table

from . import migrations
from ._cli_common import display_url, out_console, reports_errors, schema_option, url_option
from ._schema import HEAD_REVISION

__all__ = ["db"]


def _engine(url: str) -> sa.Engine:
    from ._engine import migration_engine

    return migration_engine(url)


def _label(revision: str | None) -> str:
    if revision is None:
        return "none (no statekeeper tables)"
    return f"{revision} (head)" if revision == HEAD_REVISION else revision


def _parents() -> dict[str, str | None]:
    """Each revision's predecessor."""
    parents: dict[str, str | None] = {}
    for script in migrations.revisions():
        down = script.down_revision
        parents[script.revision] = down if isinstance(down, str) or down is None else down[0]
    return parents


def _where(url: str, schema: str | None) -> str:
    return display_url(url) + (f" (schema {schema})" if schema else "")


@click.group()
def db() -> None:
    """Create, upgrade and inspect statekeeper's tables (its Alembic history)."""


@db.command()
@click.argument("revision", default="head")
@url_option()
@schema_option
@click.option(
    "--sql",
    is_flag=True,
    help="Print the SQL instead of running it (offline: nothing connects, only the "
    "URL's kind matters, e.g. --url postgresql://). REVISION may be a range FROM:TO.",
)
@reports_errors
def upgrade(revision: str, url: str, schema: str | None, sql: bool) -> None:
    """Upgrade the database to REVISION (default: head), creating the tables if needed.

    Safe to run from several processes or replicas at once.
    """
    if sql:
        click.echo(migrations.upgrade_sql(url, revision, schema), nl=False)
        return
    engine = _engine(url)
    try:
        applied = migrations.upgrade(engine, revision, schema)
        after = migrations.current(engine, schema)
    finally:
        engine.dispose()
    where = _where(url, schema)
    if not applied:
        click.echo(f"{where} is already at {_label(after)}; nothing to do.")
    else:
        before = _parents().get(applied[0])
        click.echo(f"Upgraded {where} from {_label(before)} to {_label(after)}.")


@db.command()
@click.argument("revision")
@url_option()
@schema_option
@click.option(
    "--sql",
    is_flag=True,
    help="Print the SQL instead of running it (offline); REVISION must be a range "
    "such as 0001:base.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@reports_errors
def downgrade(revision: str, url: str, schema: str | None, sql: bool, yes: bool) -> None:
    """Downgrade the database to REVISION ("base" drops statekeeper's tables and their data)."""
    if sql:
        click.echo(migrations.upgrade_sql(url, revision, schema, downgrade=True), nl=False)
        return
    where = _where(url, schema)
    if not yes:
        click.confirm(
            f"Downgrade {where} to {revision}? Dropped tables and columns lose their data",
            abort=True,
        )
    engine = _engine(url)
    try:
        undone = migrations.downgrade(engine, revision, schema)
        after = migrations.current(engine, schema)
    finally:
        engine.dispose()
    if not undone:
        click.echo(f"{where} is already at {_label(after)}; nothing to do.")
    else:
        click.echo(f"Downgraded {where} from {_label(undone[0])} to {_label(after)}.")


@db.command()
@url_option()
@schema_option
@reports_errors
def current(url: str, schema: str | None) -> None:
    """Print the database's statekeeper revision."""
    click.echo(_label(migrations.current(url, schema)))


@db.command()
@url_option()
@schema_option
@reports_errors
def check(url: str, schema: str | None) -> None:
    """Exit with status 0 if the database is at head, else 1 and the command to run."""
    found = migrations.current(url, schema)
    where = _where(url, schema)
    message = migrations.not_ready_message(
        found, where, migrations.upgrade_command(url, schema), store_hint=False
    )
    if message is not None:
        raise click.ClickException(message)
    click.echo(f"{where} is at {_label(found)}: ready.")


@db.command()
@url_option(required=False)
@schema_option
@reports_errors
def history(url: str | None, schema: str | None) -> None:
    """List statekeeper's revisions, newest first (with --url: mark the database's)."""
    found = migrations.current(url, schema) if url else None
    table = Table(title="statekeeper migrations", title_justify="left")
    table.add_column("revision", no_wrap=True)
    table.add_column("down revision", no_wrap=True)
    table.add_column("description", overflow="fold")
    if url:
        table.add_column("database", no_wrap=True)
    for script in migrations.revisions():
        down = script.down_revision
        row = [
            script.revision,
            "base" if down is None else (down if isinstance(down, str) else ", ".join(down)),
            (script.doc or "").strip(),
        ]
        if url:
            row.append("current" if script.revision == found else "")
        table.add_row(*row)
    out_console().print(table)
