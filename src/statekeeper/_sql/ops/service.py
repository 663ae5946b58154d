"""The event-log service's operations, written once and free of I/O.

Generators yielding :class:`~statekeeper._sql.ops.store.Call` steps (and ``BEGIN`` /
``COMMIT``), driven by ``driver.run`` / ``arun`` like the stores' own
operations in ``ops.store``. The statements are in ``statements.service``.

A state (at create) or a state delta (at append) is split by key prefix into
a :class:`Delta`: ``app:`` keys go to the app's state, ``user:`` keys to the
user's, ``temp:`` keys nowhere, the others to the session's own state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ... import codec
from ..._records import EventRecord, SessionPage, SessionRecord
from ..._rules import check_mapping, encode_cursor
from ...errors import ConflictError, SessionExistsError, SessionNotFoundError, StateEncodingError
from ..statements.service import (
    SessionMode,
    append_statement,
    pop_statements,
    service_statements,
)
from ..statements.store import one_statement_merge
from .store import (
    BEGIN,
    COMMIT,
    JSON_REFUSED,
    Call,
    Context,
    Op,
    current_version,
    page_params,
    sqlstate,
)

__all__ = [
    "APP_PREFIX",
    "TEMP_PREFIX",
    "USER_PREFIX",
    "Delta",
    "append_event",
    "append_events",
    "create_session",
    "encode_scoped",
    "get_scoped_state",
    "get_session",
    "get_session_texts",
    "list_session_rows",
    "list_sessions",
    "members",
    "pop_event",
    "read_event_rows",
    "read_events",
    "session_params",
    "split_state",
]

APP_PREFIX = "app:"
USER_PREFIX = "user:"
TEMP_PREFIX = "temp:"


@dataclass(frozen=True, slots=True)
class Delta:
    """A state or state delta split by scope; scoped values are encoded JSON texts."""

    session: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)  # session keys, encoded
    app: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)


_NO_DELTA = Delta()  # an append that leaves the states as they are


def split_state(state: Mapping[str, Any], what: str) -> Delta:
    """Split ``state`` by key prefix and encode it (``StateEncodingError`` names a bad key)."""
    check_mapping(state, what)
    session: dict[str, Any] = {}
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(key, str) and key.startswith(TEMP_PREFIX):
            continue
        if isinstance(key, str) and key.startswith(APP_PREFIX):
            app[key[len(APP_PREFIX) :]] = value
        elif isinstance(key, str) and key.startswith(USER_PREFIX):
            user[key[len(USER_PREFIX) :]] = value
        else:
            session[key] = value
    return Delta(
        session=session,
        entries=codec.encode_entries(session),
        app=encode_scoped(app, APP_PREFIX),
        user=encode_scoped(user, USER_PREFIX),
    )


def encode_scoped(values: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Encode each scoped key's value, keys sorted (the order rows are locked in)."""
    encoded = {}
    for key in sorted(values):
        try:
            codec.check_module_name(key)
        except StateEncodingError as exc:
            raise StateEncodingError(
                f"state key {prefix + key!r} has no usable name after {prefix!r}: {exc}",
                path=prefix + key,
            ) from None
        encoded[key] = codec.encode(values[key], root=prefix + key)
    return encoded


