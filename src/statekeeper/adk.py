"""Google ADK session service on statekeeper: ``SqlSessionService``.

``SqlSessionService`` is a ``google.adk.sessions.BaseSessionService`` for
SQLite and PostgreSQL. It maps ADK's pydantic ``Session`` and ``Event`` onto
:class:`statekeeper.AsyncSessionService`, one per ADK ``app_name``, all on
one engine::

    from google.adk.runners import Runner
    from statekeeper.adk import SqlSessionService

    sessions = SqlSessionService("sqlite:///app.db", auto_migrate=True)
    runner = Runner(agent=root_agent, app_name="support", session_service=sessions)

ADK's own tooling (``adk web``, ``adk api_server``, ``get_fast_api_app``)
finds it by URI: importing this module registers the schemes
``statekeeper+sqlite://`` and ``statekeeper+postgresql://`` in ADK's service
registry, so an agents folder's ``services.py`` holding ``import
statekeeper.adk`` is all it takes::

    adk api_server --session_service_uri="statekeeper+sqlite:///app.db?auto_migrate=true" agents/

This is the only statekeeper module that imports ``google.adk``; install it
with ``pip install 'statekeeper[adk]'``.
"""

from __future__ import annotations

import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Final, cast

import sqlalchemy as sa
from google.adk.cli.service_registry import get_service_registry
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import (
    SessionNotFoundError as AdkSessionNotFoundError,
)
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from pydantic import Field
from pydantic_core import SchemaSerializer, to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _adk_uri, codec
from ._sql import engine as _engine
from .errors import ConflictError, SessionExistsError, SessionNotFoundError, StoreClosedError
from .service_async import AsyncSessionService

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping
    from types import TracebackType

    from pydantic_core.core_schema import CoreConfig

    from ._records import SessionRecord
    from ._sql.ops.service import ListedRow

__all__ = ["SessionListPage", "SqlSessionService", "StaleSessionError"]

try:  # newer ADK 2.x exports a dedicated error; older 2.x raised a plain ValueError.
    from google.adk.errors import StaleSessionError
except ImportError:  # pragma: no cover - depends on the installed ADK

    class StaleSessionError(ValueError):  # type: ignore[no-redef]
        """The session object is older than the stored session (ADK < 2.6 has no such class)."""


_STALE_MESSAGE = (
    "session {id!r} of user {user!r} (app {app!r}) was modified in storage since this "
    "Session object was loaded (stored revision {actual}, this object's {expected}); "
    "reload it with get_session() and append the event again"
)
_TEMP_PREFIX = "temp:"
# The revision of a loaded session rides on the Session object in ADK's own
# private slot for it, so copies keep it and `get_session(...) == session` holds.
_MARKER_SLOT = "_storage_update_marker"
_MARKER_PREFIX = "statekeeper:v"
_HAS_MARKER_SLOT = _MARKER_SLOT in getattr(Session, "__private_attributes__", {})
_LIST_PAGE = 1000


class SessionListPage(ListSessionsResponse):
    """One page of :meth:`SqlSessionService.list_sessions`, oldest update first.

    A ``ListSessionsResponse``: callers that know only ADK's contract read
    ``sessions`` and never see more than that.

    Attributes:
        next_page_token: pass it as ``page_token=`` to get the next page;
            ``None`` on the last page (always ``None`` without ``page_size``).
    """

    next_page_token: str | None = Field(default=None)


def _set_version(session: Session, version: int) -> None:
    if _HAS_MARKER_SLOT:
        setattr(session, _MARKER_SLOT, f"{_MARKER_PREFIX}{version}")


def _version_of(session: Session) -> int | None:
    marker = getattr(session, _MARKER_SLOT, None) if _HAS_MARKER_SLOT else None
    if isinstance(marker, str) and marker.startswith(_MARKER_PREFIX):
        digits = marker[len(_MARKER_PREFIX) :]
        if digits.isdigit():
            return int(digits)
    return None


def _to_session(record: SessionRecord, app_name: str, events: list[Event]) -> Session:
    return _new_session(
        app_name,
        record.user_id,
        record.session_id,
        record.version,
        record.update_time,
        record.state,
        events,
    )


