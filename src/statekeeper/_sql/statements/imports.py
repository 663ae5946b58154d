"""The statements ``statekeeper import`` writes event-log sessions with, prebuilt per dialect.

Whole sessions (the row with its event count and times, then every event)
and whole scoped states, a batch at a time: parameters are named ``p_*`` as
in ``statements.service``, whose tables and conditions they share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import RawDouble, RawJSON, app_state, events, sessions, user_state
from .terms import (
    EXPIRES,
    FRESH,
    LIVE,
    STATE_TEXT,
    TIME,
)

__all__ = ["ImportStatements", "import_statements"]

t, c = sessions, sessions.c
ev = events.c


@dataclass(frozen=True)
class ImportStatements:
    """What ``statekeeper import`` writes whole sessions and whole scoped states with.

    ``*_of_keys`` statements take a batch of ``(user_id, session_id)`` keys of
    the app: on PostgreSQL as the arrays ``p_users`` / ``p_sessions`` (a join on
    ``unnest`` plans fast where a long ``IN`` list does not), on SQLite as the
    expanding ``p_keys``; ``*_of_users`` take ``p_users`` the same way.
    """

    rows_of_keys: sa.Select[Any]
    rows_of_keys_locked: sa.Select[Any]
    events_of_keys: sa.Select[Any]
    clear_events_of_keys: sa.Executable
    fresh_sessions: sa.Executable
    #: A store's session (version 1, no events, no expiry) unless the key is taken.
    fresh_states: sa.Executable
    session: sa.Executable
    event: sa.Executable
    app_read: sa.Select[Any]
    users_read: sa.Select[Any]
    app_clear: sa.Executable
    users_clear: sa.Executable
    app_insert: sa.Executable
    user_insert: sa.Executable


def _of_keys(dialect: str, user: Any, session: Any) -> Any:
    """``(user, session)`` is one of the batch's keys."""
    if dialect == "postgresql":
        texts = postgresql.ARRAY(sa.Text)
        wanted = (
            sa.func.unnest(
                sa.bindparam("p_users", type_=texts), sa.bindparam("p_sessions", type_=texts)
            )
            .table_valued("u", "s")
            .render_derived(name="wanted")
        )
        return sa.tuple_(user, session).in_(sa.select(wanted.c.u, wanted.c.s))
    return sa.tuple_(user, session).in_(sa.bindparam("p_keys", expanding=True))


def _of_users(dialect: str, user: Any) -> Any:
    """``user`` is one of the batch's users."""
    if dialect == "postgresql":
        return user == sa.any_(sa.bindparam("p_users", type_=postgresql.ARRAY(sa.Text)))
    return user.in_(sa.bindparam("p_users", expanding=True))


def _whole_session(dialect: str, replacing: bool) -> Any:
    """INSERT a session row as given, unless a live one holds the key.

    ``replacing``: or replace a live one still at ``p_expected``; returns its
    version. Otherwise returns the key: one ``executemany`` writes a batch, and
    a key missing from what it returns was written meanwhile.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(t).values(
        app_name=sa.bindparam("p_app"),
        user_id=sa.bindparam("p_user"),
        session_id=sa.bindparam("p_session"),
        state=sa.bindparam("p_state", type_=RawJSON()),
        version=sa.bindparam("p_version", type_=sa.BigInteger),
        created_at=sa.bindparam("p_created", type_=c.created_at.type),
        updated_at=sa.bindparam("p_updated", type_=c.updated_at.type),
        expires_at=EXPIRES,
        update_time=TIME,
        event_count=sa.bindparam("p_count", type_=sa.BigInteger),
    )
    ex = stmt.excluded
    names = ("state", "version", "created_at", "updated_at", "expires_at", "update_time")
    where = sa.not_(LIVE)
    if replacing:
        where = sa.or_(where, c.version == sa.bindparam("p_expected", type_=sa.BigInteger))
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.app_name, c.user_id, c.session_id],
        set_={name: ex[name] for name in (*names, "event_count")},
        where=where,
    )
    return stmt.returning(c.version) if replacing else stmt.returning(c.user_id, c.session_id)


def _fresh_state(dialect: str) -> Any:
    """INSERT the row ``set_state`` writes for a new session, unless the key is taken."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(t).values(FRESH).on_conflict_do_nothing()


@functools.cache
def import_statements(dialect: str) -> ImportStatements:
    """The import's statements for ``dialect``, built once."""
    a, u = app_state.c, user_state.c
    app: Any = sa.bindparam("p_app")
    columns = (c.user_id, c.session_id, STATE_TEXT, c.version, c.event_count, LIVE.label("live"))
    rows = sa.select(*columns).where(c.app_name == app, _of_keys(dialect, c.user_id, c.session_id))
    of_app, of_users = a.app_name == app, sa.and_(u.app_name == app, _of_users(dialect, u.user_id))
    users_read = sa.select(u.user_id, u.key, u.value).where(of_users)
    rows_locked = rows
    if dialect == "postgresql":
        # Locks are taken one user at a time (``p_user``): a distributed
        # PostgreSQL (Citus) runs FOR UPDATE only on a statement it routes
        # to one shard, and it shards by user.
        one_user = sa.and_(c.app_name == app, c.user_id == sa.bindparam("p_user"))
        sessions_of_user = c.session_id == sa.any_(
            sa.bindparam("p_sessions", type_=postgresql.ARRAY(sa.Text))
        )
        rows_locked = sa.select(*columns).where(one_user, sessions_of_user)
        users_read = sa.select(u.user_id, u.key, u.value).where(
            u.app_name == app, u.user_id == sa.bindparam("p_user")
        )
    key: Any = sa.bindparam("p_key")
    value: Any = sa.bindparam("p_value")
    return ImportStatements(
        rows_of_keys=rows,
        rows_of_keys_locked=rows_locked.with_for_update(),
        events_of_keys=sa.select(
            ev.user_id,
            ev.session_id,
            ev.seq,
            sa.type_coerce(ev.timestamp, RawDouble()),
            sa.type_coerce(ev.event, RawJSON()),
        )
        .where(ev.app_name == app, _of_keys(dialect, ev.user_id, ev.session_id))
        .order_by(ev.user_id, ev.session_id, ev.seq),
        clear_events_of_keys=sa.delete(events).where(
            ev.app_name == app, _of_keys(dialect, ev.user_id, ev.session_id)
        ),
        fresh_sessions=_whole_session(dialect, replacing=False),
        fresh_states=_fresh_state(dialect),
        session=_whole_session(dialect, replacing=True),
        event=sa.insert(events).values(
            app_name=app,
            user_id=sa.bindparam("p_user"),
            session_id=sa.bindparam("p_session"),
            seq=sa.bindparam("p_seq", type_=sa.BigInteger),
            timestamp=TIME,
            event=sa.bindparam("p_event", type_=RawJSON()),
        ),
        app_read=sa.select(a.key, a.value).where(of_app).with_for_update(),
        users_read=users_read.with_for_update(),
        app_clear=sa.delete(app_state).where(of_app),
        users_clear=sa.delete(user_state).where(of_users),
        app_insert=sa.insert(app_state).values(app_name=app, key=key, value=value),
        user_insert=sa.insert(user_state).values(
            app_name=app, user_id=sa.bindparam("p_user"), key=key, value=value
        ),
    )
