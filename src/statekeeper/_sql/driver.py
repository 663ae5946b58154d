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

A call on an engine statekeeper made from a URL whose first statement met a
session the server had already ended (:func:`ended_unrun`) is sent again,
once, on a fresh connection: that statement never ran. This closes the race
the pool's socket check (``liveness``) cannot see, a connection terminated
while it sat in the pool but whose notice had not arrived yet.

An async store on SQLite made from a URL runs on a sync (pysqlite) engine:
:func:`arun` hands the whole operation, its ``BEGIN IMMEDIATE`` ... ``COMMIT``
included, to one thread of the event loop's default executor and drives it
there with :func:`run`, the sync path, on that engine's pool: one thread hop
per operation where SQLAlchemy's aiosqlite adapter makes four per statement.
The statements still go through ``Connection.execute`` on the engine the
store exposes, so its events and echo see each one.

A cancelled async call never interrupts its operation: :func:`arun` drives
it in a task (or the worker thread) of its own that the caller awaits
through ``asyncio.shield``. The caller gets ``CancelledError`` at once; the
operation runs to its end (committed, or rolled back) and gives its
connection back clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import DatabaseUnavailableError, StorageFullError, TransactionPoolerError
from .engine import safe_url
from .ops.store import BEGIN, COMMIT, Call, Op, sqlstate

__all__ = [
    "aconnect",
    "arun",
    "connect",
    "drive",
    "ended_unrun",
    "guard_cancellation",
    "in_thread",
    "pooler_failures",
    "run",
    "settle",
    "unavailable",
    "unreachable",
]

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


