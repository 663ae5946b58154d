"""Engines from URLs: one URL serves the sync and the async store."""

from __future__ import annotations

import importlib.util
import select
import types
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "async_engine", "normalize_url", "sync_engine"]

SQLITE_BUSY_TIMEOUT_MS = 30_000

_DRIVERS = {
    # backend: (sync driver, async driver)
    "sqlite": ("pysqlite", "aiosqlite"),
    "postgresql": ("psycopg", "psycopg"),
}
_MODULES = {"pysqlite": "sqlite3", "aiosqlite": "aiosqlite", "psycopg": "psycopg"}
_EXTRAS = {
    "psycopg": "statekeeper[postgres]",
    "aiosqlite": "statekeeper",
    "pysqlite": "statekeeper",
}


def normalize_url(url: str | sa.URL, *, is_async: bool) -> sa.URL:
    """Give ``url`` the sync or async driver statekeeper uses for its database.

    Raises:
        ValueError: the database is not SQLite or PostgreSQL, or the URL is malformed.
        ImportError: the driver is not installed; the message names the extra.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r} ({exc})") from None
    backend = "postgresql" if parsed.get_backend_name() in ("postgresql", "postgres") else None
    backend = backend or parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(
            f"statekeeper supports SQLite and PostgreSQL, not {parsed.get_backend_name()!r} "
            f"(URL {parsed.render_as_string(hide_password=True)!r})"
        )
    driver = _DRIVERS[backend][1 if is_async else 0]
    if importlib.util.find_spec(_MODULES[driver]) is None:
        raise ImportError(
            f"{backend} needs the {_MODULES[driver]!r} driver, which is not installed: "
            f"pip install '{_EXTRAS[driver]}'"
        )
    return parsed.set(drivername=f"{backend}+{driver}")


def _options(url: sa.URL, engine_options: Mapping[str, Any] | None) -> dict[str, Any]:
    # Autocommit from connect: nothing to roll back when a connection goes
    # back to the pool (an operation that opened a transaction ends it, or
    # invalidates the connection).
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        options["pool_pre_ping"] = True
    options.update(engine_options or {})
    if options.get("isolation_level") is None:  # None: the driver's default, with transactions
        options.pop("isolation_level", None)
    return options


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _socket_ping(dialect: Any, dbapi_connection: Any) -> bool:
    """Pre-ping a PostgreSQL connection without a round trip when its socket is quiet.

    A server that ended the session (restart, ``pg_terminate_backend``, idle
    timeout) leaves the socket readable; only then is the full ``SELECT 1``
    ping run. A quiet socket on an idle connection means it is alive as far
    as anything but a network timeout can tell, and saves a round trip on
    every pool checkout.
    """
    conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    return bool(type(dialect).do_ping(dialect, dbapi_connection))


def _setup(engine: sa.Engine, url: sa.URL) -> None:
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    else:
        engine.dialect.do_ping = types.MethodType(_socket_ping, engine.dialect)  # type: ignore[method-assign]


def sync_engine(url: str | sa.URL, engine_options: Mapping[str, Any] | None) -> sa.Engine:
    """Create the engine a :class:`SqlSession` owns."""
    parsed = normalize_url(url, is_async=False)
    engine = sa.create_engine(parsed, **_options(parsed, engine_options))
    _setup(engine, parsed)
    return engine


def async_engine(url: str | sa.URL, engine_options: Mapping[str, Any] | None) -> AsyncEngine:
    """Create the engine an :class:`AsyncSqlSession` owns."""
    parsed = normalize_url(url, is_async=True)
    engine = create_async_engine(parsed, **_options(parsed, engine_options))
    _setup(engine.sync_engine, parsed)
    return engine


def check_dialect(name: str) -> str:
    """Refuse an engine of a database statekeeper does not support."""
    if name not in _DRIVERS:
        raise ValueError(f"statekeeper supports SQLite and PostgreSQL, not {name!r}")
    return name
