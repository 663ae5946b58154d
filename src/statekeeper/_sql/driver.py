"""Drive an operation from ``ops.store`` on a database: the only place sync and async differ.

Each statement runs through SQLAlchemy's public execution path,
``Connection.execute`` on a pooled connection in autocommit, so the engine's
compiled cache, echo, logging and events (``before_cursor_execute``, the
tracing instrumentations built on them) see every statement statekeeper
runs. An operation is sent each statement's ``CursorResult``.

Errors that mean "the database cannot be reached" (a refused or timed-out
connection, a server that went away mid-call, an exhausted pool) become
:class:`~statekeeper.errors.DatabaseUnavailableError`; every other error
passes through as SQLAlchemy raised it, except the prepared-statement
failures of a transaction-mode pooler (PgBouncer), which become
:class:`~statekeeper.errors.TransactionPoolerError` and cost the connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import DatabaseUnavailableError, TransactionPoolerError
from .engine import safe_url
from .ops.store import BEGIN, COMMIT, Call, Op, sqlstate

__all__ = ["aconnect", "arun", "connect", "pooler_failures", "run", "unavailable", "unreachable"]

T = TypeVar("T")

#: Raised while connecting: the database is not there (or not for us).
_CONNECT_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError)


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()).rstrip(".?!")
    return text or type(orig).__name__


def unreachable(engine: sa.Engine | AsyncEngine, exc: BaseException) -> DatabaseUnavailableError:
    """The error for a connection to ``engine`` that could not be made."""
    return DatabaseUnavailableError(
        f"cannot connect to the database {safe_url(engine.url)}: {_detail(exc)}. "
        "Check that the server is running and the URL is right, then retry"
    )


def _lost(engine: sa.Engine | AsyncEngine, exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"lost the connection to the database {safe_url(engine.url)} during the call: "
        f"{_detail(exc)}. The call's transaction did not commit unless the server had "
        "already answered; retry it (with expected_version to detect a repeat)"
    )


@contextlib.contextmanager
def unavailable(engine: sa.Engine | AsyncEngine) -> Iterator[None]:
    """Turn "connection lost" errors raised in the block into ``DatabaseUnavailableError``."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise _lost(engine, exc) from exc
        raise


#: SQLSTATEs of a prepared statement missing on (or already taken on) the
#: server connection a transaction-mode pooler picked: invalid_sql_statement_name,
#: duplicate_prepared_statement.
_POOLER_STATES = ("26000", "42P05")

#: What turns the driver's server-side prepared statements off, by driver.
_POOLER_SETTING = {
    "psycopg": (
        'engine_options={"connect_args": {"prepare_threshold": None}} on the store or '
        'service (connect_args={"prepare_threshold": None} on an engine of your own)'
    ),
    "asyncpg": 'connect_args={"statement_cache_size": 0} on the engine (asyncpg 0.31 or later)',
}


def _lost_prepare(exc: Exception) -> bool:
    """Whether ``exc`` is a server-side prepared statement lost to a transaction-mode pooler."""
    if isinstance(exc, sa.exc.DBAPIError):
        code, text = sqlstate(exc), str(exc.orig)
    else:  # a driver's own error, unwrapped (asyncpg's on-connect type introspection)
        code, text = getattr(exc, "sqlstate", None), str(exc)
    if code == "08P01":  # protocol_violation: a bind meant for another statement of that name
        return "prepared statement" in text
    return code in _POOLER_STATES


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


@contextlib.contextmanager
def pooler_failures(
    bind: sa.Engine | AsyncEngine | sa.Connection | AsyncConnection,
) -> Iterator[None]:
    """Turn prepared-statement failures raised in the block into ``TransactionPoolerError``."""
    try:
        yield
    except Exception as exc:
        if not _lost_prepare(exc):
            raise
        engine = bind.engine if isinstance(bind, (sa.Connection, AsyncConnection)) else bind
        setting = _POOLER_SETTING.get(
            engine.dialect.driver, "the driver's option that turns server-side prepares off"
        )
        raise TransactionPoolerError(
            f"the database {safe_url(engine.url)} is behind a connection pooler in "
            "transaction mode (PgBouncer pool_mode = transaction, or alike), which does not "
            "keep the driver's "
            f"prepared statements: {_first_line(exc)}. The statement did not run and no session is "
            f'half-written. Set {setting}; see "Connection poolers" in statekeeper\'s '
            "Deploying guide"
        ) from exc


def _begin_sql(dialect: sa.Dialect) -> str:
    # SQLite's IMMEDIATE takes the write lock up front, so a read-then-write
    # transaction cannot deadlock against another writer.
    return "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN"


# --------------------------------------------------------------------------- sync


@contextlib.contextmanager
def connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Check a connection out of ``engine``'s pool; refusals become ``DatabaseUnavailableError``."""
    try:
        with pooler_failures(engine):  # the pre-ping is a statement too
            conn = engine.connect()
    except _CONNECT_ERRORS as exc:
        raise unreachable(engine, exc) from exc
    with conn, unavailable(engine):
        try:
            yield conn
        except TransactionPoolerError:
            conn.invalidate()  # its driver believes in statements the server lacks
            raise


def run(engine: sa.Engine, op: Op[T]) -> T:
    """Run ``op`` on a connection of ``engine`` and return its result."""
    with connect(engine) as conn:
        return _drive(op, conn)


def _execute(conn: sa.Connection, step: Call | str) -> Any:
    with pooler_failures(conn):  # never thrown into the operation
        if isinstance(step, Call):
            return conn.execute(step.statement, step.params)
        conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
    return None


def _drive(op: Op[T], conn: sa.Connection) -> T:
    in_tx = False
    try:
        step = next(op)
        while True:
            try:
                result = _execute(conn, step)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                step = op.throw(exc)
                continue
            if step == BEGIN:
                in_tx = True
            elif step == COMMIT:
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            try:
                conn.exec_driver_sql("ROLLBACK")
            except Exception:
                # Never hand a connection inside a transaction back to the pool.
                conn.invalidate()
        raise


# --------------------------------------------------------------------------- async


@contextlib.asynccontextmanager
async def aconnect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Check a connection out of ``engine``'s pool; refusals become ``DatabaseUnavailableError``."""
    try:
        with pooler_failures(engine):
            conn = await engine.connect()
    except _CONNECT_ERRORS as exc:
        raise unreachable(engine, exc) from exc
    try:
        with unavailable(engine):
            yield conn
    except TransactionPoolerError:
        await conn.invalidate()
        raise
    finally:
        await conn.close()


async def arun(engine: AsyncEngine, op: Op[T]) -> T:
    """Run ``op`` on a connection of ``engine`` and return its result."""
    async with aconnect(engine) as conn:
        return await _adrive(op, conn)


async def _aexecute(conn: AsyncConnection, step: Call | str) -> Any:
    with pooler_failures(conn):
        if isinstance(step, Call):
            return await conn.execute(step.statement, step.params)
        await conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
    return None


async def _adrive(op: Op[T], conn: AsyncConnection) -> T:
    in_tx = False
    try:
        step = next(op)
        while True:
            try:
                result = await _aexecute(conn, step)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                step = op.throw(exc)
                continue
            if step == BEGIN:
                in_tx = True
            elif step == COMMIT:
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            try:
                await conn.exec_driver_sql("ROLLBACK")
            except Exception:
                await conn.invalidate()
        raise
