"""Engines from URLs: one URL serves the sync and the async store, and stores share engines.

A store given a URL does not build an engine of its own each time: every
store of the process on the same URL and options (and, for async stores on
PostgreSQL, the same event loop) shares one engine and its pool, so a store
per request costs no new connections. The engine is disposed when the last
store using it closes.

An async store on SQLite gets the sync (pysqlite) engine, the very one a
sync store on that URL gets: it runs each operation in one worker thread
(``driver.arun``), so it is bound to no event loop.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import sqlalchemy.ext.asyncio as sa_async
from sqlalchemy.ext.asyncio import AsyncEngine

from . import liveness
from .fork import ForkLock

__all__ = [
    "forget_heads",
    "found_at_head",
    "record_at_head",
    "safe_url",
    "SQLITE_BUSY_TIMEOUT_MS",
    "acquire_async",
    "acquire_sync",
    "check_dialect",
    "is_memory_url",
    "migration_engine",
    "normalize_url",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000

_DRIVERS = {
    # backend: (sync driver, async driver)
    "sqlite": ("pysqlite", "aiosqlite"),
    "postgresql": ("psycopg", "psycopg"),
}
_MODULES = {"pysqlite": "sqlite3", "aiosqlite": "aiosqlite", "psycopg": "psycopg"}
_EXTRAS = {
    "psycopg": "statekeeper[postgres]' (on your system's libpq) or 'statekeeper[postgres-binary]",
    "aiosqlite": "statekeeper",
    "pysqlite": "statekeeper",
}

#: ``engine_options`` that would take statements out of autocommit, where a
#: store's writes would sit in a transaction nobody commits.
_REFUSED_OPTIONS = ("isolation_level",)


def normalize_url(url: str | sa.URL, *, is_async: bool) -> sa.URL:
    """Give ``url`` the sync or async driver statekeeper uses for its database.

    Raises:
        ValueError: the database is not SQLite or PostgreSQL, or the URL is malformed.
        ImportError: the driver is not installed; the message names the extra.
    """
    parsed, backend = _parse(url)
    driver = _DRIVERS[backend][1 if is_async else 0]
    if importlib.util.find_spec(_MODULES[driver]) is None:
        raise ImportError(
            f"{backend} needs the {_MODULES[driver]!r} driver, which is not installed: "
            f"pip install '{_EXTRAS[driver]}'"
        )
    return parsed.set(drivername=f"{backend}+{driver}")


def safe_url(url: str | sa.URL) -> str:
    """``url`` with its password hidden, for messages (a text that is no URL, as it is)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(url)


@functools.lru_cache(maxsize=64)  # a store per request parses its URL once, not every time
def _parse(url: str | sa.URL) -> tuple[sa.URL, str]:
    """Return the parsed URL and its backend; ``ValueError`` for one statekeeper cannot use."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r} ({exc})") from None
    backend = "postgresql" if parsed.get_backend_name() in ("postgresql", "postgres") else None
    backend = backend or parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(
            f"statekeeper supports SQLite and PostgreSQL, not {parsed.get_backend_name()!r} "
            f"(URL {safe_url(parsed)!r})"
        )
    return parsed, backend


def _is_memory(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def is_memory_url(url: str | sa.URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (``False`` if it does not parse)."""
    try:
        return _is_memory(sa.make_url(url))
    except sa.exc.ArgumentError:
        return False  # the store or service reports the malformed URL


def _check_options(engine_options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(engine_options or {})
    execution = options.get("execution_options") or {}
    for name in _REFUSED_OPTIONS:
        if name in options or name in execution:
            raise ValueError(
                f"engine_options {name}={options.get(name, execution.get(name))!r} is not "
                "supported: statekeeper runs each statement in autocommit (every write is one "
                "atomic statement, or a transaction it commits itself), and another isolation "
                "level would leave writes uncommitted. Remove the option; to share an engine "
                "configured your way, pass that Engine instead of a URL"
            )
    return options


def _options(url: sa.URL, engine_options: Mapping[str, Any]) -> dict[str, Any]:
    # Autocommit from connect: nothing to roll back when a connection goes
    # back to the pool (an operation that opened a transaction ends it, or
    # its connection is invalidated).
    options: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        # Nothing to roll back in autocommit: no ROLLBACK call (for async
        # SQLite, a thread hop) when a connection is closed.
        "skip_autocommit_rollback": True,
    }
    if _is_memory(url):
        # One in-memory database for the engine's life: one connection, which
        # callers take in turn (never two threads on it at once).
        options.update(pool_size=1, max_overflow=0, pool_recycle=-1)
        options["connect_args"] = {"check_same_thread": False}
    elif url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif url.get_driver_name() != "psycopg":  # psycopg connections: _check_connections
        options["pool_pre_ping"] = True
    options.update(engine_options)
    return options


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _wal(cursor)
    finally:
        cursor.close()


