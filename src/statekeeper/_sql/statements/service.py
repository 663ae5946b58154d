"""The statements of the event-log service, prebuilt once per dialect.

Parameters are named ``p_*`` (``c_*`` for a listing cursor), as in
``statements.store``. PostgreSQL appends and creates are one statement each: the
session row's write is a data-modifying CTE the other writes (event, app and
user state) select from, so they happen only when it matched. SQLite, which
has no such CTEs, runs the same writes one by one inside ``BEGIN IMMEDIATE``.

App and user state hold one row per key; a delta is an upsert of its keys, so
concurrent writers of other keys (or other sessions) never lose each other's
work, and no JSON is parsed in SQL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import RawDouble, RawJSON, app_state, events, sessions, user_state
from .terms import (
    EVENTS_OF_KEY,
    EXPIRES,
    KEY,
    LIVE,
    NOW,
    RECORD,
    TIME,
    create_unless_live,
    pg_merged,
    scoped_text,
    sqlite_merged,
)

__all__ = [
    "LEAN_PAGE",
    "SessionMode",
    "ServiceStatements",
    "append_statement",
    "pop_statements",
    "service_statements",
]

t, c = sessions, sessions.c
ev = events.c

#: How an append writes the session-scoped state: left as it is, merged in SQL
#: with the delta (``merge``), or replaced by a state merged in Python.
SessionMode = Literal["keep", "merge", "replace"]


@dataclass(frozen=True)
class ServiceStatements:
    """The service's statements of one dialect (appends are in :func:`append_statement`)."""

    create: sa.Executable
    clear_events: sa.Executable | None
    app_upsert: sa.Executable | None
    user_upsert: sa.Executable | None
    event_insert: sa.Executable | None
    read: sa.Select[Any]
    touch: sa.Executable
    app: sa.Select[Any]
    user: sa.Select[Any]
    events: dict[tuple[bool, bool], sa.Select[Any]]
    pages: dict[tuple[bool, bool, bool], sa.Select[Any]]
    #: ``pages`` reading only what an ADK ``Session`` holds (see :data:`LEAN_PAGE`).
    lean_pages: dict[tuple[bool, bool, bool], sa.Select[Any]]


#: The columns of a ``pages`` row a ``lean_pages`` row keeps, in order: user_id,
#: session_id, state, version, update_time, updated_at (the cursor's, and the
#: update time where none was stored), app_state, user_state. Without
#: event_count, created_at and expires_at, each row parses one datetime, not three.
LEAN_PAGE = (0, 1, 2, 3, 5, 7, 9, 10)


def _lean(page: sa.Select[Any]) -> sa.Select[Any]:
    """``page`` with only the :data:`LEAN_PAGE` columns (its filter, order and limit kept)."""
    columns = list(page.selected_columns)
    return page.with_only_columns(*(columns[i] for i in LEAN_PAGE))


# --------------------------------------------------------------------------- writes


def _session_insert(dialect: str) -> Any:
    """INSERT a new session row unless a live one holds the key (then return nothing).

    Returns the version, and the app's and user's state as they were.
    """
    return create_unless_live(dialect, TIME).returning(
        c.version, *scoped_text(dialect, sa.bindparam("p_user"))
    )


def _pg_scoped_upsert(table: sa.Table, gate: Any, scope: Literal["a", "u"]) -> Any:
    """PostgreSQL: upsert ``p_{scope}keys`` / ``p_{scope}values`` when ``gate`` has a row."""
    pairs = (
        sa.func.unnest(
            sa.bindparam(f"p_{scope}keys", type_=postgresql.ARRAY(sa.Text)),
            sa.bindparam(f"p_{scope}values", type_=postgresql.ARRAY(sa.Text)),
        )
        .table_valued("key", "value")
        .render_derived(name=f"{scope}delta", with_types=False)
    )
    columns: list[Any] = [sa.cast(sa.bindparam("p_app"), sa.String)]
    names = ["app_name"]
    if scope == "u":
        columns.append(sa.cast(sa.bindparam("p_user"), sa.String))
        names.append("user_id")
    source = sa.select(*columns, pairs.c.key, pairs.c.value).select_from(
        gate.join(pairs, sa.true())
    )
    stmt = postgresql.insert(table).from_select([*names, "key", "value"], source)
    return stmt.on_conflict_do_update(
        index_elements=[*names, "key"], set_={"value": stmt.excluded.value}
    )


