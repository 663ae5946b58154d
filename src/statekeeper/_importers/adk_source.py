"""Read the tables of Google ADK's ``DatabaseSessionService`` for ``statekeeper import``.

The layout read is the one ADK calls schema version 1 (ADK 1.22 and later,
every 2.x release): ``sessions``, ``events`` holding each whole event as JSON
in ``event_data``, ``app_states``, ``user_states`` and
``adk_internal_metadata``. The older layout (version 0, ADK 1.19 to 1.21: one
column per event field, pickled actions) is refused with the command that
migrates it. The tables are read with SQLAlchemy Core (``google.adk`` is not
imported), a page of sessions and their events per pair of queries, on a
read-only connection; a SQLite file is never created.

Each session is read as ADK's own ``get_session`` reads it: events ordered by
the ``timestamp`` column, ties by event id; each event the stored document
with ``id``, ``invocation_id`` and ``timestamp`` laid over it (the float in the
document, else the column's); the session's own state (session-scoped keys,
as ADK stores them) and times. A row that cannot be read is an
:class:`Unreadable` naming it, and the rest goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .._sql import engine as _engine
from .._sql.driver import connect, run
from .._sql.engine import safe_url
from .._sql.ops.store import Call, Op
from ..errors import DatabaseUnavailableError

__all__ = [
    "PAGE",
    "AdkDatabase",
    "AdkScope",
    "AdkSession",
    "Unreadable",
    "scope_name",
    "session_name",
]

PAGE = 100
"""Sessions read per query (their events take one more)."""

_USER_PAGE = 1000

_utc = dt.timezone.utc


def _table(name: str, *columns: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns))


# The columns read, of the tables ADK's DatabaseSessionService (schema v1) creates.
_SESSIONS = _table("sessions", "app_name", "user_id", "id", "state", "create_time", "update_time")
_EVENTS = _table(
    "events", "id", "app_name", "user_id", "session_id", "invocation_id", "timestamp", "event_data"
)
_APP_STATES = _table("app_states", "app_name", "state")
_USER_STATES = _table("user_states", "app_name", "user_id", "state")
_METADATA = _table("adk_internal_metadata", "key", "value")
_TABLES = (_SESSIONS, _EVENTS, _APP_STATES, _USER_STATES)


def session_name(app_name: str, user_id: str, session_id: str) -> str:
    """How messages name an ADK session."""
    return f"app {app_name!r}, user {user_id!r}, session {session_id!r}"


def scope_name(app_name: str, user_id: str | None) -> str:
    """How messages name an app's state (``user_id`` None) or a user's."""
    if user_id is None:
        return f"app state of app {app_name!r}"
    return f"user state of app {app_name!r}, user {user_id!r}"


@dataclass(frozen=True, slots=True)
class AdkSession:
    """One ADK session, read whole: its own state, its events as ADK returns them, its times."""

    app_name: str
    user_id: str
    session_id: str
    state: dict[str, Any]
    events: list[tuple[float, dict[str, Any]]]
    times: tuple[dt.datetime, dt.datetime, float]  # created, updated, update time (float)

    @property
    def source(self) -> str:
        """The session's name in messages."""
        return session_name(self.app_name, self.user_id, self.session_id)


@dataclass(frozen=True, slots=True)
class AdkScope:
    """The state of an ADK app (``user_id`` None) or of one user of an app, keys unprefixed."""

    app_name: str
    user_id: str | None
    state: dict[str, Any]

    @property
    def source(self) -> str:
        """The state's name in messages."""
        return scope_name(self.app_name, self.user_id)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A row of the source that cannot be imported, and why."""

    source: str
    reason: str


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", type(None): "null"}.get(type(value), "value")


def _object(text: object, what: str) -> dict[str, Any]:
    """Decode a JSON column read as text; it must hold an object."""
    if text is None:
        raise ValueError(f"{what} is NULL")
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to decode") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a JSON {_kind(value)}, not an object")
    return value


def _when(value: object, what: str) -> dt.datetime:
    """An aware UTC datetime from a timestamp column (ADK writes naive UTC)."""
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, str):  # SQLite's text
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} {value!r} is not a date and time") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, _utc)
    else:
        raise ValueError(f"{what} {value!r} is not a date and time")
    return stamp.replace(tzinfo=_utc) if stamp.tzinfo is None else stamp.astimezone(_utc)


def _event(row: Any) -> tuple[float, dict[str, Any]]:
    """The ``(timestamp, document)`` of an ``events`` row, as ADK's read builds the Event."""
    event_id, invocation_id, column_time, text = row
    try:
        document = _object(text, "its event_data")
        document["id"], document["invocation_id"] = event_id, invocation_id
        timestamp = document.get("timestamp")
        if timestamp is None:
            timestamp = document["timestamp"] = _when(column_time, "its timestamp").timestamp()
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
            raise ValueError(f"its timestamp {timestamp!r} is not a number")
    except ValueError as exc:
        raise ValueError(f"event {event_id!r}: {exc}") from None
    return float(timestamp), document