def _new_session(
    app_name: str,
    user_id: str,
    session_id: str,
    version: int,
    update_time: float,
    state: dict[str, Any],
    events: list[Event],
) -> Session:
    session = Session(
        id=session_id,
        app_name=app_name,
        user_id=user_id,
        state=state,
        events=events,
        last_update_time=update_time,
    )
    _set_version(session, version)
    return session


def _event(text: str) -> Event:
    """Build an ``Event`` from its stored JSON text, validating the text itself.

    This skips the dict a decode would build first. pydantic's JSON parser
    refuses a few texts Python's reads (a lone surrogate escape such as
    ``"\\ud800"``, which statekeeper stores exactly): those, and a text that
    does not validate, are decoded and validated as a dict, so the event or
    the error is the one ``Event.model_validate`` of the decoded dict gives.
    """
    try:
        return Event.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError included
        return Event.model_validate(codec.decode(text))


class _AppService(AsyncSessionService):
    """One app's ``AsyncSessionService``, plus the adapter's own read of a session.

    :meth:`get_session_texts` hands back the events' stored JSON texts
    instead of decoded dicts, which ADK's ``Event`` would only walk again.
    """

    async def get_session_texts(
        self, session_id: str, user_id: str, *, recent: int | None, after: float | None
    ) -> tuple[SessionRecord, list[str]] | None:
        """``get_session``, the record without events and the events' JSON texts beside it."""
        return await self._run(self._core.get_texts(session_id, user_id, recent, after))

    async def list_session_rows(
        self, user_id: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[ListedRow], str | None]:
        """``list_sessions(oldest_first=True)``: each session as a plain row, the next cursor."""
        return await self._run(self._core.list_rows(user_id, limit, cursor, True))


# pydantic's JSON dump turns NaN and infinities held in Any-typed values (state
# deltas, custom_metadata, function-call args, ...) into None, per the model's
# ser_json_inf_nan, "null" unless set. A session's first state (through
# to_jsonable_python) and the events (by their own schema and settings, see
# _dumper) are converted with NaN and infinities kept as floats instead, so
# they reach the codec, which refuses them and names where they sit.
# Everything else is dumped as event.model_dump(mode="json") dumps it, ADK's
# own serializers (and their fallback for callables) included.
_INF_NAN: Final = "constants"
_DUMPERS: dict[type[Event], SchemaSerializer] = {}


def _dumper(cls: type[Event]) -> SchemaSerializer:
    """Return the serializer of ``cls``'s schema and settings that keeps NaN and infinities.

    pydantic dumps Any-typed values with the outermost model's ``ser_json_*``
    settings (``Event``'s writes bytes there as base64), so those are copied.
    """
    dumper = _DUMPERS.get(cls)
    if dumper is None:
        settings = {
            key: value for key, value in cls.model_config.items() if key.startswith("ser_json_")
        }
        settings |= {"ser_json_inf_nan": _INF_NAN, "title": cls.__name__}
        config = cast("CoreConfig", settings)
        dumper = _DUMPERS[cls] = SchemaSerializer(cls.__pydantic_core_schema__, config)
    return dumper


