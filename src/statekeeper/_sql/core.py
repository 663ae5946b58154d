"""What the SQL stores and the event-log service do before and after I/O: check, encode.

``SqlSession`` / ``AsyncSqlSession`` hold a :class:`StoreCore`,
``SessionService`` / ``AsyncSessionService`` a :class:`ServiceCore`, each
beside a ``runner.Runner`` / ``AsyncRunner`` (shared engines, first-use
schema check, ``close``): the facades only run the operations a core builds.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import codec
from .._rules import (
    apply_loaded,
    check_cursor,
    check_expected,
    check_ids,
    check_mapping,
    collect_states,
    now,
    ttl_delta,
    validate_id,
)
from .ops import imports as _ops_import
from .ops import service as _ops_service
from .ops import store as _ops

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._records import EventRecord, SessionPage, SessionRecord

__all__ = ["ServiceCore", "StoreCore"]

_NO_DELTA = _ops_service.Delta()
# Aliases: inside ServiceCore, ``list`` is the method.
_Verdicts = list[_ops_import.Verdict]
_Sessions = list[_ops_import.WholeSession]
_Scopes = list[_ops_import.WholeScope]
_ListedRows = tuple[list[_ops_service.ListedRow], str | None]


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


def _event_time(event: Mapping[str, Any], clock: float | None = None) -> float:
    """An event's own ``"timestamp"`` if it is a finite number, else ``clock`` (default: now)."""
    own = event.get("timestamp")
    if isinstance(own, (int, float)) and not isinstance(own, bool) and math.isfinite(own):
        return float(own)
    return time.time() if clock is None else clock


