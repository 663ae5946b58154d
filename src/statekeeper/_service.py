"""What the event-log service does before and after I/O: validation, encoding, ids.

``SessionService`` and ``AsyncSessionService`` hold a :class:`ServiceCore`
and a ``_runner.Runner`` / ``AsyncRunner`` (the stores' engine plumbing:
shared engines, first-use schema check, ``close``), and only drive the
operations the core builds.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _ops, _ops_service, codec
from ._store import StoreCore, check_mapping

if TYPE_CHECKING:
    from ._records import SessionPage, SessionRecord

__all__ = ["ServiceCore"]

_NO_DELTA = _ops_service.Delta()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _seconds(value: object, what: str) -> float:
    """``value`` as a finite float of seconds, or a ``ValueError`` saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a float of seconds since the epoch, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return seconds


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be None or a non-negative int, got {value!r}")
    return value


class ServiceCore:
    """The I/O-free half of the event-log service: builds the operation for each method."""

    def __init__(
        self,
        dialect: str,
        *,
        app_name: str,
        ttl: float | dt.timedelta | None,
        schema: str | None,
    ) -> None:
        """Validate the service's settings (as a store's)."""
        self.store = StoreCore(dialect, app_name=app_name, ttl=ttl, schema=schema)
        self.ctx = self.store.ctx

    def _ids(self, user_id: str, session_id: str) -> None:
        _ops.validate_id(user_id, "user_id", allow_empty=True)
        _ops.validate_id(session_id, "session_id", allow_empty=False)

    def create(
        self,
        session_id: str | None,
        user_id: str,
        state: Mapping[str, Any] | None,
        timestamp: float | None,
    ) -> _ops.Op[SessionRecord]:
        """Build ``create_session``."""
        if session_id is None:
            session_id = str(uuid.uuid4())
        self._ids(user_id, session_id)
        delta = _NO_DELTA if state is None else _ops_service.split_state(state, "state")
        stamp = time.time() if timestamp is None else _seconds(timestamp, "timestamp")
        return _ops_service.create_session(self.ctx, user_id, session_id, delta, stamp, _now())

    def get(
        self, session_id: str, user_id: str, recent: int | None, after: float | None
    ) -> _ops.Op[SessionRecord | None]:
        """Build ``get_session``."""
        self._ids(user_id, session_id)
        recent = _count(recent, "recent")
        since = None if after is None else _seconds(after, "after")
        return _ops_service.get_session(self.ctx, user_id, session_id, recent, since, _now())

    def append(
        self,
        session_id: str,
        event: Mapping[str, Any],
        user_id: str,
        state_delta: Mapping[str, Any] | None,
        timestamp: float | None,
        expected: int | None,
    ) -> _ops.Op[int]:
        """Build ``append_event``."""
        self._ids(user_id, session_id)
        check_mapping(event, "event")
        if timestamp is None:
            own = event.get("timestamp")
            usable = isinstance(own, (int, float)) and not isinstance(own, bool)
            timestamp = own if usable and math.isfinite(own) else time.time()  # type: ignore[arg-type]
        stamp = _seconds(timestamp, "timestamp")
        expected = _count(expected, "expected_version")
        text = codec.encode(dict(event), root="event")
        delta = (
            _NO_DELTA
            if state_delta is None
            else _ops_service.split_state(state_delta, "state_delta")
        )
        return _ops_service.append_event(
            self.ctx, user_id, session_id, text, delta, stamp, expected, _now()
        )

    def list(
        self, user_id: str | None, limit: int, cursor: str | None, oldest_first: bool
    ) -> _ops.Op[SessionPage[SessionRecord]]:
        """Build ``list_sessions``."""
        if user_id is not None:
            _ops.validate_id(user_id, "user_id", allow_empty=True)
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError(f"cursor must be a str or None, got {cursor!r}")
        return _ops_service.list_sessions(
            self.ctx, user_id, limit, cursor, bool(oldest_first), _now()
        )

    def delete(self, session_id: str, user_id: str) -> _ops.Op[bool]:
        """Build ``delete_session`` (its events go too; scoped state stays)."""
        return self.store.delete(user_id, session_id)

    def scoped(self, user_id: str | None) -> _ops.Op[dict[str, Any]]:
        """Build ``get_app_state`` (``user_id`` None) or ``get_user_state``."""
        if user_id is not None:
            _ops.validate_id(user_id, "user_id", allow_empty=True)
        return _ops_service.get_scoped_state(self.ctx, user_id)