def _sqlite_scoped_upsert(table: sa.Table, scope: Literal["a", "u"]) -> Any:
    """SQLite: upsert one key (``p_key`` / ``p_value``)."""
    values: dict[str, Any] = {"app_name": sa.bindparam("p_app")}
    if scope == "u":
        values["user_id"] = sa.bindparam("p_user")
    stmt = sqlite.insert(table).values(
        **values, key=sa.bindparam("p_key"), value=sa.bindparam("p_value")
    )
    return stmt.on_conflict_do_update(
        index_elements=[*values, "key"], set_={"value": stmt.excluded.value}
    )


def _event_values(dialect: str, seq: Any) -> dict[str, Any]:
    event: Any = sa.bindparam("p_event", type_=RawJSON())
    if dialect == "postgresql":  # in an INSERT ... SELECT the text needs the cast
        event = sa.cast(event, postgresql.JSON)
    return {
        "app_name": sa.bindparam("p_app"),
        "user_id": sa.bindparam("p_user"),
        "session_id": sa.bindparam("p_session"),
        "seq": seq,
        "timestamp": TIME,
        "event": event,
    }


def _overwrite(stmt: Any) -> Any:
    """A leftover event of a deleted session under the same key is overwritten."""
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[ev.app_name, ev.user_id, ev.session_id, ev.seq],
        set_={"timestamp": ex.timestamp, "event": ex.event},
    )


def _session_bump(dialect: str, mode: SessionMode, expected: bool, modules: int) -> Any:
    """UPDATE a live session for one more event; RETURNING its version and event count."""
    values: dict[str, Any] = {
        "version": c.version + 1,
        "event_count": c.event_count + 1,
        "update_time": TIME,
        "updated_at": NOW,
        "expires_at": EXPIRES,
    }
    if mode == "replace":
        values["state"] = sa.bindparam("p_state", type_=RawJSON())
    elif mode == "merge":
        if dialect == "postgresql":
            values["state"] = pg_merged(
                c.state, sa.cast(sa.bindparam("p_state", type_=RawJSON()), postgresql.JSON)
            )
        else:
            values["state"] = sqlite_merged(c.state, modules)
    stmt = sa.update(t).where(KEY, LIVE)
    if expected:
        stmt = stmt.where(c.version == sa.bindparam("p_expected"))
    return stmt.values(values).returning(c.version, c.event_count)


@functools.cache
def append_statement(dialect: str, mode: SessionMode, expected: bool, modules: int = 0) -> Any:
    """The write of an append: on PostgreSQL all of it, on SQLite the session row's UPDATE.

    ``modules`` is the number of session keys SQLite's ``json_set`` merges.
    The statement returns ``(version, event_count)`` when the session was
    live (and at ``p_expected``), else no row and nothing was written.
    """
    bump = _session_bump(dialect, mode, expected, modules)
    if dialect != "postgresql":
        return bump
    session = bump.cte("bumped")
    event = _overwrite(
        postgresql.insert(events).from_select(
            list(_event_values(dialect, None)),
            sa.select(*_event_values(dialect, session.c.event_count).values()),
        )
    ).cte("appended")
    scoped = [
        _pg_scoped_upsert(app_state, session, "a").cte("app_delta"),
        _pg_scoped_upsert(user_state, session, "u").cte("user_delta"),
    ]
    return sa.select(session.c.version, session.c.event_count).add_cte(event, *scoped)


