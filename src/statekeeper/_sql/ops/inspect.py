"""The operator's reads behind ``statekeeper sessions ls`` and ``show``, free of I/O.

Generators yielding :class:`~statekeeper._sql.ops.store.Call` steps, driven by
``driver.run`` / ``arun`` like the stores' operations. They are reads
only: whatever the store's ``ttl``, no statement refreshes a session's
expiry. The statements are in ``statements.inspect``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ... import codec
from ..._records import EventRecord, SessionInfo, SessionPage
from ..._rules import encode_cursor
from ..statements.inspect import inspect_statements
from .service import members, read_events
from .store import Call, Context, Op, page_params

__all__ = ["ListedSession", "SessionView", "expired_counts", "list_sessions", "read_session"]


@dataclass(frozen=True, slots=True)
class ListedSession:
    """A session as ``sessions ls`` lists it: its info, stored size and event count."""

    info: SessionInfo
    size_bytes: int
    event_count: int


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as ``sessions show`` prints it.

    ``event_log``: the event-log service created the session (it has an
    update time), rather than a store's ``save_session_state`` / ``set_state``.
    ``state`` is the session's own state (what ``SqlSession.get_state``
    returns); ``app_state`` and ``user_state`` are the scoped states of the
    event-log service, keys without their ``app:`` / ``user:`` prefix, ``{}``
    when there are none; ``events`` the ones asked for, oldest first.
    """

    info: SessionInfo
    size_bytes: int
    event_count: int
    event_log: bool
    state: dict[str, Any]
    app_state: dict[str, Any]
    user_state: dict[str, Any]
    events: tuple[EventRecord, ...]


def read_session(
    ctx: Context, user_id: str, session_id: str, recent: int | None, now: dt.datetime
) -> Op[SessionView | None]:
    """Return the live session with its last ``recent`` events, or ``None``.

    ``recent``: ``None`` all the events, ``0`` none. One SELECT of the
    session's row (scoped states included), then, if events are asked for
    and there are some, one of its log, up to the count the row gave. The
    caller has validated the ids (``_rules.validate_id``) and ``recent``.
    """
    params: dict[str, Any] = {
        "p_app": ctx.app_name,
        "p_user": user_id,
        "p_session": session_id,
        "p_now": now,
    }
    row = (yield Call(inspect_statements(ctx.dialect).session, params)).first()
    if row is None:
        return None
    text, version, count, update_time, created, updated, expires, size, app, user = row
    events = yield from read_events(ctx, params, int(count), recent, None)
    info = SessionInfo(ctx.app_name, user_id, session_id, int(version), created, updated, expires)
    return SessionView(
        info=info,
        size_bytes=int(size),
        event_count=int(count),
        event_log=update_time is not None or int(count) > 0,
        state=codec.decode(text),
        app_state=members(app),
        user_state=members(user),
        events=events,
    )


def list_sessions(
    ctx: Context, user_id: str | None, limit: int, cursor: str | None, now: dt.datetime
) -> Op[SessionPage[ListedSession]]:
    """Return one page of live sessions with sizes and event counts, newest update first.

    One statement per page, keyset-paginated with the cursors of
    ``list_sessions`` of the stores (a cursor of either serves the other).
    The caller has validated ``user_id``.
    """
    params = page_params(ctx, user_id, limit, cursor, now)
    statement = inspect_statements(ctx.dialect).pages[user_id is not None, cursor is not None]
    rows = (yield Call(statement, params)).all()
    items = tuple(
        ListedSession(SessionInfo(*row[:7]), int(row[7]), int(row[8])) for row in rows[:limit]
    )
    next_cursor = encode_cursor(items[-1].info) if len(rows) > limit else None
    return SessionPage(items, next_cursor)


def expired_counts(dialect: str, app_name: str | None, now: dt.datetime) -> Op[dict[str, int]]:
    """Return how many sessions have expired at ``now``, per app (every app, or ``app_name``)."""
    params = {"p_now": now, "p_app": app_name}
    rows = (yield Call(inspect_statements(dialect).expired[app_name is not None], params)).all()
    return {str(name): int(n) for name, n in rows}