def _wal(cursor: Any) -> None:
    """Switch the database to WAL, waiting out other connections doing the same.

    SQLite does not call the busy handler for this switch: processes opening
    a new database file at once (replicas starting) got "database is locked"
    at once, about 1 in 60 with four of them. Retried for up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _check_connections(engine: sa.Engine, options: Mapping[str, Any]) -> None:
    """Check psycopg connections on checkout without a round trip (``liveness``).

    An app's own ``pool_pre_ping`` (either way) is left to SQLAlchemy.
    """
    if engine.dialect.driver == "psycopg" and "pool_pre_ping" not in options:
        sa.event.listen(engine, "connect", liveness.mark_fresh)
        sa.event.listen(engine, "checkout", liveness.check_on_checkout)


def _create_sync(url: sa.URL, options: Mapping[str, Any]) -> sa.Engine:
    if _is_memory(url):
        options = {"poolclass": sa.QueuePool, **options}
    engine = sa.create_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    _check_connections(engine, options)
    return engine


def _create_async(url: sa.URL, options: Mapping[str, Any]) -> AsyncEngine:
    # Looked up at call time, as sa.create_engine is: a tracer that wraps the function
    # (OpenTelemetry's SQLAlchemyInstrumentor().instrument()) sees the engines made after it.
    engine = sa_async.create_async_engine(url, **options)
    _check_connections(engine.sync_engine, options)
    return engine


def migration_engine(url: str | sa.URL) -> sa.Engine:
    """Create a one-connection engine for running migrations on ``url``."""
    parsed = normalize_url(url, is_async=False)
    return _create_sync(parsed, {"poolclass": sa.NullPool, **_sqlite_args(parsed)})


def _sqlite_args(url: sa.URL) -> dict[str, Any]:
    if url.get_backend_name() != "sqlite":
        return {}
    return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}


# --------------------------------------------------------------------------- sharing


def _freeze(value: Any) -> Any:
    """Return a hashable stand-in for an option value (raises ``TypeError`` if there is none)."""
    if isinstance(value, Mapping):
        return frozenset((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    hash(value)
    return value


@dataclass
class _Shared:
    engine: Any
    users: int = 0


@dataclass
class _Registry:
    """Engines shared by the stores of one process (async: of one event loop)."""

    entries: dict[Any, _Shared] = field(default_factory=dict)
    lock: ForkLock = field(default_factory=ForkLock)

    def acquire(self, key: Any, create: Callable[[], Any]) -> tuple[Any, Callable[[], Any]]:
        with self.lock:
            entry = None if key is None else self.entries.get(key)
            if entry is None:
                entry = _Shared(create())
                if key is not None:  # else: options that cannot be compared, not shared
                    self.entries[key] = entry
            entry.users += 1
        released = False

        def release() -> Any:
            """Drop this user; return the engine to dispose when it was the last one."""
            nonlocal released
            with self.lock:
                if released:
                    return None
                released = True
                entry.users -= 1
                if entry.users:
                    return None
                if key is not None and self.entries.get(key) is entry:
                    del self.entries[key]
            return entry.engine

        return entry.engine, release


_SYNC = _Registry()
_ASYNC: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()
_ASYNC_LOCK = ForkLock()


class _NoLoop:
    """Stands for "no running loop" as a weak-referenceable registry key."""


_NO_LOOP = _NoLoop()


def _key(url: sa.URL, options: Mapping[str, Any]) -> Any:
    if _is_memory(url):
        return None  # each store's in-memory database is its own
    try:
        return (url.render_as_string(hide_password=False), _freeze(options))
    except TypeError:
        return None


def acquire_sync(
    url: str | sa.URL, engine_options: Mapping[str, Any] | None
) -> tuple[sa.Engine, Callable[[], sa.Engine | None]]:
    """Return the shared engine for ``url`` and a release function.

    The release function returns the engine to dispose once its last user released it.
    """
    options = _check_options(engine_options)
    parsed = normalize_url(url, is_async=False)
    return _SYNC.acquire(
        _key(parsed, options), lambda: _create_sync(parsed, _options(parsed, options))
    )


def acquire_async(
    url: str | sa.URL, engine_options: Mapping[str, Any] | None
) -> tuple[AsyncEngine | sa.Engine, Callable[[], AsyncEngine | sa.Engine | None]]:
    """Return the engine an async store on ``url`` runs on, and a release function.

    PostgreSQL: the shared async engine of this event loop. SQLite: the shared
    sync engine (:func:`acquire_sync`), whose operations run in a worker thread.
    """
    if _parse(url)[1] == "sqlite":
        return acquire_sync(url, engine_options)
    options = _check_options(engine_options)
    parsed = normalize_url(url, is_async=True)
    try:
        loop: Any = asyncio.get_running_loop()
    except RuntimeError:
        loop = _NO_LOOP
    with _ASYNC_LOCK:
        registry = _ASYNC.get(loop)
        if registry is None:
            registry = _ASYNC[loop] = _Registry()
    return registry.acquire(
        _key(parsed, options), lambda: _create_async(parsed, _options(parsed, options))
    )


def check_dialect(name: str) -> str:
    """Refuse an engine of a database statekeeper does not support."""
    if name not in _DRIVERS:
        raise ValueError(f"statekeeper supports SQLite and PostgreSQL, not {name!r}")
    return name


# --------------------------------------------------------------------------- at head

#: The schemas found at head, per engine (an async engine's ``sync_engine``).
#: A store on one of them needs no first-use read; the entry goes with the engine.
_AT_HEAD: weakref.WeakKeyDictionary[sa.Engine, set[str | None]] = weakref.WeakKeyDictionary()
_AT_HEAD_LOCK = ForkLock()


def found_at_head(engine: sa.Engine, schema: str | None) -> bool:
    """Whether a store found ``engine``'s database (``schema``) at head already."""
    with _AT_HEAD_LOCK:
        return schema in _AT_HEAD.get(engine, ())


def record_at_head(engine: sa.Engine, schema: str | None) -> None:
    """Remember that ``engine``'s database (``schema``) is at head: later stores skip the read."""
    with _AT_HEAD_LOCK:
        _AT_HEAD.setdefault(engine, set()).add(schema)


def forget_heads() -> None:
    """Forget which databases were found at head: a migration ran, stores check again."""
    with _AT_HEAD_LOCK:
        _AT_HEAD.clear()