def _clear_leftovers() -> Any:
    """SQLite: delete the key's events past the session's own count (all, if it is gone).

    Safe outside a transaction: an append that slipped in after the create
    wrote an event the session counts, and it stays.
    """
    count = sa.select(c.event_count).where(KEY, LIVE).scalar_subquery()
    return sa.delete(events).where(EVENTS_OF_KEY, ev.seq > sa.func.coalesce(count, 0))


def _pg_create() -> Any:
    """One statement: the session row, its leftover events cleared, the scoped state.

    Returns the version and the scoped state as it was before this statement
    (the caller lays the delta over it). The scoped state is read by the
    outer SELECT, not in the INSERT's RETURNING: a distributed PostgreSQL
    (Citus) refuses a subquery anywhere in an INSERT. Citus runs the CTEs
    one after the other, so there the read may already see the delta, which
    the caller lays over it again to the same result.
    """
    created = create_unless_live("postgresql", TIME).returning(c.version).cte("created")
    cleared = (
        sa.delete(events)
        .where(EVENTS_OF_KEY, sa.exists(sa.select(created.c.version)))
        .cte("cleared")
    )
    scoped = [
        _pg_scoped_upsert(app_state, created, "a").cte("app_delta"),
        _pg_scoped_upsert(user_state, created, "u").cte("user_delta"),
    ]
    app, user = scoped_text("postgresql", sa.bindparam("p_user"))
    return sa.select(created.c.version, app, user).add_cte(cleared, *scoped)


# --------------------------------------------------------------------------- reads


def _likelihood(condition: Any, probability: str) -> Any:
    """SQLite's planner hint: ``condition`` is true with about this probability."""
    # Not typed Boolean: SQLite's compiler would append "= 1", hiding the term from the planner.
    return sa.func.likelihood(condition, sa.literal_column(probability))


def _event_reads(dialect: str) -> dict[tuple[bool, bool], sa.Select[Any]]:
    """Events of a session up to ``p_count``: (last ``p_recent``?, at or after ``p_after``?).

    "The last N" is a backward scan of the primary key. "At or after T" is a
    range of the time index (then a sort of what it found): SQLite's planner,
    which cannot tell how selective a range is, would rather walk the whole
    log in seq order, so ``likelihood()`` tells it that the count bound keeps
    every row and the time bound few (true of the recent tails asked for).
    """
    columns = (
        ev.seq,
        sa.type_coerce(ev.timestamp, RawDouble()),
        sa.type_coerce(ev.event, RawJSON()),
    )
    counted = ev.seq <= sa.bindparam("p_count", type_=sa.BigInteger)
    after = ev.timestamp >= sa.bindparam("p_after", type_=sa.Double())
    recent = sa.bindparam("p_recent", type_=sa.Integer)
    reads = {}
    for last in (False, True):
        for since in (False, True):
            stmt = sa.select(*columns).where(EVENTS_OF_KEY)
            if since and dialect == "sqlite":
                stmt = stmt.where(_likelihood(counted, "1.0"), _likelihood(after, "0.001"))
            elif since:
                stmt = stmt.where(counted, after)
            else:
                stmt = stmt.where(counted)
            # The last ones newest first (the caller reverses them).
            stmt = stmt.order_by(ev.seq.desc()).limit(recent) if last else stmt.order_by(ev.seq)
            reads[last, since] = stmt
    return reads


