"""statekeeper's database migrations, shipped in the package and run from it.

The history uses its own version table, ``statekeeper_alembic_version``, and
the branch label ``statekeeper``, so it never reads or writes a host app's
``alembic_version``. Run it with ``statekeeper db upgrade``, with
:func:`upgrade` / :func:`aupgrade`, or with Alembic itself
(``script_location = statekeeper:migrations``).

Upgrades are safe to start from several processes at once: on PostgreSQL they
queue on an advisory lock, on SQLite on the database's write lock, and each
applies only what the previous one left to do. Within one process, Alembic
keeps its migration context in module globals, so every Alembic run here
(threads and event loops alike) takes turns on one process-wide lock.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext

from .._sql import migrate
from .._sql.driver import aconnect, in_thread
from .._sql.migrate import Bind, aalembic_lock, alembic_lock, run_command, with_connection
from .._sql.schema import TABLE_PREFIX, VERSION_TABLE
from ..errors import SchemaNotReadyError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "acheck",
    "acurrent",
    "adistribute",
    "adowngrade",
    "aupgrade",
    "check",
    "config",
    "current",
    "distribute",
    "downgrade",
    "head",
    "include_object",
    "revisions",
    "upgrade",
    "upgrade_command",
    "upgrade_sql",
]

#: The folder holding ``env.py`` and ``versions/``, inside the installed package.
SCRIPT_LOCATION = migrate.SCRIPT_LOCATION


def config(url: str | sa.URL | None = None, *, schema: str | None = None) -> Config:
    """Return an Alembic ``Config`` for statekeeper's packaged history.

    Use it with ``alembic.command`` for anything the helpers here do not
    cover, e.g. ``alembic.command.history(config())``.

    Args:
        url: the database URL (sync or async driver; statekeeper picks its own).
            Without it, ``STATEKEEPER_URL`` is used when a command needs one.
        schema: PostgreSQL schema holding statekeeper's tables and version table.

    Returns:
        A config usable with ``alembic.command``.
    """
    return migrate.alembic_config(url, schema)


def head() -> str:
    """Return the newest revision of statekeeper's history.

    Returns:
        The revision id, e.g. ``"0001"``.
    """
    return migrate.scripts().get_current_head() or ""


def revisions() -> list[Script]:
    """Return statekeeper's revisions, newest first.

    Returns:
        Alembic ``Script`` objects (``.revision``, ``.down_revision``, ``.doc``).
    """
    return list(migrate.scripts().walk_revisions())


def upgrade_command(bind: Bind | AsyncEngine | sa.Connection, schema: str | None = None) -> str:
    """Return the shell command that upgrades the database of ``bind``.

    Args:
        bind: an engine, connection or URL; the password is hidden.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        A command such as ``statekeeper db upgrade --url 'sqlite:///app.db'``.
    """
    return migrate.upgrade_command(bind, schema)


def upgrade(engine_or_url: Bind, revision: str = "head", schema: str | None = None) -> list[str]:
    """Upgrade the database to ``revision`` (default: the newest).

    Creates statekeeper's tables (and, on PostgreSQL, the ``schema``) when
    missing. The upgrade is one transaction; several processes may run it at
    once: the first applies the history, the others find nothing left to do.

    Args:
        engine_or_url: a sync ``Engine`` or a database URL.
        revision: the target revision.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call applied, oldest first; empty when another
        process (or an earlier call) had already applied them.

    Raises:
        ValueError: ``schema`` was given for a database that is not PostgreSQL.
        DatabaseUnavailableError: the database cannot be reached.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    with alembic_lock():
        return with_connection(engine_or_url, run_command, "upgrade", revision, schema)


