"""What every store checks, whatever keeps its sessions: ids, ttl, versions, pages, modules.

The SQL, JSON and Redis stores (and the event-log service) share these rules
so that one input gives one answer everywhere: the same ``ValueError`` for a
bad id, limit or cursor, the same :class:`~statekeeper.errors.ConflictError`
for a stale ``expected_version``. Nothing here does I/O or knows a backend.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from . import codec
from .errors import ConflictError, SessionNotFoundError

__all__ = [
    "ID_LENGTH",
    "Listed",
    "apply_loaded",
    "check_cursor",
    "check_cursor_ids",
    "check_expected",
    "check_ids",
    "check_limit",
    "check_mapping",
    "collect_states",
    "conflict",
    "cursor_error",
    "decode_cursor",
    "encode_cursor",
    "encoded_entries",
    "now",
    "read_cursor",
    "ttl_delta",
    "validate_id",
]

ID_LENGTH = 255
"""The longest id (``app_name``, ``user_id``, ``session_id``), in characters."""

logger = logging.getLogger("statekeeper")


def ttl_delta(ttl: float | dt.timedelta | None) -> dt.timedelta | None:
    """Return ``ttl`` as a positive ``timedelta`` (or ``None``), or raise ``ValueError``."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float, dt.timedelta)):
        raise ValueError(f"ttl must be seconds or a timedelta, got {ttl!r}")
    delta = ttl if isinstance(ttl, dt.timedelta) else dt.timedelta(seconds=ttl)
    if delta <= dt.timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return delta


def now() -> dt.datetime:
    """Return the current time, aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def check_expected(value: int | None) -> int | None:
    """Return ``expected_version`` if it is ``None`` or a non-negative int, else raise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"expected_version must be a non-negative int or None, got {value!r}")
    return value


def validate_id(value: object, what: str, *, allow_empty: bool) -> str:
    """Return ``value`` if it is a usable id, else raise ``ValueError`` saying why."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    if len(value) > ID_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; at most {ID_LENGTH} are allowed")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL character, which databases cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} {value!r} contains a lone surrogate; ids must be valid text"
        ) from None
    return value


def check_ids(user_id: str, session_id: str) -> None:
    """Raise ``ValueError`` unless both ids are usable."""
    validate_id(user_id, "user_id", allow_empty=True)
    validate_id(session_id, "session_id", allow_empty=False)


def conflict(expected: int, actual: int, session_id: str) -> ConflictError:
    """The error for a write whose ``expected_version`` is not the stored one (0: absent)."""
    state = f"is at version {actual}" if actual else "does not exist"
    return ConflictError(
        f"session {session_id!r} {state}, not the expected version {expected}; "
        "nothing was written: reload it and retry",
        expected=expected,
        actual=actual,
    )


def check_limit(limit: object) -> int:
    """Return ``limit`` if it is a positive int (a page size), else raise ``ValueError``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    return limit


def check_cursor(cursor: object) -> str | None:
    """Return ``cursor`` if it is ``None`` or a str, else raise ``ValueError``."""
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError(f"cursor must be a str or None, got {cursor!r}")
    return cursor


class Listed(Protocol):
    """What a cursor is made of: a listed session's sort key."""

    @property
    def updated_at(self) -> dt.datetime: ...
    @property
    def user_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...


#: The longest cursor any listing makes (two 255-character ids, every character
#: escaped by ``json.dumps``), with room; a longer one is refused unread.
_CURSOR_MAX_LENGTH = 16384

#: The last field of an oldest-first cursor: newest-first cursors have none.
_OLDEST_FIRST = "oldest"


def cursor_error(cursor: str) -> ValueError:
    """The documented error for a string that is not a cursor of this listing."""
    shown = repr(cursor) if len(cursor) <= 100 else f"{cursor[:100]!r}... ({len(cursor)} chars)"
    return ValueError(
        f"invalid cursor {shown}: not a cursor of this listing; pass the next_cursor "
        "of the previous page of the same list_sessions call"
    )


