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

import asyncio
import contextlib
import functools
import io
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.driver import aconnect, connect
from .._sql.runner import forget_heads
from .._sql.schema import HEAD_REVISION, TABLE_PREFIX, VERSION_TABLE
from ..errors import SchemaNotReadyError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

__all__ = [
    "BRANCH_LABEL",
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "acheck",
    "acurrent",
    "adowngrade",
    "aupgrade",
    "check",
    "config",
    "current",
    "downgrade",
    "head",
    "include_object",
    "revisions",
    "upgrade",
    "upgrade_command",
    "upgrade_sql",
]

#: The folder holding ``env.py`` and ``versions/``, inside the installed package.
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
#: The branch label of statekeeper's history (``statekeeper@head`` names its head).
BRANCH_LABEL = "statekeeper"

Bind = sa.Engine | sa.URL | str
T = TypeVar("T")

#: Alembic's ``context`` and ``op`` are process-wide proxies: one run at a time.
_ALEMBIC = threading.Lock()
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def alembic_lock() -> Iterator[None]:
    """Hold the process-wide lock every Alembic run takes (private)."""
    with _ALEMBIC:
        yield


@contextlib.asynccontextmanager
async def aalembic_lock() -> AsyncIterator[None]:
    """Hold the process-wide Alembic lock from async code without blocking the loop (private).

    Tasks of one loop queue on an ``asyncio.Lock``; the one in front polls the
    thread lock, which another thread or loop may hold for a migration.
    """
    loop = asyncio.get_running_loop()
    local = _LOOP_LOCKS.setdefault(loop, asyncio.Lock())
    async with local:
        delay = 0.001
        while not _ALEMBIC.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            _ALEMBIC.release()


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
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
        cfg.set_main_option("sqlalchemy.url", text.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """Return the newest revision of statekeeper's history.

    Returns:
        The revision id, e.g. ``"0001"``.
    """
    return _scripts().get_current_head() or ""


def revisions() -> list[Script]:
    """Return statekeeper's revisions, newest first.

    Returns:
        Alembic ``Script`` objects (``.revision``, ``.down_revision``, ``.doc``).
    """
    return list(_scripts().walk_revisions())


def _display(bind: Bind | AsyncEngine | sa.Connection) -> str:
    url = bind.engine.url if isinstance(bind, (sa.Engine, AsyncEngine, sa.Connection)) else bind
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(url)


def upgrade_command(bind: Bind | AsyncEngine | sa.Connection, schema: str | None = None) -> str:
    """Return the shell command that upgrades the database of ``bind``.

    Args:
        bind: an engine, connection or URL; the password is hidden.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        A command such as ``statekeeper db upgrade --url 'sqlite:///app.db'``.
    """
    where = f" --schema {schema}" if schema else ""
    return f"statekeeper db upgrade --url '{_display(bind)}'{where}"


def _engine(bind: Bind) -> tuple[sa.Engine, bool]:
    if isinstance(bind, AsyncEngine):
        raise TypeError(
            "got an AsyncEngine where a sync Engine or a URL is needed: await the async "
            "twin instead (aupgrade, adowngrade, acurrent, acheck)"
        )
    if isinstance(bind, sa.Engine):
        return bind, False
    from .._sql.engine import migration_engine

    return migration_engine(bind), True


def _with_connection(bind: Bind, fn: Callable[..., T], *args: Any) -> T:
    engine, owned = _engine(bind)
    try:
        with connect(engine) as conn:
            return fn(conn, *args)
    finally:
        if owned:
            engine.dispose()


def _run_command(conn: sa.Connection, action: str, revision: str, schema: str | None) -> list[str]:
    cfg = config(schema=schema)
    cfg.attributes["connection"] = conn
    applied: list[str] = []
    cfg.attributes["applied"] = applied
    try:
        getattr(command, action)(cfg, revision)
    finally:
        # Stores opened later on any engine read the revision again.
        forget_heads()
    return applied


def upgrade_unlocked(engine: sa.Engine, schema: str | None) -> list[str]:
    """Upgrade to head; the caller holds :func:`alembic_lock` (private)."""
    return _with_connection(engine, _run_command, "upgrade", "head", schema)


async def aupgrade_unlocked(engine: AsyncEngine, schema: str | None) -> list[str]:
    """Upgrade to head; the caller holds :func:`aalembic_lock` (private)."""
    async with aconnect(engine) as conn:
        return await conn.run_sync(_run_command, "upgrade", "head", schema)


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
    with _ALEMBIC:
        return _with_connection(engine_or_url, _run_command, "upgrade", revision, schema)


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
    with _ALEMBIC:
        return _with_connection(engine_or_url, _run_command, "downgrade", revision, schema)


async def aupgrade(
    engine: AsyncEngine, revision: str = "head", schema: str | None = None
) -> list[str]:
    """Upgrade the database of an ``AsyncEngine`` to ``revision``; see :func:`upgrade`.

    Args:
        engine: the async engine.
        revision: the target revision.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call applied, oldest first.
    """
    async with aalembic_lock(), aconnect(engine) as conn:
        return await conn.run_sync(_run_command, "upgrade", revision, schema)


async def adowngrade(engine: AsyncEngine, revision: str, schema: str | None = None) -> list[str]:
    """Downgrade the database of an ``AsyncEngine`` to ``revision``; see :func:`downgrade`.

    Args:
        engine: the async engine.
        revision: the target revision.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revisions this call undid, newest first.
    """
    async with aalembic_lock(), aconnect(engine) as conn:
        return await conn.run_sync(_run_command, "downgrade", revision, schema)


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
    return _with_connection(engine_or_url, _current_on, schema)


async def acurrent(engine: AsyncEngine, schema: str | None = None) -> str | None:
    """Return the statekeeper revision of an ``AsyncEngine``'s database; see :func:`current`.

    Args:
        engine: the async engine.
        schema: PostgreSQL schema holding statekeeper's tables.

    Returns:
        The revision id, or ``None`` when statekeeper's tables are not there.
    """
    async with aconnect(engine) as conn:
        return await conn.run_sync(_current_on, schema)


def not_ready_message(
    found: str | None, where: str, command: str, *, store_hint: bool = True
) -> str | None:
    """Describe why a database at revision ``found`` does not suit this code, or return ``None``.

    Used by :func:`check` and ``statekeeper db check``.

    Args:
        found: the database's revision (``None``: no statekeeper tables).
        where: the database, for the message.
        command: the command that upgrades it.
        store_hint: also mention the stores' ``auto_migrate=True``.

    Returns:
        The message, or ``None`` when the database is at the code's revision.
    """
    if found == HEAD_REVISION:
        return None
    if found is not None and found not in {s.revision for s in revisions()}:
        from .._version import __version__

        return (
            f"the database {where} is at statekeeper revision {found!r}, which this "
            f"statekeeper ({__version__}, revision {HEAD_REVISION}) does not know: a newer "
            "statekeeper migrated it. Install that newer statekeeper here too "
            "(pip install -U statekeeper)"
        )
    state = "has no statekeeper tables" if found is None else f"is at statekeeper revision {found}"
    hint = ", or create the store with auto_migrate=True" if store_hint else ""
    return (
        f"the database {where} {state}; this statekeeper needs revision {HEAD_REVISION}. "
        f"Run `{command}`{hint}"
    )


def _raise_unless_ready(found: str | None, bind: Any, schema: str | None) -> None:
    where = _display(bind) + (f" (schema {schema})" if schema else "")
    message = not_ready_message(found, where, upgrade_command(bind, schema))
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


async def acheck(engine: AsyncEngine, schema: str | None = None) -> None:
    """Check the database of an ``AsyncEngine``; see :func:`check`.

    Args:
        engine: the async engine.
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
    with _ALEMBIC:
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