def downgrade(engine_or_url: Bind, revision: str, schema: str | None = None) -> list[str]:
    """Downgrade the database to ``revision``; ``"base"`` drops statekeeper's tables and data.

    Args:
        engine_or_url: a sync ``Engine`` or a database URL.
        revision: the target revision, e.g. ``"base"`` or ``"-1"``.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call undid, newest first.

    Raises:
        ValueError: ``schema`` was given for a database that is not PostgreSQL.
        DatabaseUnavailableError: the database cannot be reached.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    with alembic_lock():
        return with_connection(engine_or_url, run_command, "downgrade", revision, schema)


async def _arun_command(
    engine: AsyncEngine | sa.Engine, action: str, revision: str, schema: str | None
) -> list[str]:
    if isinstance(engine, sa.Engine):
        # The sync function, in a worker thread that takes the lock itself: a
        # cancelled caller cannot let a second Alembic run start beside this one.
        sync = upgrade if action == "upgrade" else downgrade
        return await in_thread(sync, engine, revision, schema)
    async with aalembic_lock(), aconnect(engine) as conn:
        return await conn.run_sync(run_command, action, revision, schema)


async def aupgrade(
    engine: AsyncEngine | sa.Engine, revision: str = "head", schema: str | None = None
) -> list[str]:
    """Upgrade the database of an ``AsyncEngine`` to ``revision``; see :func:`upgrade`.

    Args:
        engine: the async engine; or a sync SQLite ``Engine``, such as the
            ``engine`` of an async store on a SQLite URL (run in a worker thread).
        revision: the target revision.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call applied, oldest first.
    """
    return await _arun_command(engine, "upgrade", revision, schema)


async def adowngrade(
    engine: AsyncEngine | sa.Engine, revision: str, schema: str | None = None
) -> list[str]:
    """Downgrade the database of an ``AsyncEngine`` to ``revision``; see :func:`downgrade`.

    Args:
        engine: the async engine, or a sync SQLite ``Engine`` (see :func:`aupgrade`).
        revision: the target revision.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call undid, newest first.
    """
    return await _arun_command(engine, "downgrade", revision, schema)


def _current_on(conn: sa.Connection, schema: str | None) -> str | None:
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    heads = context.get_current_heads()
    if conn.in_transaction():
        conn.rollback()
    return heads[0] if heads else None


def current(engine_or_url: Bind, schema: str | None = None) -> str | None:
    """Return the database's statekeeper revision.

    Args:
        engine_or_url: a sync ``Engine`` or a database URL.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revision id, or ``None`` when statekeeper's tables are not there.
    """
    return with_connection(engine_or_url, _current_on, schema)


async def acurrent(engine: AsyncEngine | sa.Engine, schema: str | None = None) -> str | None:
    """Return the statekeeper revision of an ``AsyncEngine``'s database; see :func:`current`.

    Args:
        engine: the async engine, or a sync SQLite ``Engine`` (see :func:`aupgrade`).
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revision id, or ``None`` when statekeeper's tables are not there.
    """
    if isinstance(engine, sa.Engine):
        return await in_thread(current, engine, schema)
    async with aconnect(engine) as conn:
        return await conn.run_sync(_current_on, schema)


def distribute(engine_or_url: Bind, schema: str | None = None) -> list[str]:
    """Spread statekeeper's tables over a Citus cluster; safe to run again.

    Run it on the Citus coordinator once the tables exist (``statekeeper db
    upgrade``). The sessions, their events and the user state are
    distributed on ``user_id`` and co-located, so every per-session and
    per-user statement runs on one shard; the app state and the version
    table become reference tables, copied to every node. Rows already there
    move to the shards. Later upgrades distribute the tables they create.
    One transaction, which waits for a running upgrade.

    Args:
        engine_or_url: a sync ``Engine`` or a database URL of the coordinator.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        What this call did, one line per table (e.g. ``"distributed
        statekeeper_sessions on user_id"``); empty when everything already was.

    Raises:
        SchemaNotReadyError: the database has no citus extension (the message
            says what to do), no statekeeper tables yet, or a table that is
            distributed on another column.
        ValueError: the database is not PostgreSQL.
        DatabaseUnavailableError: the database cannot be reached.
    """
    if not isinstance(engine_or_url, sa.Engine):  # before connecting to, say, a SQLite file
        migrate.require_postgresql(sa.make_url(engine_or_url).get_backend_name())
    return with_connection(engine_or_url, migrate.distribute_on, schema)


async def adistribute(engine: AsyncEngine, schema: str | None = None) -> list[str]:
    """Spread the tables of an ``AsyncEngine``'s database over Citus; see :func:`distribute`.

    Args:
        engine: the async engine of the coordinator.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        What this call did, one line per table; empty when everything already was.
    """
    async with aconnect(engine) as conn:
        return await conn.run_sync(migrate.distribute_on, schema)


def _raise_unless_ready(found: str | None, bind: Any, schema: str | None) -> None:
    where = migrate.shown(bind) + (f" (schema {schema})" if schema else "")
    message = migrate.not_ready_message(found, where, upgrade_command(bind, schema))
    if message is not None:
        raise SchemaNotReadyError(message)


def check(engine_or_url: Bind, schema: str | None = None) -> None:
    """Check that the database is at the revision this statekeeper needs.

    Args:
        engine_or_url: a sync ``Engine`` or a database URL.
        schema: PostgreSQL schema holding statekeeper's tables.

    Raises:
        SchemaNotReadyError: the database is not at head; the message names
            the command to run.
    """
    _raise_unless_ready(current(engine_or_url, schema), engine_or_url, schema)


async def acheck(engine: AsyncEngine | sa.Engine, schema: str | None = None) -> None:
    """Check the database of an ``AsyncEngine``; see :func:`check`.

    Args:
        engine: the async engine, or a sync SQLite ``Engine`` (see :func:`aupgrade`).
        schema: PostgreSQL schema holding statekeeper's tables.

    Raises:
        SchemaNotReadyError: the database is not at head; the message names
            the command to run.
    """
    _raise_unless_ready(await acurrent(engine, schema), engine, schema)


def upgrade_sql(
    url: str | sa.URL, revision: str = "head", schema: str | None = None, *, downgrade: bool = False
) -> str:
    """Return the SQL script of an upgrade (or downgrade) without connecting to the database.

    For DBAs who run the DDL themselves ("offline mode"). Only the URL's
    dialect matters: ``"postgresql://"`` or ``"sqlite://"`` will do.

    Args:
        url: a URL of the target kind of database.
        revision: the target revision, or a range ``"FROM:TO"`` (e.g.
            ``"0001:head"`` to start from a database at 0001).
        schema: PostgreSQL schema to put statekeeper's tables in.
        downgrade: script a downgrade instead; ``revision`` must then be a
            range such as ``"0001:base"``.

    Returns:
        The SQL text, including the writes to ``statekeeper_alembic_version``.

    Raises:
        ValueError: the URL is not SQLite or PostgreSQL, or ``schema`` was
            given for SQLite.
    """
    buffer = io.StringIO()
    cfg = config(url, schema=schema)
    cfg.output_buffer = buffer
    with alembic_lock():
        getattr(command, "downgrade" if downgrade else "upgrade")(cfg, revision, sql=True)
    return buffer.getvalue()


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Tell a host app's Alembic autogenerate to leave statekeeper's tables alone.

    Pass it as ``context.configure(..., include_object=include_object)`` in the
    app's ``env.py`` (or call it from the app's own filter), so the app's
    ``alembic revision --autogenerate`` and ``alembic check`` never propose to
    drop or alter statekeeper's tables, their indexes, constraints and
    columns, or its version table.

    Args:
        obj: the schema item Alembic is comparing.
        name: its name.
        type_: ``"table"``, ``"column"``, ``"index"``, ``"unique_constraint"``
            or ``"foreign_key_constraint"``.
        reflected: whether it was found in the database (not in the metadata).
        compare_to: the item it is compared with, if any.

    Returns:
        ``False`` for statekeeper's objects, ``True`` for everything else.
    """
    table_name = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (table_name or "").startswith(TABLE_PREFIX)
