"""OpenAI Agents SDK session on statekeeper: ``StatekeeperSession``.

``StatekeeperSession`` implements the Agents SDK's ``Session`` protocol
(``get_items``, ``add_items``, ``pop_item``, ``clear_session``) on
statekeeper's event log, on SQLite or PostgreSQL: one statekeeper session per
SDK session, its items as the events of that session, in order::

    from agents import Agent, Runner
    from statekeeper.openai_agents import StatekeeperSession

    session = StatekeeperSession("conversation-1", "sqlite:///app.db", user_id="alice")
    result = await Runner.run(agent, "Hello", session=session)

The SDK has no users: ``user_id`` (default ``""``) and ``app_name`` are the
caller's to choose, and together with ``session_id`` they are the key, so one
user never reads another's conversation. The tables are statekeeper's own,
created by its migrations (``statekeeper db upgrade``, or ``auto_migrate=True``).

This is the only statekeeper module that imports ``agents``; install it with
``pip install 'statekeeper[openai-agents]'``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

from agents.memory.session import SessionABC
from sqlalchemy.ext.asyncio import AsyncEngine

from ._rules import check_ids
from .errors import SessionExistsError, SessionNotFoundError, StateEncodingError
from .service_async import AsyncSessionService

try:  # openai-agents >= 0.4 carries per-session settings (a default ``limit``).
    from agents.memory.session_settings import SessionSettings
except ImportError:  # pragma: no cover - depends on the installed SDK
    SessionSettings = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping
    from types import TracebackType

    import sqlalchemy as sa
    from agents.items import TResponseInputItem
    from typing_extensions import Self

    from ._records import SessionPage, SessionRecord

__all__ = ["StatekeeperSession"]


def _item_document(item: Any) -> dict[str, Any]:
    """An item as the event stored: a dict as given, a pydantic model dumped as the SDK does."""
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        return cast("dict[str, Any]", dump(exclude_unset=True))
    raise TypeError(f"a session item must be a dict or a pydantic model, not {type(item).__name__}")


def _as_items(exc: StateEncodingError) -> StateEncodingError:
    """``exc`` naming the item as the caller knows it: ``items[i]`` for ``events[i]``."""
    head = exc.path.partition("]")[0] + "]"  # "events[i]", where append_events names it
    if not head.startswith("events["):
        return exc
    item = "items" + head[len("events") :]
    return StateEncodingError(str(exc).replace(head, item), path=item + exc.path[len(head) :])


class StatekeeperSession(SessionABC):
    """An OpenAI Agents SDK session kept in statekeeper's event log (SQLite, PostgreSQL).

    Each item is one event of the statekeeper session ``(app_name, user_id,
    session_id)``, stored as the JSON document it is and returned equal. The
    statekeeper session is created by the first :meth:`add_items`, so a
    conversation nobody wrote to does not exist (and is not listed). The
    conversations are ordinary statekeeper sessions: ``statekeeper sessions
    ls`` / ``show`` and :meth:`AsyncSessionService.list_sessions` show them.

    Args:
        session_id: the conversation's id (1 to 255 characters).
        url_or_engine: a database URL (``"sqlite:///app.db"``,
            ``"postgresql://user@host/db"``, a ``sqlalchemy.URL``), an existing
            ``AsyncEngine`` or SQLite ``Engine`` (used as it is, never disposed
            here), or an
            :class:`~statekeeper.AsyncSessionService` to share between many
            sessions (then ``app_name``, ``ttl``, ``schema``, ``auto_migrate``
            and ``engine_options`` are the service's own and must not be given).
        user_id: the user owning the conversation; may be empty.
        app_name: the app whose conversations these are.
        ttl: seconds or a ``timedelta``; a conversation neither read nor
            written for that long expires and reads as empty. ``None``: never.
        schema: PostgreSQL schema holding the tables.
        auto_migrate: upgrade the database to the code's schema on first use,
            instead of raising :class:`~statekeeper.errors.SchemaNotReadyError`.
        engine_options: extra ``create_engine`` arguments (ignored for an AsyncEngine).
        session_settings: the SDK's ``SessionSettings`` (or a dict of them): its
            ``limit`` is the default of :meth:`get_items`.

    Raises:
        ValueError: an id or a setting is invalid.
        TypeError: settings were given beside a service.
    """

    def __init__(
        self,
        session_id: str,
        url_or_engine: str | sa.URL | AsyncEngine | sa.Engine | AsyncSessionService,
        *,
        user_id: str = "",
        app_name: str | None = None,
        ttl: float | dt.timedelta | None = None,
        schema: str | None = None,
        auto_migrate: bool = False,
        engine_options: Mapping[str, Any] | None = None,
        session_settings: Any = None,
    ) -> None:
        check_ids(user_id, session_id)
        self.session_id = session_id
        self.user_id = user_id
        if isinstance(url_or_engine, AsyncSessionService):
            given = [
                name
                for name, value in (
                    ("app_name", app_name),
                    ("ttl", ttl),
                    ("schema", schema),
                    ("engine_options", engine_options),
                )
                if value is not None
            ] + (["auto_migrate"] if auto_migrate else [])
            if given:
                raise TypeError(
                    f"{', '.join(given)} cannot be given with a service: they are the "
                    "service's own settings; set them on the AsyncSessionService"
                )
            self._service, self._owned = url_or_engine, False
        else:
            self._service = AsyncSessionService(
                url_or_engine,
                app_name=app_name or "",
                ttl=ttl,
                schema=schema,
                auto_migrate=auto_migrate,
                engine_options=engine_options,
            )
            self._owned = True
        if SessionSettings is not None:
            self.session_settings = (
                SessionSettings()
                if session_settings is None
                else _coerce_settings(session_settings)
            )
        self._created = False

    @property
    def service(self) -> AsyncSessionService:
        """The statekeeper service the items are kept in."""
        return self._service

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """Return the conversation's newest ``limit`` items, oldest first.

        The read is served by the event log's index: its cost depends on
        ``limit``, not on the length of the conversation.

        Args:
            limit: how many of the newest items; ``None``: the session
                settings' ``limit``, else all; ``0``: none; a negative number: all
                (as the SDK's ``SQLiteSession``).

        Returns:
            The items, each equal to the one added.
        """
        settings = getattr(self, "session_settings", None)
        if limit is None and settings is not None:
            limit = settings.limit
        recent = None if limit is None or limit < 0 else limit
        record = await self._service.get_session(self.session_id, self.user_id, recent=recent)
        if record is None:
            return []
        return [cast("TResponseInputItem", event.data) for event in record.events]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append items to the conversation, in order; the first add creates the session.

        The items are one atomic append: a failure at any of them writes
        none, and the items of a concurrent caller land before or after
        them, never between. An empty list writes nothing.

        Args:
            items: the items, dicts or the SDK's pydantic models (stored as
                ``model_dump(exclude_unset=True)``, as the SDK dumps them).

        Raises:
            StateEncodingError: an item holds a value JSON cannot store exactly
                (NaN, a non-JSON object; ``path`` starts with ``items[i]``); no
                item of the list was written.
        """
        documents = [_item_document(item) for item in items]
        if not documents:
            return
        try:
            await self._append(documents)
        except StateEncodingError as exc:  # refused before anything was sent
            raise _as_items(exc) from exc.__cause__

    async def _append(self, documents: list[dict[str, Any]]) -> None:
        """Append the items, creating the session first if it does not exist."""
        service, session_id, user_id = self._service, self.session_id, self.user_id
        if self._created:
            try:
                await service.append_events(session_id, documents, user_id)
                return
            except SessionNotFoundError:  # cleared, deleted or expired since
                self._created = False
        try:
            await service.append_events(session_id, documents, user_id)
        except SessionNotFoundError:
            # Another writer may create it first: then append to theirs.
            with contextlib.suppress(SessionExistsError):
                await service.create_session(session_id, user_id)
            await service.append_events(session_id, documents, user_id)
        self._created = True

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it, in one atomic write.

        Two concurrent pops never return the same item.

        Returns:
            The newest item, or ``None`` when the conversation is empty.
        """
        event = await self._service.pop_event(self.session_id, self.user_id)
        return None if event is None else cast("TResponseInputItem", event.data)

    async def clear_session(self) -> None:
        """Remove every item: the statekeeper session and its events are deleted."""
        await self._service.delete_session(self.session_id, self.user_id)
        self._created = False

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage[SessionRecord]:
        """Return one page of this user's conversations in this app, newest update first.

        Args:
            limit: at most this many per page.
            cursor: the ``next_cursor`` of the previous page.

        Returns:
            The page (records without their events); ``next_cursor`` is
            ``None`` on the last one. A record's ``session_id`` opens it:
            ``StatekeeperSession(record.session_id, service, user_id=...)``.

        Raises:
            ValueError: ``limit`` or ``cursor`` is invalid.
        """
        return await self._service.list_sessions(self.user_id, limit=limit, cursor=cursor)

    async def close(self) -> None:
        """Release the connections of a service this session made (a given one stays open)."""
        if self._owned:
            await self._service.close()

    async def __aenter__(self) -> Self:
        """Return the session; leaving the block closes it."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.close()


def _coerce_settings(settings: Any) -> Any:
    """The SDK's ``SessionSettings`` from one or from a dict of its fields."""
    if isinstance(settings, dict):
        return SessionSettings(**settings)
    return settings
