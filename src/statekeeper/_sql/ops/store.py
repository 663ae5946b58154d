"""The store's operations, written once and free of I/O.

Each operation is a generator: it yields a :class:`Call` (a SQLAlchemy Core
statement prebuilt in ``statements.store``, and its parameters), or :data:`BEGIN` /
:data:`COMMIT`, and is sent back the buffered result. ``driver.run`` and
``driver.arun`` drive the same generator on a sync or an async connection,
so the choice of SQL and the semantics live here alone.

Connections run in autocommit: a single statement is its own transaction, with
no BEGIN/COMMIT round trips. Every write is one statement; only a merge the
one-statement form cannot express reads before it writes, inside a
transaction that locks the row (``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from ... import codec
from ..._records import SessionInfo, SessionPage
from ..._rules import check_limit, conflict, decode_cursor, encode_cursor
from ..statements.store import (
    PURGE_BATCH,
    Statements,
    merge_statements,
    one_statement_merge,
    statements,
)

__all__ = [
    "BEGIN",
    "COMMIT",
    "JSON_REFUSED",
    "Call",
    "Context",
    "Op",
    "current_version",
    "delete_session",
    "get_state",
    "list_sessions",
    "merge_state",
    "page_params",
    "purge_expired",
    "schema_revision",
    "session_exists",
    "set_state",
    "sqlstate",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One statement to execute, with its parameters (a list of them: one ``executemany``)."""

    statement: sa.Executable
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]]


