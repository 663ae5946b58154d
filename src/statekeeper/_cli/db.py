"""``statekeeper db``: create, upgrade and inspect statekeeper's tables."""

from __future__ import annotations

import click
import sqlalchemy as sa
from rich.table import Table

from .. import migrations
from .._sql.migrate import not_ready_message
from .._sql.schema import HEAD_REVISION
from .common import (
    EXIT_STATUS_HELP,
    NotMigrated,
    out_console,
    reports_errors,
    require_existing,
    schema_option,
    url_option,
)
from .common import where as _where

__all__ = ["db"]


def _engine(url: str) -> sa.Engine:
    from .._sql.engine import migration_engine

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


@click.group(short_help="Create, upgrade and inspect statekeeper's tables.")
def db() -> None:
    """Create, upgrade and inspect statekeeper's tables (its Alembic history)."""


@db.command(short_help="Upgrade the database (default: to head).", epilog=EXIT_STATUS_HELP)
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


@db.command(short_help="Downgrade the database to REVISION.", epilog=EXIT_STATUS_HELP)
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


@db.command(
    short_help="Spread the tables over a Citus cluster (on user_id).", epilog=EXIT_STATUS_HELP
)
@url_option()
@schema_option
@reports_errors
def distribute(url: str, schema: str | None) -> None:
    """Distribute statekeeper's tables over the Citus cluster whose coordinator is at --url.

    Sessions, events and user state are distributed on user_id, co-located;
    app state and the version table become reference tables. Run it after
    `statekeeper db upgrade`; safe to run again.
    """
    engine = _engine(url)
    try:
        done = migrations.distribute(engine, schema)
    finally:
        engine.dispose()
    where = _where(url, schema)
    if not done:
        click.echo(f"{where}: statekeeper's tables are already distributed; nothing to do.")
        return
    for line in done:
        click.echo(f"{where}: {line}.")


@db.command(short_help="Print the database's statekeeper revision.", epilog=EXIT_STATUS_HELP)
@url_option()
@schema_option
@reports_errors
def current(url: str, schema: str | None) -> None:
    """Print the database's statekeeper revision."""
    require_existing(url)
    click.echo(_label(migrations.current(url, schema)))


@db.command(short_help="Exit 0 if the database is at head, else 3.", epilog=EXIT_STATUS_HELP)
@url_option()
@schema_option
@reports_errors
def check(url: str, schema: str | None) -> None:
    """Exit with status 0 if the database is at head, else 3 and the command to run.

    A readiness probe or CI gate: status 4 means the database could not be reached
    (or, for SQLite, that the file does not exist).
    """
    require_existing(url)
    found = migrations.current(url, schema)
    where = _where(url, schema)
    message = not_ready_message(
        found, where, migrations.upgrade_command(url, schema), store_hint=False
    )
    if message is not None:
        raise NotMigrated(message)
    click.echo(f"{where} is at {_label(found)}: ready.")


@db.command(short_help="List statekeeper's revisions, newest first.", epilog=EXIT_STATUS_HELP)
@url_option(required=False)
@schema_option
@reports_errors
def history(url: str | None, schema: str | None) -> None:
    """List statekeeper's revisions, newest first (with --url: mark the database's)."""
    if url:
        require_existing(url)
    found = migrations.current(url, schema) if url else None
    columns = ["revision", "down revision", "description"] + (["database"] if url else [])
    rows = []
    for script in migrations.revisions():
        down = script.down_revision
        row = [
            script.revision,
            "base" if down is None else (down if isinstance(down, str) else ", ".join(down)),
            " ".join((script.doc or "").split()),
        ]
        if url:
            row.append("current" if script.revision == found else "")
        rows.append(row)
    console = out_console()
    if not console.is_terminal:  # piped: plain tab-separated lines
        for row in [columns, *rows]:
            click.echo("\t".join(row))
        return
    table = Table(title="statekeeper migrations", title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name != "description")
    for row in rows:
        table.add_row(*row)
    console.print(table)