def _engine_for(url: str) -> sa.Engine:
    """A read-only engine on the source (a SQLite file is opened read-only, never created)."""
    parsed = _engine.normalize_url(url, is_async=False)  # ADK's async drivers mapped
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, execution_options={"postgresql_readonly": True})
    name = parsed.database
    if not name or name == ":memory:":
        raise ValueError(
            f"{safe_url(url)} is an in-memory database, which holds no ADK sessions to "
            "import: pass the URL of the database file the DatabaseSessionService used"
        )
    path = Path(name)
    if not path.is_file():  # unreachable, as the CLI's exit status 4 says: never created here
        raise DatabaseUnavailableError(
            f"could not reach the database {safe_url(url)}: the SQLite file "
            f"{path.resolve()} does not exist (check the path)"
        )
    uri = path.resolve().as_uri() + "?mode=ro"
    return sa.create_engine(
        "sqlite+pysqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=sa.NullPool
    )


def _rows(query: sa.Executable) -> Op[list[Any]]:
    """Read every row of ``query``."""
    return list((yield Call(query, {})).all())


def _page_with_events(query: sa.Select[Any]) -> Op[tuple[list[Any], list[Any]]]:
    """Read a page of sessions, then (on the same connection) the events of its key range."""
    rows = list((yield Call(query, {})).all())
    if not rows:
        return rows, []
    e = _EVENTS.c
    key = sa.tuple_(e.app_name, e.user_id, e.session_id)
    events = (
        sa.select(
            e.app_name,
            e.user_id,
            e.session_id,
            e.id,
            e.invocation_id,
            e.timestamp,
            sa.cast(e.event_data, sa.Text),
        )
        .where(key >= sa.tuple_(*rows[0][:3]), key <= sa.tuple_(*rows[-1][:3]))
        .order_by(e.app_name, e.user_id, e.session_id, e.timestamp, e.id)
    )
    return rows, list((yield Call(events, {})).all())