def _stored_document(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the event as stored (``temp:`` keys left out) and its state delta.

    That is ``event.model_dump(mode="json", exclude_none=True)``, but with NaN
    and infinities kept as floats wherever they are, for the codec to refuse.
    """
    document: dict[str, Any] = _dumper(type(event)).to_python(
        event, mode="json", by_alias=False, exclude_none=True
    )
    actions = document.get("actions")
    delta: dict[str, Any] = {}
    if isinstance(actions, dict) and isinstance(actions.get("state_delta"), dict):
        delta = {
            key: value
            for key, value in actions["state_delta"].items()
            if not key.startswith(_TEMP_PREFIX)
        }
        actions["state_delta"] = delta
    return document, delta


class SqlSessionService(BaseSessionService):
    """Keep Google ADK sessions, events and ``app:``/``user:`` state in SQLite or PostgreSQL.

    A drop-in ``BaseSessionService`` for ``Runner(session_service=...)``.
    Tables come only from statekeeper's migrations (``statekeeper db upgrade``
    or ``auto_migrate=True``); nothing calls ``create_all``. Stale session
    objects are detected by the session's integer revision, never by
    timestamps, and ``app:``/``user:`` deltas are merged in SQL, so
    concurrent appends on other sessions lose nothing.

    Args:
        url_or_engine: a database URL (``"sqlite:///app.db"``,
            ``"sqlite:///:memory:"``, ``"postgresql://user@host/db"``, a
            ``sqlalchemy.URL``) or an existing ``AsyncEngine`` (or SQLite
            ``Engine``), which is used as it is and not disposed by :meth:`close`.
            A URL gets statekeeper's own drivers whatever driver it names:
            psycopg for PostgreSQL; for SQLite, sqlite3, each call run whole in a
            worker thread. Every ``app_name`` runs on the same database;
            ``sqlite:///:memory:`` is one database for the service's life.
        uri: instead of ``url_or_engine``, a session-service URI as ADK's
            service registry passes it (``services.yaml`` entries call
            ``SqlSessionService(uri=...)``): the database URL with an optional
            ``statekeeper+`` in front and the options ``auto_migrate``,
            ``schema`` and ``ttl`` in its query, as in
            ``"statekeeper+postgresql://app@db/app?schema=agents&auto_migrate=true"``.
            Other query options stay on the database URL. An option in the
            URI and the same keyword argument cannot both be given.
        schema: PostgreSQL schema holding the tables.
        ttl: seconds or a ``timedelta``; a session not written or read for that
            long expires and reads as absent. ``None``: never.
        auto_migrate: upgrade the database to statekeeper's schema on first use,
            instead of raising :class:`~statekeeper.errors.SchemaNotReadyError`.
        engine_options: extra ``create_engine`` / ``create_async_engine``
            arguments (ignored for an ``AsyncEngine``).
        agents_dir: the agents folder, which ADK's service registry passes to
            every service it builds; not used (the URL says where sessions go).

    Raises:
        ValueError: a setting is invalid, the database is not supported, or
            both or neither of ``url_or_engine`` and ``uri`` are given.
        ImportError: the database driver is missing; the message names the extra.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine | sa.Engine | None = None,
        *,
        uri: str | None = None,
        schema: str | None = None,
        ttl: float | dt.timedelta | None = None,
        auto_migrate: bool = False,
        engine_options: Mapping[str, Any] | None = None,
        agents_dir: str | None = None,
    ) -> None:
        del agents_dir  # ADK's registry passes it to every service; the URL says where
        if uri is not None:
            if url_or_engine is not None:
                raise ValueError("give SqlSessionService a URL or engine, or uri=, not both")
            url_or_engine, settings = _adk_uri.parse(
                uri, schema=schema, ttl=ttl, auto_migrate=auto_migrate
            )
            schema, ttl = settings["schema"], settings["ttl"]
            auto_migrate = settings["auto_migrate"]
        elif url_or_engine is None:
            raise ValueError(
                'SqlSessionService needs a database: pass a URL ("sqlite:///app.db"), '
                'an AsyncEngine, or uri="statekeeper+sqlite:///app.db"'
            )
        # Each app's AsyncSessionService is made from the URL (statekeeper's
        # stores on one URL share an engine) or runs on the caller's engine.
        # An in-memory database must stay one database: every app's service
        # runs on one engine of the service's own.
        self._target: str | sa.URL | AsyncEngine | sa.Engine = url_or_engine
        self._engine_options = engine_options
        self._release: weakref.finalize[[], SqlSessionService] | None = None
        if isinstance(url_or_engine, (str, sa.URL)) and _engine.is_memory_url(url_or_engine):
            self._target, release = _engine.acquire_sync(url_or_engine, engine_options)
            # A service dropped without close() still gives its engine back.
            self._release = weakref.finalize(self, release)
        self._schema = schema
        self._ttl = ttl
        self._auto_migrate = auto_migrate
        self._services: dict[str, _AppService] = {}
        self._closed = False
        # The first service validates the settings now rather than on first use.
        self._first = self._service("")

    @property
    def engine(self) -> AsyncEngine | sa.Engine:
        """The engine every app's calls run on: an ``AsyncEngine``, or on SQLite
        from a URL a sync ``sqlalchemy.Engine`` whose pool each call uses in one
        worker thread (see :attr:`statekeeper.AsyncSessionService.engine`)."""
        return self._first.engine

    def _service(self, app_name: str) -> _AppService:
        service = self._services.get(app_name)
        if service is None:
            if self._closed:
                raise StoreClosedError(
                    f"this SqlSessionService ({self._first.engine.url!r}) was closed; "
                    "create a new one to keep working"
                )
            options: dict[str, Any] = {
                "app_name": app_name,
                "ttl": self._ttl,
                "schema": self._schema,
                "auto_migrate": self._auto_migrate,
                "engine_options": self._engine_options,
            }
            service = _AppService(self._target, **options)
            self._services[app_name] = service
        return service

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session and return it with its merged state.

        Args:
            app_name: the ADK app the session belongs to.
            user_id: the user it belongs to.
            state: its first state: ``app:`` keys go to the app's state,
                ``user:`` keys to the user's, ``temp:`` keys are dropped, the
                rest is the session's own.
            session_id: its id; ``None`` or ``""``: a new uuid4.

        Returns:
            The new session, its state merged with the app's and user's.

        Raises:
            AlreadyExistsError: ADK's error: the app already has a session with
                this id for this user. Nothing was written.
            statekeeper.errors.StateEncodingError: ``state`` holds a value that
                cannot be stored as exact JSON (NaN, infinities). Nothing was written.
        """
        session_id = session_id or str(uuid.uuid4())
        initial = to_jsonable_python(state, inf_nan_mode=_INF_NAN) if state else None
        try:
            record = await self._service(app_name).create_session(
                session_id, user_id, state=initial, timestamp=time.time()
            )
        except SessionExistsError as exc:
            raise AlreadyExistsError(
                f"Session with id {session_id} already exists (user {user_id!r}, "
                f"app {app_name!r}); get it with get_session() or create it without an id"
            ) from exc
        return _to_session(record, app_name, [])

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """Return a session with its merged state and its events, or ``None``.

        Args:
            app_name: the ADK app the session belongs to.
            user_id: the user it belongs to.
            session_id: its id.
            config: ``num_recent_events`` (``None``: all events, ``0``: none,
                ``n``: the last ``n``) and ``after_timestamp`` (only events at or
                after it; ``None`` or ``0``: no filter). Both combine: the last
                ``n`` of the events at or after the time.

        Returns:
            The session, events in the order they were appended, or ``None``
            when it does not exist or has expired.
        """
        recent = config.num_recent_events if config is not None else None
        after = (config.after_timestamp or None) if config is not None else None
        found = await self._service(app_name).get_session_texts(
            session_id, user_id, recent=recent, after=after
        )
        if found is None:
            return None
        record, texts = found
        return _to_session(record, app_name, [_event(text) for text in texts])

    async def list_sessions(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> SessionListPage:
        """List an app's sessions, oldest update first, with merged state and no events.

        Args:
            app_name: the ADK app.
            user_id: only this user's sessions; ``None``: every user's.
            page_size: a statekeeper extension: at most this many sessions, and
                a ``next_page_token`` for the rest. ``None`` (what ADK passes):
                all of them.
            page_token: the ``next_page_token`` of the previous page.

        Returns:
            A ``ListSessionsResponse`` (a :class:`SessionListPage`).

        Raises:
            ValueError: ``page_size`` is not a positive int or ``page_token`` is
                not one this service returned.
        """
        service = self._service(app_name)
        sessions: list[Session] = []
        cursor = page_token
        while True:
            limit = _LIST_PAGE if page_size is None else page_size
            rows, cursor = await service.list_session_rows(user_id, limit=limit, cursor=cursor)
            sessions.extend(
                _new_session(app_name, owner, session_id, version, update_time, state, [])
                for owner, session_id, version, update_time, state in rows
            )
            if cursor is None or page_size is not None:
                return SessionListPage(sessions=sessions, next_page_token=cursor)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session and its events; never the app's or user's state.

        Deleting a session that does not exist does nothing.

        Args:
            app_name: the ADK app the session belongs to.
            user_id: the user it belongs to.
            session_id: its id.
        """
        await self._service(app_name).delete_session(session_id, user_id)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """Return a user's state in an app, keys without the ``user:`` prefix.

        Args:
            app_name: the ADK app.
            user_id: the user.

        Returns:
            The user's state; ``{}`` when nothing was stored for them.
        """
        return await self._service(app_name).get_user_state(user_id)

    async def get_app_state(self, *, app_name: str) -> dict[str, Any]:
        """Return an app's state, keys without the ``app:`` prefix (a statekeeper extension).

        Args:
            app_name: the ADK app.

        Returns:
            The app's state; ``{}`` when nothing was stored for it.
        """
        return await self._service(app_name).get_app_state()

    async def append_event(self, session: Session, event: Event) -> Event:
        """Store an event and apply it to ``session``.

        Partial (streaming) events are returned as they are and not stored.
        Otherwise the event is stored whole, its state delta is merged into the
        session's, user's and app's state in the same write, and the session's
        update time becomes ``event.timestamp``. Then, as ADK's contract says,
        ``temp:`` keys are removed from ``event.actions.state_delta`` (they stay
        on ``session.state``), and ``session`` gets the delta, the event and
        its new ``last_update_time``.

        Args:
            session: the session as loaded (or created) by this service.
            event: the event to append.

        Returns:
            The event.

        Raises:
            SessionNotFoundError: ADK's error (a ``ValueError``): the session
                does not exist, was deleted or has expired. Nothing was written.
            StaleSessionError: a ``ValueError`` ("modified in storage"):
                another writer appended to the session since this object was
                loaded. Nothing was written; reload the session and retry.
            statekeeper.errors.StateEncodingError: the event holds a value that
                cannot be stored as exact JSON: NaN or an infinity anywhere in it
                (its state delta, ``custom_metadata``, a function call's ``args``
                ...), which pydantic's JSON dump would have turned into ``null``.
                ``path`` names it, as in ``event.actions.state_delta.score``.
                Nothing was written.
        """
        if event.partial:
            return event
        document, delta = _stored_document(event)
        app_name, user_id, session_id = session.app_name, session.user_id, session.id
        service = self._service(app_name)
        expected = _version_of(session)
        if expected is None:
            expected = await self._markerless_version(service, session)
        try:
            version = await service.append_event(
                session_id,
                document,
                user_id,
                state_delta=delta,
                timestamp=event.timestamp,
                expected_version=expected,
            )
        except SessionNotFoundError as exc:
            raise self._not_found(session) from exc
        except ConflictError as exc:
            if not exc.actual:
                raise self._not_found(session) from exc
            raise StaleSessionError(
                _STALE_MESSAGE.format(
                    id=session_id,
                    user=user_id,
                    app=app_name,
                    actual=exc.actual,
                    expected=exc.expected,
                )
            ) from exc
        await super().append_event(session, event)
        session.last_update_time = event.timestamp
        _set_version(session, version)
        return event

    @staticmethod
    def _not_found(session: Session) -> AdkSessionNotFoundError:
        return AdkSessionNotFoundError(
            f"Session {session.id} not found (user {session.user_id!r}, app "
            f"{session.app_name!r}): it was never created, was deleted or expired; "
            "create it with create_session() first"
        )

    async def _markerless_version(self, service: AsyncSessionService, session: Session) -> int:
        """Find the revision of a Session this service did not load (built by hand, say).

        It is current when storage has not moved past its ``last_update_time``,
        or when its events end with the stored last event and count one per
        revision; otherwise it is stale.
        """
        record = await service.get_session(session.id, session.user_id, recent=1)
        if record is None:
            raise self._not_found(session)
        version: int = record.version
        if record.update_time <= session.last_update_time:
            return version
        last_id = record.events[-1].data.get("id") if record.events else None
        mine = session.events[-1].id if session.events else None
        if last_id == mine and version == len(session.events) + 1:
            return version
        raise StaleSessionError(
            _STALE_MESSAGE.format(
                id=session.id,
                user=session.user_id,
                app=session.app_name,
                actual=version,
                expected="unknown",
            )
        )

    async def close(self) -> None:
        """Close the service; dispose of the engine it made (not one it was given)."""
        if self._closed:
            return
        self._closed = True
        for service in self._services.values():
            await service.close()
        if self._release is not None:
            engine = self._release()
            if engine is not None:
                engine.dispose()

    async def __aenter__(self) -> SqlSessionService:
        """Return the service; :meth:`close` it on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the service."""
        await self.close()


def _from_uri(uri: str, **options: Any) -> SqlSessionService:
    """Build the service ADK's registry asks for (``--session_service_uri=statekeeper+...``)."""
    return SqlSessionService(uri=uri, **options)


for _scheme in _adk_uri.SCHEMES:
    get_service_registry().register_session_service(_scheme, _from_uri)
