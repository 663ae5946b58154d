"""``AsyncSessionService``: sessions with an event log and scoped state, from async code."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ._sql.core import ServiceCore
from ._sql.runner import AsyncRunner

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

    import sqlalchemy as sa
    from typing_extensions import Self

    from ._records import EventRecord, SessionPage, SessionRecord

__all__ = ["AsyncSessionService"]


class AsyncSessionService:
    """Keep sessions with an event log and app / user / session state in SQL, from async code.

    The model of Google ADK's session services, framework-neutral: each
    session (the row :class:`~statekeeper.SqlSession` also reads) has a
    log of JSON events and a state; ``app:k`` keys of a state are shared by
    every session of the app, ``user:k`` keys by the sessions of one user,
    ``temp:k`` keys are never stored. Appending an event is one atomic write.

    Args:
        url_or_engine: a database URL (``"sqlite:///sessions.db"``,
            ``"postgresql://user@host/db"``, a ``sqlalchemy.URL``) or an existing
            ``AsyncEngine``, which is used as it is and not disposed by :meth:`close`.
            Async stores and services also take a SQLite ``sqlalchemy.Engine``
            (pysqlite; not one of ``SingletonThreadPool`` or ``StaticPool``) and
            run each call whole in a worker thread, as they do on a SQLite URL.
        app_name: the app whose sessions and app state this service holds.
        ttl: seconds or a ``timedelta``; a session neither read nor written for
            that long expires and reads as absent. ``None``: never.
        schema: PostgreSQL schema holding the tables.
        auto_migrate: upgrade the database to the code's schema on first use,
            instead of raising :class:`~statekeeper.errors.SchemaNotReadyError`.
        engine_options: extra ``create_engine`` arguments (ignored for an AsyncEngine).

    Raises:
        ValueError: a setting is invalid or the database is not supported.
        ImportError: the database driver is missing; the message names the extra.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine | sa.Engine,
        *,
        app_name: str = "",
        ttl: float | dt.timedelta | None = None,
        schema: str | None = None,
        auto_migrate: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._run = AsyncRunner(
            url_or_engine,
            schema=schema,
            auto_migrate=auto_migrate,
            engine_options=engine_options,
            kind="AsyncSessionService",
        )
        self._core = ServiceCore(self._run.dialect, app_name=app_name, ttl=ttl, schema=schema)

    @property
    def engine(self) -> AsyncEngine | sa.Engine:
        """The engine the service's statements run on: see :attr:`AsyncSqlSession.engine`."""
        return self._run.engine

    @property
    def app_name(self) -> str:
        """The app whose sessions this service holds."""
        return self._core.ctx.app_name

    async def create_session(
        self,
        session_id: str | None = None,
        user_id: str = "",
        *,
        state: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
    ) -> SessionRecord:
        """Create a session, its state split by key prefix; return it with its merged state.

        ``app:k`` keys of ``state`` go to the app's state, ``user:k`` keys to
        the user's, ``temp:k`` keys nowhere, the others to the session's own.

        Args:
            session_id: the new session's id; ``None`` generates a UUID4.
            user_id: the user owning the session; may be empty.
            state: the initial state, or ``None`` for an empty one.
            timestamp: the session's update time in seconds since the epoch
                (default: now); the record's ``update_time`` is this float, exactly.

        Returns:
            The session, version ``1``, with no events and its merged state.

        Raises:
            SessionExistsError: a live session has this key; nothing was written.
            StateEncodingError: the state holds a value JSON cannot store exactly.
            ValueError: an id or the timestamp is invalid.
        """
        return await self._run(self._core.create(session_id, user_id, state, timestamp))

    async def get_session(
        self,
        session_id: str,
        user_id: str = "",
        *,
        recent: int | None = None,
        after: float | None = None,
    ) -> SessionRecord | None:
        """Return the session with its merged state and events, or ``None`` if absent.

        Events come oldest first (insertion order). With a ``ttl``, reading
        refreshes the session's expiry.

        Args:
            session_id: the session.
            user_id: the user owning the session.
            recent: only the last ``recent`` events; ``None``: all, ``0``: none.
            after: only events whose timestamp is at or after this one
                (seconds since the epoch); ``None``: no filter. Combined with
                ``recent``: the last ``recent`` of those.

        Returns:
            The session, or ``None`` for a missing or expired one.

        Raises:
            ValueError: an id, ``recent`` or ``after`` is invalid.
        """
        return await self._run(self._core.get(session_id, user_id, recent, after))

    async def append_event(
        self,
        session_id: str,
        event: Mapping[str, Any],
        user_id: str = "",
        *,
        state_delta: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Append an event and apply a state delta in one atomic write; return the new version.

        The delta's keys are routed by prefix as in :meth:`create_session`
        and merged key by key inside the database, so concurrent appends to
        other sessions of the same app or user lose nothing.

        Args:
            session_id: the session.
            event: the event, a JSON-able dict; stored whole and returned equal.
            user_id: the user owning the session.
            state_delta: keys to set, or ``None``.
            timestamp: the event's time in seconds since the epoch; default:
                the event's own ``"timestamp"`` if it is a number, else now.
                It becomes the session's ``update_time``, exactly.
            expected_version: the version the caller last saw; another one
                stored raises :class:`~statekeeper.errors.ConflictError`.

        Returns:
            The session's new version.

        Raises:
            SessionNotFoundError: the session does not exist or has expired;
                nothing was written.
            ConflictError: the session is not at ``expected_version``; nothing
                was written.
            StateEncodingError: the event or delta holds a value JSON cannot
                store exactly; nothing was written.
            ValueError: an id, the timestamp or ``expected_version`` is invalid.
        """
        return await self._run(
            self._core.append(session_id, event, user_id, state_delta, timestamp, expected_version)
        )

    async def append_events(
        self,
        session_id: str,
        events: Sequence[Mapping[str, Any]],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        """Append several events in order, all or none; return the new version.

        The events are one transaction: a failure at any of them (a lost
        connection, a conflict) writes none, and a concurrent append lands
        before or after them, never between. Each event bumps the version,
        as :meth:`append_event` does; the session's ``update_time`` becomes
        the last event's time. One event is :meth:`append_event` without a
        delta.

        Args:
            session_id: the session.
            events: the events, JSON-able dicts, each stored whole and
                returned equal. An event's time is its own ``"timestamp"``
                if it is a number, else the time of the call.
            user_id: the user owning the session.
            expected_version: the version the caller last saw, before the
                first event; another one stored raises
                :class:`~statekeeper.errors.ConflictError`.

        Returns:
            The session's version after the last event.

        Raises:
            SessionNotFoundError: the session does not exist or has expired;
                nothing was written.
            ConflictError: the session is not at ``expected_version``; nothing
                was written.
            StateEncodingError: an event holds a value JSON cannot store
                exactly (``path`` starts with ``events[i]``); nothing was written.
            TypeError: ``events`` is not a list of dicts.
            ValueError: ``events`` is empty, or an id or ``expected_version``
                is invalid.
        """
        return await self._run(
            self._core.append_many(session_id, events, user_id, expected_version)
        )

    async def list_sessions(
        self,
        user_id: str | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> SessionPage[SessionRecord]:
        """Return one page of live sessions with their merged state and no events.

        Args:
            user_id: only this user's sessions; ``None``: every user's.
            limit: at most this many sessions per page.
            cursor: the ``next_cursor`` of the previous page.
            oldest_first: oldest update first instead of newest first.

        Returns:
            The page; its ``next_cursor`` is ``None`` on the last one.

        Raises:
            ValueError: ``user_id``, ``limit`` or ``cursor`` is invalid.
        """
        return await self._run(self._core.list(user_id, limit, cursor, oldest_first))

    async def delete_session(self, session_id: str, user_id: str = "") -> bool:
        """Delete a session and its events; the app's and user's state stay.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            Whether a live session was deleted.

        Raises:
            ValueError: an id is invalid.
        """
        return await self._run(self._core.delete(session_id, user_id))

    async def pop_event(self, session_id: str, user_id: str = "") -> EventRecord | None:
        """Remove the session's newest event and return it, in one atomic write.

        Concurrent pops never return the same event, and an append running
        at the same time is either popped or kept, never lost. The event's
        state delta, if it had one, stays applied. The pop bumps the version.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            The removed event, or ``None`` when the session is missing,
            expired or has no events (nothing was written).

        Raises:
            ValueError: an id is invalid.
        """
        return await self._run(self._core.pop(session_id, user_id))

    async def get_app_state(self) -> dict[str, Any]:
        """Return the app's state: the ``app:`` keys, without the prefix."""
        return await self._run(self._core.scoped(None))

    async def get_user_state(self, user_id: str) -> dict[str, Any]:
        """Return a user's state: their ``user:`` keys, without the prefix.

        Args:
            user_id: the user; may be empty.

        Raises:
            ValueError: the id is invalid.
        """
        return await self._run(self._core.scoped(user_id))

    async def close(self) -> None:
        """Refuse further calls; release the connections (an engine passed in stays open)."""
        await self._run.close()

    async def __aenter__(self) -> Self:
        """Return the service; leaving the block closes it."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the service."""
        await self.close()