class StoreCore:
    """The I/O-free half of a SQL store: builds the operation for each public method."""

    def __init__(
        self,
        dialect: str,
        *,
        app_name: str,
        ttl: float | dt.timedelta | None,
        schema: str | None,
    ) -> None:
        """Validate the store's settings."""
        validate_id(app_name, "app_name", allow_empty=True)
        if schema is not None and (dialect != "postgresql" or not schema.isidentifier()):
            raise ValueError(
                f"schema={schema!r}: a schema needs PostgreSQL and a plain identifier name"
            )
        self.ctx = _ops.Context(dialect, app_name, ttl_delta(ttl))

    def save(self, user_id: str, session_id: str, modules: Mapping[str, Any]) -> _ops.Op[int]:
        """Build ``save_session_state``: collect every ``state_dict()``, encode once, merge."""
        states = collect_states(modules)
        return self.merge(user_id, session_id, states, None)

    def merge(
        self, user_id: str, session_id: str, modules: Mapping[str, Any], expected: int | None
    ) -> _ops.Op[int]:
        """Build ``merge_state``."""
        check_mapping(modules, "modules")
        check_ids(user_id, session_id)
        entries = codec.encode_entries(modules)
        return _ops.merge_state(
            self.ctx, user_id, session_id, modules, entries, check_expected(expected), now()
        )

    def set(
        self, user_id: str, session_id: str, state: Mapping[str, Any], expected: int | None
    ) -> _ops.Op[int]:
        """Build ``set_state``."""
        check_mapping(state, "state")
        check_ids(user_id, session_id)
        text = codec.encode_modules(state)
        return _ops.set_state(self.ctx, user_id, session_id, text, check_expected(expected), now())

    def get(self, user_id: str, session_id: str) -> _ops.Op[dict[str, Any] | None]:
        """Build ``get_state``."""
        check_ids(user_id, session_id)
        return _ops.get_state(self.ctx, user_id, session_id, now())

    def apply_loaded(
        self,
        state: dict[str, Any] | None,
        session_id: str,
        user_id: str,
        allow_not_exist: bool,
        modules: Mapping[str, Any],
    ) -> None:
        """Finish ``load_session_state``: hand each module its stored state."""
        apply_loaded(state, session_id, user_id, self.ctx.app_name, allow_not_exist, modules)

    def exists(self, user_id: str, session_id: str) -> _ops.Op[bool]:
        """Build ``session_exists``."""
        check_ids(user_id, session_id)
        return _ops.session_exists(self.ctx, user_id, session_id, now())

    def delete(self, user_id: str, session_id: str) -> _ops.Op[bool]:
        """Build ``delete_session``."""
        check_ids(user_id, session_id)
        return _ops.delete_session(self.ctx, user_id, session_id, now())

    def list(self, user_id: str | None, limit: int, cursor: str | None) -> _ops.Op[SessionPage]:
        """Build ``list_sessions``."""
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        return _ops.list_sessions(self.ctx, user_id, limit, check_cursor(cursor), now())

    def purge(self, on_batch: Callable[[int], object] | None = None) -> _ops.Op[int]:
        """Build ``purge_expired``; ``on_batch`` hears the running count after each batch."""
        return _ops.purge_expired(self.ctx, now(), on_batch)


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
        check_ids(user_id, session_id)
        delta = _NO_DELTA if state is None else _ops_service.split_state(state, "state")
        stamp = time.time() if timestamp is None else _seconds(timestamp, "timestamp")
        return _ops_service.create_session(self.ctx, user_id, session_id, delta, stamp, now())

    def get(
        self, session_id: str, user_id: str, recent: int | None, after: float | None
    ) -> _ops.Op[SessionRecord | None]:
        """Build ``get_session``."""
        check_ids(user_id, session_id)
        recent = _count(recent, "recent")
        since = None if after is None else _seconds(after, "after")
        return _ops_service.get_session(self.ctx, user_id, session_id, recent, since, now())

    def get_texts(
        self, session_id: str, user_id: str, recent: int | None, after: float | None
    ) -> _ops.Op[tuple[SessionRecord, list[str]] | None]:
        """Build ``get_session`` handing back the events' stored JSON texts (the ADK adapter's)."""
        check_ids(user_id, session_id)
        recent = _count(recent, "recent")
        since = None if after is None else _seconds(after, "after")
        return _ops_service.get_session_texts(self.ctx, user_id, session_id, recent, since, now())

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
        check_ids(user_id, session_id)
        check_mapping(event, "event")
        stamp = _seconds(_event_time(event) if timestamp is None else timestamp, "timestamp")
        expected = _count(expected, "expected_version")
        text = codec.encode(dict(event), root="event")
        delta = (
            _NO_DELTA
            if state_delta is None
            else _ops_service.split_state(state_delta, "state_delta")
        )
        return _ops_service.append_event(
            self.ctx, user_id, session_id, text, delta, stamp, expected, now()
        )

    def append_many(
        self,
        session_id: str,
        events: Sequence[Mapping[str, Any]],
        user_id: str,
        expected: int | None,
    ) -> _ops.Op[int]:
        """Build ``append_events``."""
        check_ids(user_id, session_id)
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
            raise TypeError(f"events must be a list of dicts, got {type(events).__name__}")
        if not events:
            raise ValueError("events is empty: append_events needs at least one event")
        clock = time.time()
        items = []
        for n, event in enumerate(events):
            check_mapping(event, f"events[{n}]")
            items.append(
                (codec.encode(dict(event), root=f"events[{n}]"), _event_time(event, clock))
            )
        expected = _count(expected, "expected_version")
        return _ops_service.append_events(self.ctx, user_id, session_id, items, expected, now())

    def list(
        self, user_id: str | None, limit: int, cursor: str | None, oldest_first: bool
    ) -> _ops.Op[SessionPage[SessionRecord]]:
        """Build ``list_sessions``."""
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        return _ops_service.list_sessions(
            self.ctx, user_id, limit, check_cursor(cursor), bool(oldest_first), now()
        )

    def list_rows(
        self, user_id: str | None, limit: int, cursor: str | None, oldest_first: bool
    ) -> _ops.Op[_ListedRows]:
        """Build ``list_sessions`` handing back plain rows (the ADK adapter's)."""
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        return _ops_service.list_session_rows(
            self.ctx, user_id, limit, check_cursor(cursor), bool(oldest_first), now()
        )

    def delete(self, session_id: str, user_id: str) -> _ops.Op[bool]:
        """Build ``delete_session`` (its events go too; scoped state stays)."""
        return self.store.delete(user_id, session_id)

    def pop(self, session_id: str, user_id: str) -> _ops.Op[EventRecord | None]:
        """Build ``pop_event``."""
        check_ids(user_id, session_id)
        return _ops_service.pop_event(self.ctx, user_id, session_id, time.time(), now())

    def scoped(self, user_id: str | None) -> _ops.Op[dict[str, Any]]:
        """Build ``get_app_state`` (``user_id`` None) or ``get_user_state``."""
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        return _ops_service.get_scoped_state(self.ctx, user_id)

    # ----------------------------------------------------------------------- imports
    # What ``statekeeper import`` writes with: no public method, no async twin.

    def whole_session(
        self,
        session_id: str,
        user_id: str,
        state: Mapping[str, Any],
        events: Sequence[tuple[float, Mapping[str, Any]]],
        times: tuple[dt.datetime, dt.datetime, float],
    ) -> _ops_import.WholeSession:
        """Check and encode a session to import: its own state (keys as stored) and events.

        ``times`` are the created and updated datetimes and the float update
        time. Raises ``ValueError`` for a bad id or time, ``StateEncodingError``
        naming the path (``events[3].content``) for a value JSON cannot hold.
        """
        check_ids(user_id, session_id)
        own = dict(check_mapping(state, "state"))
        encoded = []
        for i, (timestamp, event) in enumerate(events):
            stamp = _seconds(timestamp, f"the timestamp of events[{i}]")
            document = dict(event)
            encoded.append((stamp, document, codec.encode(document, root=f"events[{i}]")))
        created, updated, update_time = times
        return _ops_import.WholeSession(
            user_id=user_id,
            session_id=session_id,
            state=own,
            state_text=codec.join_entries(codec.encode_entries(own)),
            events=tuple(encoded),
            created_at=created,
            updated_at=updated,
            update_time=_seconds(update_time, "update_time"),
        )

    def import_sessions(
        self, batch: _Sessions, overwrite: bool, dry_run: bool
    ) -> _ops.Op[_Verdicts]:
        """Build the import of a batch of whole sessions (one transaction)."""
        return _ops_import.import_sessions(self.ctx, batch, overwrite, dry_run, now())

    def whole_scope(self, user_id: str | None, state: Mapping[str, Any]) -> _ops_import.WholeScope:
        """Check and encode the app's (``user_id`` None) or a user's state to import, unprefixed."""
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        prefix = _ops_service.APP_PREFIX if user_id is None else _ops_service.USER_PREFIX
        return _ops_import.WholeScope(
            user_id, dict(state), _ops_service.encode_scoped(state, prefix)
        )

    def import_scopes(self, batch: _Scopes, overwrite: bool, dry_run: bool) -> _ops.Op[_Verdicts]:
        """Build the import of a batch of whole scoped states (one transaction)."""
        return _ops_import.import_scopes(self.ctx, batch, overwrite, dry_run)