def read_cursor(cursor: object) -> list[Any]:
    """Return a cursor's JSON list; raise the documented ``ValueError`` if it is none of ours."""
    if not isinstance(cursor, str):
        raise ValueError(f"cursor must be a str or None, got {type(cursor).__name__}")
    if len(cursor) > _CURSOR_MAX_LENGTH:
        raise cursor_error(cursor)
    try:
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise cursor_error(cursor) from None
    if not isinstance(fields, list):
        raise cursor_error(cursor)
    return fields


def check_cursor_ids(cursor: str, owner: object, session_id: object, user_id: str | None) -> None:
    """Raise the cursor error unless the ids are valid and belong to the listed user."""
    try:
        validate_id(owner, "user_id", allow_empty=True)
        validate_id(session_id, "session_id", allow_empty=False)
    except ValueError:
        raise cursor_error(cursor) from None
    if user_id is not None and owner != user_id:
        raise cursor_error(cursor)  # another user's listing


def encode_cursor(info: Listed, *, oldest_first: bool = False) -> str:
    """The cursor of the page after ``info``, for a listing newest first (or oldest first)."""
    fields = [info.updated_at.isoformat(), info.user_id, info.session_id]
    raw = json.dumps([*fields, _OLDEST_FIRST] if oldest_first else fields)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(
    cursor: str, user_id: str | None = None, *, oldest_first: bool = False
) -> tuple[dt.datetime, str, str]:
    """The sort key in a cursor of :func:`encode_cursor` for ``user_id``'s listing, or the error."""
    fields = read_cursor(cursor)
    if len(fields) < 3 or fields[3:] != ([_OLDEST_FIRST] if oldest_first else []):
        raise cursor_error(cursor)  # short, or of the listing in the other order
    stamp, owner, session_id = fields[:3]
    try:
        if not isinstance(stamp, str):
            raise ValueError
        updated = dt.datetime.fromisoformat(stamp)
        if updated.tzinfo is None:
            raise ValueError
        updated = updated.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise cursor_error(cursor) from None
    check_cursor_ids(cursor, owner, session_id, user_id)
    return updated, owner, session_id


def check_mapping(value: object, what: str) -> Mapping[str, Any]:
    """Return ``value`` if it is a mapping, else raise ``TypeError`` naming ``what``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    return value


def encoded_entries(value: object, what: str) -> dict[str, str]:
    """Check that ``value`` is a mapping; encode each top-level entry (``encode_entries``)."""
    return codec.encode_entries(check_mapping(value, what))


def collect_states(modules: Mapping[str, Any]) -> dict[str, Any]:
    """Return each module's ``state_dict()`` by name; raise ``TypeError`` for a non-module."""
    states = {}
    for name, module in modules.items():
        state_dict = getattr(module, "state_dict", None)
        if not callable(state_dict):
            raise TypeError(
                f"module {name!r} ({type(module).__name__}) has no state_dict() method; "
                "pass objects with state_dict() and load_state_dict()"
            )
        states[name] = state_dict()
    return states


def apply_loaded(
    state: dict[str, Any] | None,
    session_id: str,
    user_id: str,
    app_name: str,
    allow_not_exist: bool,
    modules: Mapping[str, Any],
) -> None:
    """Finish ``load_session_state``: hand each module its stored state."""
    if state is None:
        if not allow_not_exist:
            raise SessionNotFoundError(
                f"session {session_id!r} of user {user_id!r} does not exist "
                f"(app {app_name!r}); save it first or pass allow_not_exist=True"
            )
        logger.info(
            "session %r of user %r (app %r) does not exist; skipped loading its state",
            session_id,
            user_id,
            app_name,
        )
        return
    for name, module in modules.items():
        if name in state:
            module.load_state_dict(state[name])
        else:
            logger.warning(
                "session %r of user %r has no state for module %r; it was left as it is",
                session_id,
                user_id,
                name,
            )
