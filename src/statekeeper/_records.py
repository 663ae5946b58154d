"""Plain records returned by the stores."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Any, Generic

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:
    from typing_extensions import TypeVar

__all__ = ["EventRecord", "SessionInfo", "SessionPage", "SessionRecord"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What a listing tells about one session: its key, version and timestamps, not its state.

    Attributes:
        app_name: the app the session belongs to.
        user_id: the user the session belongs to (may be empty).
        session_id: the session's id.
        version: bumped by every write; ``1`` after the first.
        created_at: when the session was first written (aware, UTC).
        updated_at: when the session was last written (aware, UTC).
        expires_at: when the session expires unless saved or loaded again
            (aware, UTC), or ``None`` for a store without ``ttl``.
    """

    app_name: str
    user_id: str
    session_id: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of a session's log, as :class:`~statekeeper.SessionService` returns it.

    Attributes:
        seq: the event's place in the session's log: 1, 2, ... in insertion order.
        timestamp: the event's time in seconds since the epoch, the exact
            float that was appended.
        data: the event document, equal to the one appended.
    """

    seq: int
    timestamp: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session of the event-log service: its key, revision, merged state and events.

    Attributes:
        app_name: the app the session belongs to.
        user_id: the user the session belongs to (may be empty).
        session_id: the session's id.
        version: the revision, the stale-writer check: ``1`` after create,
            one more per appended event (and per ``SqlSession`` write).
        state: the session's state merged with the app's (keys ``app:k``)
            and the user's (keys ``user:k``).
        events: the events asked for, oldest first; ``()`` in listings.
        update_time: the exact float timestamp of the last appended event,
            or the one given at create (seconds since the epoch).
        created_at: when the session was created (aware, UTC).
        updated_at: when the session was last written (aware, UTC).
        expires_at: when the session expires unless read or written again
            (aware, UTC), or ``None`` for a service without ``ttl``.
    """

    app_name: str
    user_id: str
    session_id: str
    version: int
    state: dict[str, Any]
    events: tuple[EventRecord, ...]
    update_time: float
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None


ItemT = TypeVar("ItemT", default=SessionInfo)


@dataclass(frozen=True, slots=True)
class SessionPage(Generic[ItemT]):
    """One page of ``list_sessions``, newest update first unless asked otherwise.

    The stores' pages hold :class:`SessionInfo` items, the event-log
    service's :class:`SessionRecord` items.

    Attributes:
        items: the sessions on this page.
        next_cursor: pass it as ``cursor=`` to get the next page; ``None`` on
            the last page.
    """

    items: tuple[ItemT, ...]
    next_cursor: str | None
