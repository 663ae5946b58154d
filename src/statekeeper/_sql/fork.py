"""Fork safety: a database connection opened in one process is never used by another.

A store used before ``os.fork()`` (gunicorn ``--preload``, uWSGI, Celery
prefork, ``multiprocessing`` with fork) would otherwise hand its pooled
connections, sockets shared with the parent, to the children. Two guards:

- In a forked child, every engine statekeeper runs on (its own and a
  caller's) gets a new, empty pool (``Engine.dispose(close=False)``, as
  SQLAlchemy recommends); the parent's connections stay open for the parent.
- Every connection of those engines is stamped with the id of the process
  that opened it; a checkout in another process (a fork the hook did not
  see) replaces it, as does the first checkout of a connection opened before
  statekeeper first saw the engine (it carries no stamp).

A replaced connection is never closed in the child (closing a PostgreSQL
connection sends the server a Terminate on the parent's socket): it is kept
referenced until the process ends, so no driver closes it when collected.
In-memory SQLite engines are left alone: their database lives in the
process's memory, and a child has its own copy.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import sqlalchemy as sa

__all__ = ["ForkLock", "guard"]

_STAMP = "statekeeper_pid"

#: Engines (sync, or an async engine's ``sync_engine``) guarded in this process.
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
#: Connections and pools inherited from a parent, kept from being closed by the collector.
_INHERITED: list[Any] = []


class ForkLock:
    """A thread lock that a forked child gets afresh, released.

    A lock another thread held when the process forked stays held for ever
    in the child, where that thread does not exist.
    """

    def __init__(self) -> None:
        """Create the lock, released."""
        self._lock = threading.Lock()
        _LOCKS.add(self)

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, only if it is free (``False`` if not)."""
        return self._lock.acquire(blocking)

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _reset(self) -> None:
        """Replace the lock by a released one (in a child only)."""
        self._lock = threading.Lock()


_LOCKS: weakref.WeakSet[ForkLock] = weakref.WeakSet()
_GUARD_LOCK = ForkLock()


def guard(engine: sa.Engine) -> None:
    """Make ``engine`` fork-safe (idempotent); in-memory SQLite engines need nothing."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return
    with _GUARD_LOCK:
        if engine in _ENGINES:
            return
        sa.event.listen(engine, "connect", _stamp)
        # First of the checkout listeners: nothing else (statekeeper's liveness
        # check, a caller's own) touches a connection another process opened.
        sa.event.listen(engine, "checkout", _replace_inherited, insert=True)
        _ENGINES.add(engine)


def _stamp(_dbapi_connection: Any, record: Any) -> None:
    """Record which process opened the connection."""
    record.info[_STAMP] = os.getpid()


def _replace_inherited(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Replace, without closing it, a connection this process did not open (or one unstamped)."""
    opened_by = record.info.get(_STAMP)
    if opened_by == os.getpid():
        return
    if opened_by is not None:  # a parent's: referenced for ever, never closed here
        _INHERITED.append(dbapi_connection)
    # An unstamped one may be this process's own: the driver closes it when it
    # is collected (psycopg only in the process that opened it). Detached from
    # the record before SQLAlchemy invalidates it, so SQLAlchemy closes neither;
    # the pool opens a fresh, stamped connection instead.
    record.dbapi_connection = proxy.dbapi_connection = None
    raise sa.exc.DisconnectionError("connection opened by another process; replacing it")


def _after_fork_in_child() -> None:
    """Give the child released locks and every guarded engine an empty pool."""
    for lock in list(_LOCKS):
        lock._reset()
    for engine in list(_ENGINES):
        _INHERITED.append(engine.pool)  # the parent's connections, never closed here
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
