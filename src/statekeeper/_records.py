"""Plain records returned by the stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

__all__ = ["SessionInfo", "SessionPage"]


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
class SessionPage:
    """One page of :meth:`list_sessions`, newest update first.

    Attributes:
        items: the sessions on this page.
        next_cursor: pass it as ``cursor=`` to get the next page; ``None`` on
            the last page.
    """

    items: tuple[SessionInfo, ...]
    next_cursor: str | None
