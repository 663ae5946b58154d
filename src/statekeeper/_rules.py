"""What the SQL stores do before and after I/O: validation, encoding, module plumbing.

``SqlSession`` and ``AsyncSqlSession`` hold a :class:`StoreCore` and only open
connections and drive the operations it builds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import codec
from ._sql.ops import store as _ops
from .errors import SessionNotFoundError

if TYPE_CHECKING:
    from ._records import SessionPage

__all__ = [
    "StoreCore",
    "apply_loaded",
    "check_expected",
    "check_ids",
    "check_mapping",
    "collect_states",
    "encoded_entries",
    "now",
    "ttl_delta",
]

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


def check_ids(user_id: str, session_id: str) -> None:
    """Raise ``ValueError`` unless both ids are usable."""
    _ops.validate_id(user_id, "user_id", allow_empty=True)
    _ops.validate_id(session_id, "session_id", allow_empty=False)


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
        _ops.validate_id(app_name, "app_name", allow_empty=True)
        if schema is not None and (dialect != "postgresql" or not schema.isidentifier()):
            raise ValueError(
                f"schema={schema!r}: a schema needs PostgreSQL and a plain identifier name"
            )
        self.ctx = _ops.Context(dialect, app_name, ttl_delta(ttl))

    def _check_ids(self, user_id: str, session_id: str) -> None:
        check_ids(user_id, session_id)

    def save(self, user_id: str, session_id: str, modules: Mapping[str, Any]) -> _ops.Op[int]:
        """Build ``save_session_state``: collect every ``state_dict()``, encode once, merge."""
        states = collect_states(modules)
        return self.merge(user_id, session_id, states, None)

    def merge(
        self, user_id: str, session_id: str, modules: Mapping[str, Any], expected: int | None
    ) -> _ops.Op[int]:
        """Build ``merge_state``."""
        check_mapping(modules, "modules")
        self._check_ids(user_id, session_id)
        entries = codec.encode_entries(modules)
        return _ops.merge_state(
            self.ctx, user_id, session_id, modules, entries, check_expected(expected), now()
        )

    def set(
        self, user_id: str, session_id: str, state: Mapping[str, Any], expected: int | None
    ) -> _ops.Op[int]:
        """Build ``set_state``."""
        check_mapping(state, "state")
        self._check_ids(user_id, session_id)
        text = codec.encode_modules(state)
        return _ops.set_state(self.ctx, user_id, session_id, text, check_expected(expected), now())

    def get(self, user_id: str, session_id: str) -> _ops.Op[dict[str, Any] | None]:
        """Build ``get_state``."""
        self._check_ids(user_id, session_id)
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
        self._check_ids(user_id, session_id)
        return _ops.session_exists(self.ctx, user_id, session_id, now())

    def delete(self, user_id: str, session_id: str) -> _ops.Op[bool]:
        """Build ``delete_session``."""
        self._check_ids(user_id, session_id)
        return _ops.delete_session(self.ctx, user_id, session_id, now())

    def list(self, user_id: str | None, limit: int, cursor: str | None) -> _ops.Op[SessionPage]:
        """Build ``list_sessions``."""
        if user_id is not None:
            _ops.validate_id(user_id, "user_id", allow_empty=True)
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError(f"cursor must be a str or None, got {cursor!r}")
        return _ops.list_sessions(self.ctx, user_id, limit, cursor, now())

    def purge(self, on_batch: Callable[[int], object] | None = None) -> _ops.Op[int]:
        """Build ``purge_expired``; ``on_batch`` hears the running count after each batch."""
        return _ops.purge_expired(self.ctx, now(), on_batch)