def _disk_full(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database refused a write for lack of disk (SQLITE_FULL, PostgreSQL 53100)."""
    return sqlstate(exc) == "53100" or "database or disk is full" in str(exc.orig)


def _storage_full(engine: sa.Engine | AsyncEngine, exc: BaseException) -> StorageFullError:
    return StorageFullError(
        f"the database {safe_url(engine.url)} refused the write: {_detail(exc)}. Nothing was "
        "written; free disk space (or raise SQLite's max_page_count), then retry"
    )


def _turned(engine: sa.Engine | AsyncEngine, exc: sa.exc.DBAPIError) -> Exception | None:
    """statekeeper's error for a lost connection or a full disk, else ``None``."""
    if exc.connection_invalidated:
        return _lost(engine, exc)
    if _disk_full(exc):
        return _storage_full(engine, exc)
    return None


@contextlib.contextmanager
def unavailable(engine: sa.Engine | AsyncEngine) -> Iterator[None]:
    """Turn "connection lost" errors raised in the block into ``DatabaseUnavailableError``."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if (turned := _turned(engine, exc)) is not None:
            raise turned from exc
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


def _pooler_error(
    bind: sa.Engine | AsyncEngine | sa.Connection | AsyncConnection, exc: Exception
) -> TransactionPoolerError:
    """The error for a prepared statement lost to a transaction-mode pooler (``_lost_prepare``)."""
    engine = bind.engine if isinstance(bind, (sa.Connection, AsyncConnection)) else bind
    setting = _POOLER_SETTING.get(
        engine.dialect.driver, "the driver's option that turns server-side prepares off"
    )
    return TransactionPoolerError(
        f"the database {safe_url(engine.url)} is behind a connection pooler in "
        "transaction mode (PgBouncer pool_mode = transaction, or alike), which does not "
        "keep the driver's "
        f"prepared statements: {_first_line(exc)}. The statement did not run and no session is "
        f'half-written. Set {setting}; see "Connection poolers" in statekeeper\'s '
        "Deploying guide"
    )


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
        raise _pooler_error(bind, exc) from exc


def _begin_sql(dialect: sa.Dialect) -> str:
    # SQLite's IMMEDIATE takes the write lock up front, so a read-then-write
    # transaction cannot deadlock against another writer.
    return "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN"


#: SQLSTATEs of a session the server ended where none of our statement took
#: effect: admin_shutdown (``pg_terminate_backend``, a fast shutdown) and
#: idle_session_timeout. The backend acts on them only where it checks for
#: interrupts: reading the next command (the statement never runs) or inside
#: a statement (its transaction rolls back). A commit holds interrupts off,
#: and a committed statement's reply, up to ReadyForQuery, is flushed before
#: the backend reads (and checks) again. So a statement answered with one of
#: them did not commit (a backend that dies while blocked sending a reply
#: sends no notice at all). Read from PostgreSQL's postgres.c, for sessions
#: that do not LISTEN (statekeeper's never do); not a documented promise.
#: Not crash_shutdown (57P02): SIGQUIT ends a backend anywhere, a commit's
#: reply unsent included.
_ENDED_UNRUN = ("57P01", "57P05")

#: The server's words for the same two notices. When the socket closes while
#: the driver reads the notice, psycopg reports it without a SQLSTATE ("consuming
#: input failed: terminating connection due to administrator command"): seen
#: with psycopg 3.0 and 3.1 in about one call of two after a termination. The
#: words are those of a server whose lc_messages is English; on another, such a
#: call fails with DatabaseUnavailableError as it did before.
_ENDED_WORDS = (
    "terminating connection due to administrator command",
    "terminating connection due to idle-session timeout",
)


def ended_unrun(exc: BaseException) -> bool:
    """Whether ``exc`` is the server ending the session before the statement ran (see above)."""
    if not isinstance(exc, sa.exc.DBAPIError) or not exc.connection_invalidated:
        return False
    code = sqlstate(exc)
    if code is not None:
        return code in _ENDED_UNRUN
    return any(words in str(exc.orig) for words in _ENDED_WORDS)


class _Resend(Exception):
    """The first statement of a call met an ended session: send it again on a new connection."""

    def __init__(self, step: Call | str) -> None:
        super().__init__("the server had ended the session; sending the statement again")
        self.step = step


# --------------------------------------------------------------------------- sync


def _checkout(engine: sa.Engine) -> sa.Connection:
    """``engine.connect()``, its refusals turned into statekeeper's errors."""
    try:
        return engine.connect()
    except Exception as exc:
        if _lost_prepare(exc):  # a pool_pre_ping is a statement too
            raise _pooler_error(engine, exc) from exc
        if isinstance(exc, _CONNECT_ERRORS):
            raise unreachable(engine, exc) from exc
        raise


@contextlib.contextmanager
def connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Check a connection out of ``engine``'s pool; refusals become ``DatabaseUnavailableError``."""
    conn = _checkout(engine)
    with conn, unavailable(engine):
        try:
            yield conn
        except TransactionPoolerError:
            conn.invalidate()  # its driver believes in statements the server lacks
            raise


def run(engine: sa.Engine, op: Op[T], *, resend: bool = False) -> T:
    """Run ``op`` on a connection of ``engine`` and return its result.

    With ``resend``, a first statement that met an ended session is sent again, once.
    """
    try:
        return _run_once(engine, op, resend, None)
    except _Resend as again:
        return _run_once(engine, op, False, again.step)


def _run_once(engine: sa.Engine, op: Op[T], resend: bool, first: Call | str | None) -> T:
    """``with connect(engine) as conn: return _drive(...)``, without its context managers.

    A call's every instruction counts here (benchmarks/instructions.py): the
    errors are turned as ``connect`` turns them, in the same order.
    """
    conn = _checkout(engine)
    try:
        return _drive(op, conn, resend=resend, first=first)
    except TransactionPoolerError:
        conn.invalidate()  # its driver believes in statements the server lacks
        raise
    except sa.exc.DBAPIError as exc:  # as ``unavailable``
        if (turned := _turned(engine, exc)) is not None:
            raise turned from exc
        raise
    finally:
        conn.close()


def drive(op: Op[T], conn: sa.Connection) -> T:
    """Run ``op`` on ``conn``, a connection the caller holds (no resend); return its result."""
    return _drive(op, conn)


def _execute(conn: sa.Connection, step: Call | str) -> Any:
    try:  # a pooler's failure is never thrown into the operation
        if isinstance(step, Call):
            return conn.execute(step.statement, step.params)
        conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
    except Exception as exc:
        if _lost_prepare(exc):
            raise _pooler_error(conn, exc) from exc
        raise
    return None


def _drive(
    op: Op[T], conn: sa.Connection, *, resend: bool = False, first: Call | str | None = None
) -> T:
    in_tx = False
    try:
        step = next(op) if first is None else first
        while True:
            try:
                result = _execute(conn, step)
            except sa.exc.DBAPIError as exc:
                if resend and ended_unrun(exc):
                    raise _Resend(step) from exc
                if exc.connection_invalidated:
                    raise
                step = op.throw(exc)
                continue
            resend = False  # a statement ran: the call is under way
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


# Why an operation is never cancelled mid-way. A cancellation that reaches
# SQLAlchemy inside ``Connection.execute`` (after aiosqlite has stepped a
# statement, before the adapter fetched its rows) makes SQLAlchemy treat it
# as a disconnect: it invalidates the connection without closing the cursor,
# and aiosqlite closes the sqlite3 connection while that cursor's statement
# is still active. SQLite then keeps the closed connection as a "zombie"
# that holds its write lock (and the unfinished write) until the cursor is
# garbage-collected, which an idle loop never does. Every later write on
# another connection waits busy_timeout (30 s) for that lock, and when its
# own call is cancelled, SQLAlchemy's graceful close queues behind the
# blocked statement in aiosqlite's thread: the process waits at 0% CPU.
# Driving the operation in a task the caller's cancellation cannot reach
# keeps every statement whole, on every driver.

#: Operations whose caller was cancelled, still finishing. The event loop
#: keeps only weak references to tasks; these keep them alive to the end.
_FINISHING: set[asyncio.Future[Any]] = set()


def _finished(work: asyncio.Future[Any]) -> None:
    """Forget a finished orphan operation (its outcome was the cancelled caller's)."""
    _FINISHING.discard(work)
    if not work.cancelled():
        work.exception()  # retrieved: nobody is left to see it


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
    """Run ``fn(*args, **kwargs)`` in a thread of the running loop's default executor.

    The caller's context variables go along (as with ``asyncio.to_thread``), so
    a tracer's current span is the parent of the spans made in the thread.

    Why the loop's default executor and not a pool of statekeeper's own:
    ``asyncio.run`` waits for that executor's threads before it closes the
    loop, so an operation still running when the program's main coroutine
    returns (a cancelled caller's) finishes and reports to an open loop; and
    it is made afresh for each loop, so a forked child never submits work to
    the threads of its parent (a ``ThreadPoolExecutor`` carried over a fork
    counts its parent's idle threads as its own and queues work that no
    thread will ever take: a hang at 0% CPU).
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return loop.run_in_executor(None, call)


async def arun(engine: AsyncEngine | sa.Engine, op: Op[T], *, resend: bool = False) -> T:
    """Run ``op`` on a connection of ``engine``; a cancelled caller never cuts it short.

    On a sync ``engine`` (SQLite), the whole operation runs in one worker thread.
    With ``resend``, a first statement that met an ended session is sent again, once.
    """
    if isinstance(engine, sa.Engine):
        work: asyncio.Future[T] = in_thread(run, engine, op, resend=resend)
    else:
        work = asyncio.ensure_future(_arun(engine, op, resend))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if not work.done():
            _FINISHING.add(work)
            work.add_done_callback(_finished)
        else:
            _finished(work)
        raise


def _close_cut_cursor(ctx: sa.engine.ExceptionContext) -> None:
    """Close the cursor of a statement cut short by a cancellation, before its connection."""
    context = ctx.execution_context
    if context is not None and not isinstance(ctx.original_exception, Exception):
        with contextlib.suppress(Exception):
            context.cursor.close()


def guard_cancellation(engine: AsyncEngine | sa.Engine) -> None:
    """Make a cancelled statement on an aiosqlite ``engine`` release its connection's lock."""
    # The one cancellation arun cannot keep out: asyncio.run cancelling every
    # task left at the end of the loop, the operation's own included. (A sync
    # engine's operations run in a thread, which no cancellation reaches.)
    if isinstance(engine, sa.Engine):
        return
    target = engine.sync_engine
    if target.dialect.name == "sqlite" and not sa.event.contains(
        target, "handle_error", _close_cut_cursor
    ):
        sa.event.listen(target, "handle_error", _close_cut_cursor)


async def settle() -> None:
    """Wait until the operations of cancelled calls on this event loop have finished."""
    loop = asyncio.get_running_loop()
    while pending := [t for t in _FINISHING if t.get_loop() is loop]:
        await asyncio.wait(pending)


async def _arun(engine: AsyncEngine, op: Op[T], resend: bool) -> T:
    try:
        async with aconnect(engine) as conn:
            return await _adrive(op, conn, resend=resend)
    except _Resend as again:
        async with aconnect(engine) as conn:
            return await _adrive(op, conn, first=again.step)


async def _aexecute(conn: AsyncConnection, step: Call | str) -> Any:
    with pooler_failures(conn):
        if isinstance(step, Call):
            return await conn.execute(step.statement, step.params)
        await conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
    return None


async def _adrive(
    op: Op[T], conn: AsyncConnection, *, resend: bool = False, first: Call | str | None = None
) -> T:
    in_tx = False
    try:
        step = next(op) if first is None else first
        while True:
            try:
                result = await _aexecute(conn, step)
            except sa.exc.DBAPIError as exc:
                if resend and ended_unrun(exc):
                    raise _Resend(step) from exc
                if exc.connection_invalidated:
                    raise
                step = op.throw(exc)
                continue
            resend = False
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
