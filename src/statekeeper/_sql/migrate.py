"""The migration machinery the stores need: Alembic's lock, the upgrade, the "not ready" message.

A store with ``auto_migrate=True`` upgrades its database here, and every
store says here why a database does not suit the code; the public helpers
of :mod:`statekeeper.migrations` (and ``statekeeper db``) are built on the
same functions, so nothing under ``_sql`` imports ``migrations``.

Alembic keeps its migration context in module globals, so every Alembic run
of the process (threads and event loops alike) takes turns on one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from .driver import aconnect, connect, drive
from .engine import forget_heads, migration_engine, safe_url
from .fork import ForkLock
from .ops import citus
from .schema import HEAD_REVISION

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

__all__ = [
    "SCRIPT_LOCATION",
    "Bind",
    "aalembic_lock",
    "alembic_config",
    "alembic_lock",
    "distribute_on",
    "follow_distribution",
    "require_postgresql",
    "aupgrade_unlocked",
    "known_revisions",
    "not_ready_message",
    "run_command",
    "scripts",
    "shown",
    "upgrade_command",
    "upgrade_unlocked",
    "with_connection",
]

#: The folder holding ``env.py`` and ``versions/``, inside the installed package.
SCRIPT_LOCATION = str(Path(__file__).resolve().parents[1] / "migrations")

Bind = sa.Engine | sa.URL | str
T = TypeVar("T")

#: Alembic's ``context`` and ``op`` are process-wide proxies: one run at a time.
_ALEMBIC = ForkLock()  # a child gets it released
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def alembic_lock() -> Iterator[None]:
    """Hold the process-wide lock every Alembic run takes."""
    with _ALEMBIC:
        yield


@contextlib.asynccontextmanager
async def aalembic_lock() -> AsyncIterator[None]:
    """Hold the process-wide Alembic lock from async code without blocking the loop.

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


def alembic_config(url: str | sa.URL | None, schema: str | None) -> Config:
    """An Alembic ``Config`` for statekeeper's packaged history (``migrations.config``)."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
        cfg.set_main_option("sqlalchemy.url", text.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The packaged history, read once."""
    return ScriptDirectory.from_config(alembic_config(None, None))


def known_revisions() -> set[str]:
    """The ids of every revision this statekeeper ships."""
    return {script.revision for script in scripts().walk_revisions()}


def shown(bind: Bind | AsyncEngine | sa.Connection) -> str:
    """The URL of ``bind`` (an engine, connection or URL) with its password hidden."""
    url = bind.engine.url if isinstance(bind, (sa.Engine, AsyncEngine, sa.Connection)) else bind
    return safe_url(url)


def upgrade_command(bind: Bind | AsyncEngine | sa.Connection, schema: str | None = None) -> str:
    """The shell command that upgrades the database of ``bind`` (its password hidden)."""
    where = f" --schema {schema}" if schema else ""
    return f"statekeeper db upgrade --url '{shown(bind)}'{where}"


def not_ready_message(
    found: str | None, where: str, command: str, *, store_hint: bool = True
) -> str | None:
    """Describe why a database at revision ``found`` does not suit this code, or return ``None``.

    ``where`` names the database and ``command`` upgrades it; ``store_hint``
    also mentions the stores' ``auto_migrate=True``.
    """
    if found == HEAD_REVISION:
        return None
    if found is not None and found not in known_revisions():
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


def _engine(bind: Bind) -> tuple[sa.Engine, bool]:
    if isinstance(bind, AsyncEngine):
        raise TypeError(
            "got an AsyncEngine where a sync Engine or a URL is needed: await the async "
            "twin instead (aupgrade, adowngrade, acurrent, acheck)"
        )
    if isinstance(bind, sa.Engine):
        return bind, False
    return migration_engine(bind), True


def with_connection(bind: Bind, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(connection, *args)`` on ``bind``'s database (a URL gets an engine of its own)."""
    engine, owned = _engine(bind)
    try:
        with connect(engine) as conn:
            return fn(conn, *args)
    finally:
        if owned:
            engine.dispose()


def run_command(conn: sa.Connection, action: str, revision: str, schema: str | None) -> list[str]:
    """Run Alembic's ``upgrade`` or ``downgrade`` on ``conn``; return the revisions it applied."""
    cfg = alembic_config(None, schema)
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
    """Upgrade to head; the caller holds :func:`alembic_lock`."""
    return with_connection(engine, run_command, "upgrade", "head", schema)


async def aupgrade_unlocked(engine: AsyncEngine, schema: str | None) -> list[str]:
    """Upgrade to head; the caller holds :func:`aalembic_lock`."""
    async with aconnect(engine) as conn:
        return await conn.run_sync(run_command, "upgrade", "head", schema)


def require_postgresql(backend: str) -> None:
    """Refuse to distribute a database that is not PostgreSQL (``backend``: the dialect's name)."""
    if backend not in ("postgresql", "postgres"):
        raise ValueError(
            "statekeeper db distribute spreads the tables over a Citus cluster, a "
            f"PostgreSQL database; {backend!r} has nothing to distribute"
        )


def distribute_on(conn: sa.Connection, schema: str | None) -> list[str]:
    """Distribute statekeeper's tables over the Citus cluster of ``conn``; return what was done."""
    require_postgresql(conn.dialect.name)
    where = shown(conn) + (f" (schema {schema})" if schema else "")
    # The operation opens its own transaction, like every store call.
    conn.execution_options(isolation_level="AUTOCOMMIT")
    return drive(citus.distribute(schema, where, upgrade_command(conn, schema)), conn)


def follow_distribution(conn: sa.Connection, tables: list[str], schema: str | None) -> list[str]:
    """From a migration that created ``tables``: distribute them on Citus when the rest is.

    Runs in the migration's transaction; does nothing on SQLite, on plain
    PostgreSQL, on Citus before ``statekeeper db distribute`` ran, or in an
    offline script (``--sql``: nothing to ask; ``db distribute`` after it does it).
    """
    if conn.dialect.name != "postgresql" or not isinstance(conn, sa.Connection):
        return []
    return drive(citus.follow(tables, schema), conn)