def _pages(dialect: str) -> dict[tuple[bool, bool, bool], sa.Select[Any]]:
    """Listing pages: (one user?, after a cursor?, oldest first?), rows with scoped state."""
    updated = sa.bindparam("c_updated", type_=c.updated_at.type)
    user = sa.bindparam("c_user", type_=c.user_id.type)
    session = sa.bindparam("c_session", type_=c.session_id.type)

    def base(user: Any) -> sa.Select[Any]:
        return sa.select(c.user_id, c.session_id, *RECORD, *scoped_text(dialect, user)).where(
            c.app_name == sa.bindparam("p_app"), LIVE
        )

    # One user's page reads that user's state by the bound id, not by the
    # row's column: a distributed database (Citus) then routes the whole
    # statement to the one shard holding the user.
    every, one = base(c.user_id), base(sa.bindparam("p_user"))
    pages = {}
    for by_user in (False, True):
        for after in (False, True):
            for oldest in (False, True):
                stmt = one.where(c.user_id == sa.bindparam("p_user")) if by_user else every
                keys: tuple[Any, ...] = (c.updated_at, c.user_id, c.session_id)
                mark: tuple[Any, ...] = (updated, user, session)
                if by_user:  # in the index's column order, so the page is a seek
                    keys, mark = (c.updated_at, c.session_id), (updated, session)
                if after:
                    left, right = sa.tuple_(*keys), sa.tuple_(*mark)
                    stmt = stmt.where(left > right if oldest else left < right)
                    if by_user:
                        stmt = stmt.where(c.user_id == user)
                order = [k if oldest else k.desc() for k in (c.updated_at, c.user_id, c.session_id)]
                stmt = stmt.order_by(*order).limit(sa.bindparam("p_limit", type_=sa.Integer))
                pages[by_user, after, oldest] = stmt
    return pages


@functools.cache
def service_statements(dialect: str) -> ServiceStatements:
    """The service's statements for ``dialect``, built once."""
    pg = dialect == "postgresql"
    a, u = app_state.c, user_state.c
    scoped = scoped_text(dialect, sa.bindparam("p_user"))
    pages = _pages(dialect)
    return ServiceStatements(
        create=_pg_create() if pg else _session_insert(dialect),
        clear_events=None if pg else _clear_leftovers(),
        app_upsert=None if pg else _sqlite_scoped_upsert(app_state, "a"),
        user_upsert=None if pg else _sqlite_scoped_upsert(user_state, "u"),
        event_insert=None
        if pg
        else _overwrite(
            sqlite.insert(events).values(
                _event_values(dialect, sa.bindparam("p_seq", type_=sa.BigInteger))
            )
        ),
        read=sa.select(*RECORD, *scoped).where(KEY, LIVE),
        touch=sa.update(t).where(KEY, LIVE).values(expires_at=EXPIRES).returning(*RECORD, *scoped),
        app=sa.select(a.key, a.value).where(a.app_name == sa.bindparam("p_app")),
        user=sa.select(u.key, u.value).where(
            u.app_name == sa.bindparam("p_app"), u.user_id == sa.bindparam("p_user")
        ),
        events=_event_reads(dialect),
        pages=pages,
        lean_pages={key: _lean(page) for key, page in pages.items()},
    )


# --------------------------------------------------------------------------- pop


@functools.cache
def pop_statements() -> tuple[sa.Executable, sa.Executable]:
    """The two writes of a pop, run in one transaction: the session's count, then its event.

    The first takes one event off a live, non-empty session (and locks its
    row), returning its new version and count; the second deletes the event
    past that count, returning it. Two statements, not one: in a single
    PostgreSQL statement the DELETE would read the snapshot taken before a
    concurrent append's commit, while the UPDATE sees that append's count.
    """
    shrink = (
        sa.update(t)
        .where(KEY, LIVE, c.event_count > 0)
        .values(
            version=c.version + 1,
            event_count=c.event_count - 1,
            update_time=TIME,
            updated_at=NOW,
            expires_at=EXPIRES,
        )
        .returning(c.version, c.event_count)
    )
    take = (
        sa.delete(events)
        .where(EVENTS_OF_KEY, ev.seq == sa.bindparam("p_seq", type_=sa.BigInteger))
        .returning(
            ev.seq, sa.type_coerce(ev.timestamp, RawDouble()), sa.type_coerce(ev.event, RawJSON())
        )
    )
    return shrink, take
