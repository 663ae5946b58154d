"""A pooled psycopg connection checked before use, without a round trip.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` on every checkout: a second
round trip for every one-statement call. Engines statekeeper makes from a URL
check their psycopg connections in a pool ``checkout`` event instead:

- a connection psycopg knows is closed or broken is replaced;
- otherwise its socket is polled with a zero timeout. An idle connection in
  autocommit has nothing to read: the server sends nothing unprompted unless
  it ends the session (the ``FATAL`` notice of ``pg_terminate_backend``, of
  a shutdown, of ``idle_session_timeout``) or the socket was closed. Nothing
  to read: the connection is handed out as it is. Anything else: it is
  replaced (``DisconnectionError``: the pool opens a fresh connection and the
  call goes on), at worst one reconnect for a connection that was sound.

A connection just opened is handed out unchecked, as SQLAlchemy's pre-ping
does. The check cannot see a session the server is ending but has not said
so yet (``pg_terminate_backend`` returns before the backend acts on it): the
driver sends such a call's first statement again (``driver.ended_unrun``).
Neither check sees a network that silently stopped delivering (no FIN, no
RST): that shows as a failed call once TCP gives up, as it did with the ping.
"""

from __future__ import annotations

import select
from typing import Any

import sqlalchemy as sa

__all__ = ["check_on_checkout", "mark_fresh"]

_FRESH = "statekeeper_fresh"


def mark_fresh(_dbapi_connection: Any, record: Any) -> None:
    """Pool ``connect`` listener: the connection's first checkout needs no check."""
    record.info[_FRESH] = True


def _has_input(fd: int) -> bool:
    """Whether socket ``fd`` has something to read, or was closed or failed (no waiting)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))  # hang-up and errors are reported unasked
    readable, _, failed = select.select([fd], [], [fd], 0)  # Windows
    return bool(readable or failed)


def check_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool ``checkout`` listener: replace a psycopg connection the server ended (see above)."""
    if record.info.pop(_FRESH, False):
        return
    # Sync psycopg, or its async connection under SQLAlchemy's adapter.
    conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if getattr(conn, "closed", False) or getattr(conn, "broken", False):
        raise sa.exc.DisconnectionError("the connection was closed; replacing it")
    try:
        fd = conn.fileno()
    except Exception as exc:  # psycopg: the connection has no socket any more
        raise sa.exc.DisconnectionError(f"the connection has no socket ({exc})") from exc
    if _has_input(fd):
        raise sa.exc.DisconnectionError(
            "the server ended the session or closed the socket; replacing the connection"
        )
