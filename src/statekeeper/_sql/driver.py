"""Drive an operation from ``ops.store`` on a database: the only place sync and async differ.

Each statement runs through SQLAlchemy's public execution path,
``Connection.execute`` on a pooled connection in autocommit, so the engine's
compiled cache, echo, logging and events (``before_cursor_execute``, the
tracing instrumentations built on them) see every statement statekeeper
runs. An operation is sent each statement's ``CursorResult``.

Errors that mean "the database cannot be reached" (a refused or timed-out
connection, a server that went away mid-call, an exhausted pool) become
:class:`~statekeeper.errors.DatabaseUnavailableError`; every other error
passes through as SQLAlchemy raised it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import DatabaseUnavailableError
from .engine import safe_url
from .ops.store import BEGIN, COMMIT, Call, Op

__all__ = ["aconnect", "arun", "connect", "run", "unavailable", "unreachable"]

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


def _begin_sql(dialect: sa.Dialect) -> str:
    # SQLite's IMMEDIATE takes the write lock up front, so a read-then-write
    # transaction cannot deadlock against another writer.
    return "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN"


# --------------------------------------------------------------------------- sync


@contextlib.contextmanager
def connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Check a connection out of ``engine``'s pool; refusals become ``DatabaseUnavailableError``."""
    try:
        conn = engine.connect()
    except _CONNECT_ERRORS as exc:
        raise unreachable(engine, exc) from exc
    with conn, unavailable(engine):
        yield conn


def run(engine: sa.Engine, op: Op[T]) -> T:
    """Run ``op`` on a connection of ``engine`` and return its result."""
    with connect(engine) as conn:
        return _drive(op, conn)


def _execute(conn: sa.Connection, step: Call | str) -> Any:
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
        conn = await engine.connect()
    except _CONNECT_ERRORS as exc:
        raise unreachable(engine, exc) from exc
    try:
        with unavailable(engine):
            yield conn
    finally:
        await conn.close()


async def arun(engine: AsyncEngine, op: Op[T]) -> T:
    """Run ``op`` on a connection of ``engine`` and return its result."""
    async with aconnect(engine) as conn:
        return await _adrive(op, conn)


async def _aexecute(conn: AsyncConnection, step: Call | str) -> Any:
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