BEGIN: Final = "BEGIN"
"""Yielded to open a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
COMMIT: Final = "COMMIT"
"""Yielded to commit the transaction opened with :data:`BEGIN`."""

Step = Call | str
Op = Generator[Step, Any, T]


@dataclass(frozen=True, slots=True)
class Context:
    """What every operation needs to know about the store that runs it."""

    dialect: str
    app_name: str
    ttl: dt.timedelta | None

    @property
    def sql(self) -> Statements:
        """The prebuilt statements for this dialect."""
        return statements(self.dialect)

    def expires(self, now: dt.datetime) -> dt.datetime | None:
        """When a session saved or loaded ``now`` expires."""
        return None if self.ttl is None else now + self.ttl


# --------------------------------------------------------------------------- operations

#: SQLSTATEs of PostgreSQL's JSON functions refusing ``\\u0000`` (22P05) or a lone
#: surrogate (22P02) in a stored state; that merge takes the locked path.
JSON_REFUSED = frozenset({"22P05", "22P02"})


def sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    """Return the SQLSTATE of a database error, whichever PostgreSQL driver raised it."""
    orig: Any = exc.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        # psycopg 3 and asyncpg say sqlstate, psycopg2 says pgcode.
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _params(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> dict[str, Any]:
    return {"p_app": ctx.app_name, "p_user": user_id, "p_session": session_id, "p_now": now}


def current_version(ctx: Context, params: Mapping[str, Any]) -> Op[int]:
    """Return the version of the live session the key in ``params`` names (0: none)."""
    row = (yield Call(ctx.sql.version, params)).first()
    return 0 if row is None else int(row[0])


def get_state(
    ctx: Context, user_id: str, session_id: str, now: dt.datetime
) -> Op[dict[str, Any] | None]:
    """Return the decoded state, or ``None``; with a ``ttl``, a load also refreshes it."""
    params = _params(ctx, user_id, session_id, now)
    if ctx.ttl is None:
        row = (yield Call(ctx.sql.select, params)).first()
    else:
        params["p_expires"] = ctx.expires(now)
        row = (yield Call(ctx.sql.touch, params)).first()
    if row is None:
        return None
    state: dict[str, Any] = codec.decode(row[0])  # stored states are always JSON objects
    return state


def session_exists(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> Op[bool]:
    """Return whether a live session exists (without refreshing its ``ttl``)."""
    row = (yield Call(ctx.sql.exists, _params(ctx, user_id, session_id, now))).first()
    return row is not None


def delete_session(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> Op[bool]:
    """Delete the session and its events; return whether a live one was there."""
    sql, params = ctx.sql, _params(ctx, user_id, session_id, now)
    if sql.delete_events is None:  # one statement deletes both
        row = (yield Call(sql.delete, params)).first()
    else:
        yield BEGIN
        yield Call(sql.delete_events, params)
        row = (yield Call(sql.delete, params)).first()
        yield COMMIT
    return row is not None and (row[0] is None or row[0] > now)


def purge_expired(
    ctx: Context,
    now: dt.datetime,
    on_batch: Callable[[int], object] | None = None,
    batch: int = PURGE_BATCH,
) -> Op[int]:
    """Delete this app's sessions expired at ``now`` and their events; return how many sessions.

    Sessions go ``batch`` per statement, each its own short transaction
    (autocommit), so the purge of a large backlog holds no lock for long;
    then one statement deletes the events left without a session. ``on_batch``
    is called with the running total after each batch (progress reporting).
    """
    params = {"p_app": ctx.app_name, "p_now": now, "p_batch": batch}
    total, statement = 0, ctx.sql.purge
    while True:
        try:
            deleted = int((yield Call(statement, params)).rowcount)
        except sa.exc.DBAPIError as exc:
            # Citus refuses a row address (ctid) in a multi-shard DELETE
            # (feature_not_supported): pick the batches by primary key instead.
            fallback = ctx.sql.purge_by_key
            if fallback is None or statement is fallback or sqlstate(exc) != "0A000":
                raise
            statement = fallback
            continue
        total += max(deleted, 0)
        if on_batch is not None:
            on_batch(total)
        if deleted < batch:
            break
    if total:
        yield Call(ctx.sql.purge_events, {"p_app": ctx.app_name})
    return total


def set_state(
    ctx: Context,
    user_id: str,
    session_id: str,
    text: str,
    expected: int | None,
    now: dt.datetime,
) -> Op[int]:
    """Replace the whole state with the encoded ``text``; return the new version."""
    params = _params(ctx, user_id, session_id, now)
    params["p_state"] = text
    params["p_expires"] = ctx.expires(now)
    if expected is None:
        statement = ctx.sql.replace
    elif expected == 0:
        statement = ctx.sql.create
    else:
        params["p_expected"] = expected
        statement = ctx.sql.update_cas
    row = (yield Call(statement, params)).first()
    if row is None:
        assert expected is not None
        raise conflict(expected, (yield from current_version(ctx, params)), session_id)
    return int(row[0])


def merge_state(
    ctx: Context,
    user_id: str,
    session_id: str,
    modules: Mapping[str, Any],
    entries: Mapping[str, str],
    expected: int | None,
    now: dt.datetime,
) -> Op[int]:
    """Store each module of ``modules``, keep the others; return the new version.

    ``entries`` holds each module's encoded state (``codec.encode_entries``).
    The merge happens inside the upsert: one statement, atomic. The locked
    path serves what that statement cannot: on PostgreSQL a stored state
    holding ``\\u0000`` or lone surrogates (``json_each`` refuses those, and
    the statement fails harmlessly in autocommit), on SQLite module names its
    JSON paths cannot quote, or more than eight modules.
    """
    text = codec.join_entries(entries)
    if ctx.dialect != "sqlite":
        entries = {}  # only SQLite binds the parts: free them before the I/O
    if expected == 0:
        return (yield from set_state(ctx, user_id, session_id, text, 0, now))
    if one_statement_merge(ctx.dialect, modules):
        upsert, cas = merge_statements(ctx.dialect, len(modules))
        params = _params(ctx, user_id, session_id, now)
        params["p_state"] = text
        params["p_expires"] = ctx.expires(now)
        if ctx.dialect == "postgresql":
            params["p_keys"] = list(modules)
        else:
            for i, (name, entry) in enumerate(entries.items()):
                params[f"p_path{i}"] = f'$."{name}"'
                params[f"p_value{i}"] = entry
        if expected is None:
            statement = upsert
        else:
            params["p_expected"] = expected
            statement = cas
        try:
            row = (yield Call(statement, params)).first()
        except sa.exc.DBAPIError as exc:
            if sqlstate(exc) not in JSON_REFUSED:
                raise
            row = None  # a stored NUL or lone surrogate json_each cannot read
        if row is not None:
            return int(row[0])
        # Nothing written: a version conflict, or a state the one statement
        # cannot merge. The locked path tells the two apart.
    return (yield from _merge_locked(ctx, user_id, session_id, modules, text, expected, now))


def _merge_locked(
    ctx: Context,
    user_id: str,
    session_id: str,
    modules: Mapping[str, Any],
    text: str,
    expected: int | None,
    now: dt.datetime,
) -> Op[int]:
    """Merge in Python inside a transaction that locks the session's row.

    SQLite's ``BEGIN IMMEDIATE`` holds the database's one write lock; on
    PostgreSQL ``SELECT ... FOR UPDATE`` locks the row, and a session created
    concurrently makes ``create`` return nothing, so the loop locks that row.
    """
    params = _params(ctx, user_id, session_id, now)
    params["p_expires"] = ctx.expires(now)
    yield BEGIN
    while True:
        row = (yield Call(ctx.sql.select_locked, params)).first()
        live = row is not None and bool(row[2])
        actual = int(row[1]) if live else 0
        if expected is not None and expected != actual:
            raise conflict(expected, actual, session_id)
        if live:
            merged = codec.decode(row[0])
            merged.update(modules)
            params["p_state"] = codec.encode_modules(merged)
            params["p_expected"] = actual
            written = (yield Call(ctx.sql.update_cas, params)).first()
        else:
            params["p_state"] = text
            written = (yield Call(ctx.sql.create, params)).first()
        if written is not None:
            yield COMMIT
            return int(written[0])


# --------------------------------------------------------------------------- listing


def page_params(
    ctx: Context,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    now: dt.datetime,
    *,
    oldest_first: bool = False,
) -> dict[str, Any]:
    """The parameters of a listing page: one row more than ``limit`` tells a next page exists."""
    params: dict[str, Any] = {
        "p_app": ctx.app_name,
        "p_now": now,
        "p_limit": check_limit(limit) + 1,
    }
    if user_id is not None:
        params["p_user"] = user_id
    if cursor is not None:
        params["c_updated"], params["c_user"], params["c_session"] = decode_cursor(
            cursor, user_id, oldest_first=oldest_first
        )
    return params


def list_sessions(
    ctx: Context, user_id: str | None, limit: int, cursor: str | None, now: dt.datetime
) -> Op[SessionPage]:
    """Return one page of live sessions, newest update first, keyset-paginated."""
    params = page_params(ctx, user_id, limit, cursor, now)
    statement = ctx.sql.pages[user_id is not None, cursor is not None]
    rows = (yield Call(statement, params)).all()
    items = tuple(SessionInfo(*row) for row in rows[:limit])
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return SessionPage(items, next_cursor)


# --------------------------------------------------------------------------- schema


def schema_revision(ctx: Context) -> Op[str | None]:
    """Return the database's statekeeper revision, or ``None`` when its tables are not there."""
    try:
        rows = (yield Call(ctx.sql.schema_version, {})).all()
    except sa.exc.DBAPIError:  # no version table: no statekeeper tables at all
        return None
    return str(rows[0][0]) if rows else None