def session_params(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> dict[str, Any]:
    """The parameters naming a session's key at ``now``, and its expiry if written now."""
    return {
        "p_app": ctx.app_name,
        "p_user": user_id,
        "p_session": session_id,
        "p_now": now,
        "p_expires": ctx.expires(now),
    }


def _pg_scoped(params: dict[str, Any], delta: Delta) -> None:
    params["p_akeys"], params["p_avalues"] = list(delta.app), list(delta.app.values())
    params["p_ukeys"], params["p_uvalues"] = list(delta.user), list(delta.user.values())


def _sqlite_scoped(ctx: Context, user_id: str, delta: Delta) -> Op[None]:
    sql = service_statements(ctx.dialect)
    assert sql.app_upsert is not None
    assert sql.user_upsert is not None
    for key, value in delta.app.items():
        yield Call(sql.app_upsert, {"p_app": ctx.app_name, "p_key": key, "p_value": value})
    for key, value in delta.user.items():
        yield Call(
            sql.user_upsert,
            {"p_app": ctx.app_name, "p_user": user_id, "p_key": key, "p_value": value},
        )


def members(text: str | None) -> dict[str, Any]:
    """Decode a scoped state read as object members (``"k":v,...``, NULL for none)."""
    return {} if text is None else dict(codec.decode("{" + text + "}"))


def _merged_state(
    session_text: str, app: Mapping[str, Any], user: Mapping[str, Any]
) -> dict[str, Any]:
    """The session's own state, then the ``app:k`` and ``user:k`` entries."""
    state: dict[str, Any] = codec.decode(session_text)
    for key, value in app.items():
        state[APP_PREFIX + key] = value
    for key, value in user.items():
        state[USER_PREFIX + key] = value
    return state


def _row_state(session_text: str, app_text: str | None, user_text: str | None) -> dict[str, Any]:
    return _merged_state(session_text, members(app_text), members(user_text))


def _record(
    ctx: Context,
    user_id: str,
    session_id: str,
    row: Any,
    state: dict[str, Any],
    events: tuple[EventRecord, ...],
) -> SessionRecord:
    """A record from a row of ``statements.terms.RECORD`` columns (state already merged)."""
    _, version, _, update_time, created_at, updated_at, expires_at = row[:7]
    return SessionRecord(
        app_name=ctx.app_name,
        user_id=user_id,
        session_id=session_id,
        version=int(version),
        state=state,
        events=events,
        update_time=updated_at.timestamp() if update_time is None else float(update_time),
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
    )


# --------------------------------------------------------------------------- writes


def create_session(
    ctx: Context,
    user_id: str,
    session_id: str,
    delta: Delta,
    timestamp: float,
    now: dt.datetime,
) -> Op[SessionRecord]:
    """Create the session with its state (scoped keys to their scopes); return it, merged.

    Leftover events under the key (of a session that expired, or of a
    delete that raced an append) are removed. They are harmless anyway: a
    session reads only events up to its own count, and an append overwrites
    them. So on SQLite the clean-up (of the events past the session's count)
    may run after the create in autocommit when no scoped state is written;
    with scoped keys the writes share one transaction. A live session under the key raises
    :class:`SessionExistsError`, nothing written.
    """
    sql = service_statements(ctx.dialect)
    params = session_params(ctx, user_id, session_id, now)
    params["p_state"] = codec.join_entries(delta.entries)
    params["p_time"] = timestamp
    if ctx.dialect == "postgresql":
        _pg_scoped(params, delta)
        row = (yield Call(sql.create, params)).first()
    else:
        assert sql.clear_events is not None
        scoped = bool(delta.app or delta.user)
        if scoped:
            yield BEGIN
        row = (yield Call(sql.create, params)).first()
        if row is not None:
            yield Call(sql.clear_events, params)
            if scoped:
                yield from _sqlite_scoped(ctx, user_id, delta)
                yield COMMIT
    if row is None:  # on SQLite the driver rolls the transaction back
        raise SessionExistsError(
            f"session {session_id!r} of user {user_id!r} already exists (app "
            f"{ctx.app_name!r}); nothing was written: pick another session_id, pass "
            "None to have one generated, or load the existing session"
        )
    # The scoped state as it was before this write, with the delta laid over it.
    app = {**members(row[1]), **{k: codec.decode(v) for k, v in delta.app.items()}}
    user = {**members(row[2]), **{k: codec.decode(v) for k, v in delta.user.items()}}
    return SessionRecord(
        app_name=ctx.app_name,
        user_id=user_id,
        session_id=session_id,
        version=int(row[0]),
        state=_merged_state(params["p_state"], app, user),
        events=(),
        update_time=timestamp,
        created_at=now,
        updated_at=now,
        expires_at=params["p_expires"],
    )


def _refused(
    expected: int | None, actual: int, session_id: str, user_id: str, ctx: Context
) -> Exception:
    """Why an append wrote nothing: the session is missing, or at another version."""
    if actual == 0:
        return SessionNotFoundError(
            f"session {session_id!r} of user {user_id!r} does not exist or has expired (app "
            f"{ctx.app_name!r}); nothing was written: create it first"
        )
    assert expected is not None
    return ConflictError(
        f"session {session_id!r} is at version {actual}, not the expected version "
        f"{expected}: another writer appended since it was loaded; nothing was written: "
        "reload the session and retry",
        expected=expected,
        actual=actual,
    )


def append_event(
    ctx: Context,
    user_id: str,
    session_id: str,
    event: str,
    delta: Delta,
    timestamp: float,
    expected: int | None,
    now: dt.datetime,
) -> Op[int]:
    """Append the encoded ``event`` and apply ``delta`` in one atomic write; return the version.

    PostgreSQL: one statement. The locked path (a transaction locking the
    session's row, the session state merged in Python) serves a stored
    session state that ``json_each`` refuses (``\\u0000``, lone surrogates).
    SQLite: one ``BEGIN IMMEDIATE`` transaction.
    """
    params = session_params(ctx, user_id, session_id, now)
    params["p_time"] = timestamp
    params["p_event"] = event
    if expected is not None:
        params["p_expected"] = expected
    if ctx.dialect == "postgresql":
        _pg_scoped(params, delta)
        mode: SessionMode = "keep"
        if delta.session:
            mode = "merge"
            params["p_state"] = codec.join_entries(delta.entries)
            params["p_keys"] = list(delta.entries)
        try:
            row = (
                yield Call(append_statement(ctx.dialect, mode, expected is not None), params)
            ).first()
        except sa.exc.DBAPIError as exc:
            if sqlstate(exc) not in JSON_REFUSED:
                raise
            return (yield from _append_locked(ctx, user_id, session_id, delta, expected, params))
        if row is None:
            actual = yield from current_version(ctx, params)
            if expected is None and actual:  # created after the UPDATE looked: append to it
                return (
                    yield from append_event(
                        ctx, user_id, session_id, event, delta, timestamp, expected, now
                    )
                )
            raise _refused(expected, actual, session_id, user_id, ctx)
        return int(row[0])
    return (yield from _append_sqlite(ctx, user_id, session_id, delta, expected, params))


def _append_locked(
    ctx: Context,
    user_id: str,
    session_id: str,
    delta: Delta,
    expected: int | None,
    params: dict[str, Any],
) -> Op[int]:
    """PostgreSQL: lock the session's row, merge its state in Python, write the rest in SQL."""
    yield BEGIN
    row = (yield Call(ctx.sql.select_locked, params)).first()
    actual = int(row[1]) if row is not None and row[2] else 0
    if actual == 0 or (expected is not None and expected != actual):
        raise _refused(expected, actual, session_id, user_id, ctx)
    merged = codec.decode(row[0])
    merged.update(delta.session)
    params["p_state"] = codec.encode(merged)
    params["p_expected"] = actual
    written = (yield Call(append_statement(ctx.dialect, "replace", True), params)).first()
    yield COMMIT
    return int(written[0])


def _append_sqlite(
    ctx: Context,
    user_id: str,
    session_id: str,
    delta: Delta,
    expected: int | None,
    params: dict[str, Any],
) -> Op[int]:
    """SQLite: the session row, the event and the scoped deltas in one ``BEGIN IMMEDIATE``."""
    sql = service_statements(ctx.dialect)
    assert sql.event_insert is not None
    mode: SessionMode = "keep"
    yield BEGIN
    if delta.session and one_statement_merge(ctx.dialect, delta.session):
        mode = "merge"
        for i, (name, entry) in enumerate(delta.entries.items()):
            params[f"p_path{i}"] = f'$."{name}"'
            params[f"p_value{i}"] = entry
    elif delta.session:  # names json_set cannot quote, or many keys: merge in Python
        mode = "replace"
        row = (yield Call(ctx.sql.select_locked, params)).first()
        if row is not None and row[2]:
            merged = codec.decode(row[0])
            merged.update(delta.session)
            params["p_state"] = codec.encode(merged)
        else:
            params["p_state"] = "{}"  # the UPDATE will find no live row
    statement = append_statement(ctx.dialect, mode, expected is not None, len(delta.entries))
    row = (yield Call(statement, params)).first()
    if row is None:  # the driver rolls back
        raise _refused(
            expected, (yield from current_version(ctx, params)), session_id, user_id, ctx
        )
    params["p_seq"] = int(row[1])
    yield Call(sql.event_insert, params)
    yield from _sqlite_scoped(ctx, user_id, delta)
    yield COMMIT
    return int(row[0])


def append_events(
    ctx: Context,
    user_id: str,
    session_id: str,
    items: Sequence[tuple[str, float]],
    expected: int | None,
    now: dt.datetime,
) -> Op[int]:
    """Append encoded events ``(text, timestamp)`` in order, all or none; return the last version.

    One event is :func:`append_event`'s one statement. Several are one
    transaction of one append each (the statements of an append without a
    delta), the first of which locks the session's row (PostgreSQL) or the
    database (SQLite's ``BEGIN IMMEDIATE``): events of a concurrent append
    come before or after them, never between. ``expected`` is checked once,
    against the version before the first.
    """
    if len(items) == 1:
        text, stamp = items[0]
        return (
            yield from append_event(ctx, user_id, session_id, text, _NO_DELTA, stamp, expected, now)
        )
    yield BEGIN
    version = 0
    for n, (text, stamp) in enumerate(items):
        params = session_params(ctx, user_id, session_id, now)
        params["p_time"], params["p_event"] = stamp, text
        checked = n == 0 and expected is not None
        if checked:
            params["p_expected"] = expected
        row = yield from _append_kept(ctx, params, checked)
        if row is None:  # only the first can miss: the others follow its lock
            actual = yield from current_version(ctx, params)
            if expected is None and actual:  # created after the UPDATE looked: append to it
                row = yield from _append_kept(ctx, params, False)
            if row is None:  # the driver rolls back
                raise _refused(expected, actual if checked else 0, session_id, user_id, ctx)
        version = int(row[0])
    yield COMMIT
    return version


def _append_kept(ctx: Context, params: dict[str, Any], checked: bool) -> Op[Any]:
    """One append that leaves the states as they are; its ``(version, count)`` row or ``None``."""
    if ctx.dialect == "postgresql":
        _pg_scoped(params, _NO_DELTA)
        return (yield Call(append_statement(ctx.dialect, "keep", checked), params)).first()
    row = (yield Call(append_statement(ctx.dialect, "keep", checked), params)).first()
    if row is not None:
        insert = service_statements(ctx.dialect).event_insert
        assert insert is not None
        params["p_seq"] = int(row[1])
        yield Call(insert, params)
    return row


# --------------------------------------------------------------------------- reads


def get_session(
    ctx: Context,
    user_id: str,
    session_id: str,
    recent: int | None,
    after: float | None,
    now: dt.datetime,
) -> Op[SessionRecord | None]:
    """Return the session with its merged state and the events asked for, or ``None``.

    ``recent``: the last ``recent`` events (``None`` all, ``0`` none);
    ``after``: only events at or after that timestamp. Both combine. With a
    ``ttl``, reading refreshes the session's expiry.
    """
    found = yield from _read_session(ctx, user_id, session_id, recent, after, now, _decoded)
    return None if found is None else found[0]


def get_session_texts(
    ctx: Context,
    user_id: str,
    session_id: str,
    recent: int | None,
    after: float | None,
    now: dt.datetime,
) -> Op[tuple[SessionRecord, list[str]] | None]:
    """As :func:`get_session`, but the events come apart, as their stored JSON texts.

    The record's own ``events`` are ``()``. For a caller that parses the
    texts itself (the ADK adapter validates them into pydantic models
    straight from the JSON): each event's text is parsed once, not twice.
    """
    found = yield from _read_session(ctx, user_id, session_id, recent, after, now, _none)
    return None if found is None else (found[0], [doc for _, _, doc in found[1]])


def _read_session(
    ctx: Context,
    user_id: str,
    session_id: str,
    recent: int | None,
    after: float | None,
    now: dt.datetime,
    events: Callable[[Sequence[Any]], tuple[EventRecord, ...]],
) -> Op[tuple[SessionRecord, Sequence[Any]] | None]:
    """The session's record, its ``events`` made from the event rows, and those
    rows (``seq, timestamp, text``); or ``None``."""
    sql = service_statements(ctx.dialect)
    params = session_params(ctx, user_id, session_id, now)
    row = (yield Call(sql.read if ctx.ttl is None else sql.touch, params)).first()
    if row is None:
        return None
    rows = yield from read_event_rows(ctx, params, int(row[2]), recent, after)
    state = _row_state(row[0], row[7], row[8])
    return _record(ctx, user_id, session_id, row, state, events(rows)), rows


def read_events(
    ctx: Context,
    params: dict[str, Any],
    count: int,
    recent: int | None,
    after: float | None,
) -> Op[tuple[EventRecord, ...]]:
    """Return the events asked for of a session whose log holds ``count``, oldest first.

    ``params`` hold the session's key (``p_app``, ``p_user``, ``p_session``);
    ``recent`` and ``after`` as in :func:`get_session`. The log is read up to
    ``count`` only, so events a deleted session left under the key never show.
    """
    return _decoded((yield from read_event_rows(ctx, params, count, recent, after)))


def read_event_rows(
    ctx: Context,
    params: dict[str, Any],
    count: int,
    recent: int | None,
    after: float | None,
) -> Op[Sequence[Any]]:
    """As :func:`read_events`, the rows as read: ``seq``, ``timestamp``, the event's JSON text."""
    if recent == 0 or not count:
        return ()
    params["p_count"] = count
    if recent is not None:
        params["p_recent"] = recent
    if after is not None:
        params["p_after"] = after
    statement = service_statements(ctx.dialect).events[recent is not None, after is not None]
    rows: Sequence[Any] = (yield Call(statement, params)).all()
    return rows[::-1] if recent is not None else rows


def _none(_rows: Sequence[Any]) -> tuple[EventRecord, ...]:
    return ()


def _decoded(rows: Sequence[Any]) -> tuple[EventRecord, ...]:
    return tuple(EventRecord(int(s), float(ts), codec.decode(doc)) for s, ts, doc in rows)


def get_scoped_state(ctx: Context, user_id: str | None) -> Op[dict[str, Any]]:
    """Return the app's state (``user_id`` None) or a user's, keys without their prefix."""
    sql = service_statements(ctx.dialect)
    params = {"p_app": ctx.app_name, "p_user": user_id}
    rows = (yield Call(sql.app if user_id is None else sql.user, params)).all()
    return {key: codec.decode(value) for key, value in rows}


def list_sessions(
    ctx: Context,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    oldest_first: bool,
    now: dt.datetime,
) -> Op[SessionPage[SessionRecord]]:
    """Return one page of live sessions with merged state and no events, keyset-paginated."""
    rows, more = yield from _page(ctx, user_id, limit, cursor, oldest_first, now, lean=False)
    if not rows:
        return SessionPage((), None)
    app = members(rows[0][9])  # the same for every row
    items = tuple(
        _record(ctx, row[0], row[1], row[2:], _merged_state(row[2], app, members(row[10])), ())
        for row in rows
    )
    return SessionPage(items, encode_cursor(items[-1], oldest_first=oldest_first) if more else None)


def _page(
    ctx: Context,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    oldest_first: bool,
    now: dt.datetime,
    *,
    lean: bool,
) -> Op[tuple[list[Any], bool]]:
    """Read one page's rows (``lean``: the ADK adapter's columns) and whether more follow."""
    sql = service_statements(ctx.dialect)
    params = page_params(ctx, user_id, limit, cursor, now, oldest_first=oldest_first)
    pages = sql.lean_pages if lean else sql.pages
    fetched = (
        yield Call(pages[user_id is not None, cursor is not None, oldest_first], params)
    ).all()
    return fetched[:limit], len(fetched) > limit


#: A listed session as :func:`list_session_rows` gives it: user_id, session_id,
#: version, update_time, merged state.
ListedRow = tuple[str, str, int, float, dict[str, Any]]


def list_session_rows(
    ctx: Context,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    oldest_first: bool,
    now: dt.datetime,
) -> Op[tuple[list[ListedRow], str | None]]:
    """As :func:`list_sessions`, each session as a :data:`ListedRow`, and the next cursor.

    For a caller that builds its own objects (the ADK adapter's ``Session``):
    the rows read no created, expiry or event-count columns and no
    :class:`SessionRecord` is made. The pages and cursors are those of
    :func:`list_sessions`.
    """
    rows, more = yield from _page(ctx, user_id, limit, cursor, oldest_first, now, lean=True)
    if not rows:
        return [], None
    app = members(rows[0][6])  # the same for every row
    listed: list[ListedRow] = [
        (
            owner,
            session_id,
            int(version),
            updated_at.timestamp() if update_time is None else float(update_time),
            _merged_state(state, app, members(user)),
        )
        for owner, session_id, state, version, update_time, updated_at, _, user in rows
    ]
    return listed, encode_cursor(rows[-1], oldest_first=oldest_first) if more else None


# --------------------------------------------------------------------------- pop


def pop_event(
    ctx: Context, user_id: str, session_id: str, timestamp: float, now: dt.datetime
) -> Op[EventRecord | None]:
    """Remove and return the session's newest event in one transaction, or ``None``.

    The session's row is locked first (PostgreSQL) or the database is
    (SQLite's ``BEGIN IMMEDIATE``), so concurrent pops take distinct events
    and an append cannot slip between the count and the delete. The pop
    bumps the version and makes ``timestamp`` the session's update time.
    ``None``: the session is missing, expired or has no events; nothing was written.
    """
    shrink, take = pop_statements()
    params = session_params(ctx, user_id, session_id, now)
    params["p_time"] = timestamp
    yield BEGIN
    row = (yield Call(shrink, params)).first()
    if row is None:
        yield COMMIT
        return None
    params["p_seq"] = int(row[1]) + 1
    taken = (yield Call(take, params)).first()
    yield COMMIT
    if taken is None:  # pragma: no cover - the count and the log moved together
        return None
    return EventRecord(int(taken[0]), float(taken[1]), codec.decode(taken[2]))