class AdkDatabase:
    """A Google ADK ``DatabaseSessionService`` database (schema v1), read-only.

    Args:
        url: its SQLAlchemy URL; ADK's async drivers (``sqlite+aiosqlite``,
            ``postgresql+asyncpg``) are read with statekeeper's sync ones.

    Raises:
        ValueError: not SQLite or PostgreSQL, no ADK tables, or ADK's older
            layout.
        ImportError: the driver is missing; the message names the extra.
        DatabaseUnavailableError: the database cannot be reached, or the
            SQLite file does not exist.
    """

    def __init__(self, url: str) -> None:
        self.url = safe_url(url)
        self.engine = _engine_for(url)
        try:
            with connect(self.engine) as conn:
                self._check_layout(conn)
        except BaseException:
            self.engine.dispose()
            raise

    def _check_layout(self, conn: sa.Connection) -> None:
        inspector = sa.inspect(conn)
        tables = set(inspector.get_table_names())
        missing = [t.name for t in _TABLES if t.name not in tables]
        if missing:
            raise ValueError(
                f"{self.url} holds no ADK DatabaseSessionService tables (no "
                f"{', '.join(missing)}): pass the db_url the DatabaseSessionService was "
                "created with"
            )
        version = None
        if _METADATA.name in tables:
            query = sa.select(_METADATA.c.value).where(_METADATA.c.key == "schema_version")
            found = run(self.engine, _rows(query))
            version = found[0][0] if found else None
        columns = {c["name"] for c in inspector.get_columns(_EVENTS.name)}
        if (version is not None and version != "1") or "event_data" not in columns:
            raise ValueError(
                f"{self.url} keeps ADK's sessions in the layout of schema version "
                f"{version or '0'} (ADK before 1.22), which this import does not read: "
                "migrate it with ADK's `adk migrate session` command, then import again"
            )
        for table in _TABLES:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            lacking = [c.name for c in table.columns if c.name not in have]
            if lacking:
                raise ValueError(
                    f"{self.url}: ADK's table {table.name} has no column {', '.join(lacking)}; "
                    "this import reads ADK's schema version 1 (ADK 1.22 and later)"
                )

    def apps(self) -> list[str]:
        """The apps of the source's sessions and app states, sorted."""
        s, a = _SESSIONS.c, _APP_STATES.c
        query = sa.union(sa.select(s.app_name), sa.select(a.app_name))
        return sorted(str(name) for (name,) in run(self.engine, _rows(query)))

    def count_sessions(self, app: str | None) -> int:
        """How many sessions the source holds (of ``app``, or of every app)."""
        query = sa.select(sa.func.count()).select_from(_SESSIONS)
        if app is not None:
            query = query.where(_SESSIONS.c.app_name == app)
        return int(run(self.engine, _rows(query))[0][0])

    def scopes(self, app: str | None) -> Iterator[AdkScope | Unreadable]:
        """Yield each app's and user's state that is not empty (of ``app``, or every app's)."""
        a, u = _APP_STATES.c, _USER_STATES.c
        query = sa.select(a.app_name, sa.cast(a.state, sa.Text)).order_by(a.app_name)
        if app is not None:
            query = query.where(a.app_name == app)
        for name, text in run(self.engine, _rows(query)):
            yield self._scope(name, None, text)
        after: tuple[str, str] | None = None
        while True:
            query = sa.select(u.app_name, u.user_id, sa.cast(u.state, sa.Text))
            if app is not None:
                query = query.where(u.app_name == app)
            if after is not None:
                query = query.where(sa.tuple_(u.app_name, u.user_id) > sa.tuple_(*after))
            query = query.order_by(u.app_name, u.user_id).limit(_USER_PAGE)
            rows = run(self.engine, _rows(query))
            for name, user, text in rows:
                yield self._scope(name, user, text)
            if len(rows) < _USER_PAGE:
                return
            after = (rows[-1][0], rows[-1][1])

    @staticmethod
    def _scope(app: str, user: str | None, text: object) -> AdkScope | Unreadable:
        name = scope_name(app, user)
        try:
            return AdkScope(app, user, _object(text, "the state"))
        except ValueError as exc:
            return Unreadable(name, str(exc))

    def sessions(self, app: str | None) -> Iterator[AdkSession | Unreadable]:
        """Yield every session with its events (of ``app``, or every app's), by key.

        A page of sessions is one query, their events one more: the range of
        keys from the page's first to its last, in the order ADK's read uses.
        """
        s = _SESSIONS.c
        after: tuple[str, str, str] | None = None
        while True:
            query = sa.select(
                s.app_name, s.user_id, s.id, sa.cast(s.state, sa.Text), s.create_time, s.update_time
            )
            if app is not None:
                query = query.where(s.app_name == app)
            if after is not None:
                query = query.where(sa.tuple_(s.app_name, s.user_id, s.id) > sa.tuple_(*after))
            query = query.order_by(s.app_name, s.user_id, s.id).limit(PAGE)
            rows, logged = run(self.engine, _page_with_events(query))
            if not rows:
                return
            grouped: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
            for row in logged:
                grouped[row[0], row[1], row[2]].append(row[3:])
            for row in rows:
                yield self._session(row, grouped.get((row[0], row[1], row[2]), []))
            if len(rows) < PAGE:
                return
            after = (rows[-1][0], rows[-1][1], rows[-1][2])

    @staticmethod
    def _session(row: Any, event_rows: list[Any]) -> AdkSession | Unreadable:
        app, user, session, text, created, updated = row
        try:
            state = _object(text, "its state")
            created_at = _when(created, "its create_time")
            updated_at = _when(updated, "its update_time")
            events = [_event(r) for r in event_rows]
        except ValueError as exc:
            return Unreadable(session_name(app, user, session), str(exc))
        times = (created_at, updated_at, updated_at.timestamp())
        return AdkSession(app, user, session, state, events, times)

    def close(self) -> None:
        """Release the source's connections."""
        self.engine.dispose()
