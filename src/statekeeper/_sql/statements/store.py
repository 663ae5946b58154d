"""The statements behind the operations: prebuilt once per dialect, never per call.

SQLAlchemy Core constructs with bound parameters named ``p_*`` (and ``c_*``
for a listing cursor). Building them once keeps statement construction and
compilation out of every call; ``ops.store`` picks them, ``driver`` compiles each
once per store.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import RawJSON, events, sessions, version_table
from .terms import (
    EVENTS_OF_KEY,
    EXPIRES,
    FRESH,
    KEY,
    LIVE,
    NOW,
    ONE,
    STATE_TEXT,
    ZERO,
    create_unless_live,
    page_statements,
    pg_merged,
    pg_merged_call,
    sqlite_merged,
)

__all__ = [
    "PURGE_BATCH",
    "SQLITE_MERGE_MAX_MODULES",
    "Statements",
    "merge_statements",
    "one_statement_merge",
    "statements",
]


t = sessions
c = t.c


def _state_param() -> sa.BindParameter[str]:
    return sa.bindparam("p_state", type_=RawJSON())


@dataclass(frozen=True)
class Statements:
    """Every statement of one dialect, built once so SQLAlchemy's compiled cache always hits."""

    select: sa.Select[Any]
    select_locked: sa.Select[Any]
    touch: sa.Executable
    exists: sa.Select[Any]
    version: sa.Select[Any]
    delete: sa.Executable
    delete_events: sa.Executable | None
    purge: sa.Executable
    purge_by_key: sa.Executable | None
    purge_events: sa.Executable
    replace: sa.Executable
    create: sa.Executable
    update_cas: sa.Executable
    schema_version: sa.Select[Any]
    pages: dict[tuple[bool, bool], sa.Select[Any]]


# In an upsert's SET, a subquery naming `excluded` as a table would add it to
# its own FROM; as a literal it refers to the row that was not inserted.
_EXCLUDED_STATE: Any = sa.literal_column("excluded.state")


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(t).values(FRESH)
    if dialect == "sqlite":
        return sqlite.insert(t).values(FRESH)
    raise ValueError(f"unsupported dialect {dialect!r}")  # pragma: no cover


def _upsert(dialect: str, state_on_live: Any) -> Any:
    """INSERT the fresh row, or update a live one with ``state_on_live``.

    An expired row reads as absent, so it is replaced as if it were new.
    """
    stmt = _insert(dialect)
    ex = stmt.excluded
    # LIVE, reading the time of the call from the row not inserted (its updated_at
    # is p_now): SQLite binds a parameter at each place it appears, and each bound
    # value is converted by itself, five times here.
    live = sa.or_(c.expires_at.is_(None), c.expires_at > ex.updated_at)
    return stmt.on_conflict_do_update(
        index_elements=[c.app_name, c.user_id, c.session_id],
        set_={
            "state": sa.case((live, state_on_live), else_=ex.state),
            "version": sa.case((live, c.version + ONE), else_=ONE),
            "created_at": sa.case((live, c.created_at), else_=ex.created_at),
            "updated_at": ex.updated_at,
            "expires_at": ex.expires_at,
            # A new session in an expired one's place starts with an empty log.
            "update_time": sa.case((live, c.update_time), else_=sa.null()),
            "event_count": sa.case((live, c.event_count), else_=ZERO),
        },
    ).returning(c.version)


def _create(dialect: str) -> Any:
    """INSERT the fresh row unless a live one exists (then return nothing)."""
    return create_unless_live(dialect, None).returning(c.version)


def _update_cas(state: Any) -> Any:
    """UPDATE a live row at version ``p_expected`` to ``state``."""
    return (
        sa.update(t)
        .where(KEY, LIVE, c.version == sa.bindparam("p_expected"))
        .values(state=state, version=c.version + ONE, updated_at=NOW, expires_at=EXPIRES)
        .returning(c.version)
    )


def _deletes(dialect: str) -> tuple[Any, Any]:
    """Delete a session with its events.

    PostgreSQL does it in one statement (a data-modifying CTE); SQLite, which
    has none, runs the events' DELETE first, in a transaction.
    """
    delete = sa.delete(t).where(KEY).returning(c.expires_at)
    if dialect == "postgresql":
        their_events = sa.delete(events).where(EVENTS_OF_KEY).cte("gone_events")
        return delete.add_cte(their_events), None
    return delete, sa.delete(events).where(EVENTS_OF_KEY)


@functools.cache
def statements(dialect: str) -> Statements:
    delete, delete_events = _deletes(dialect)
    return Statements(
        select=sa.select(STATE_TEXT, c.version).where(KEY, LIVE),
        select_locked=sa.select(STATE_TEXT, c.version, LIVE.label("live"))
        .where(KEY)
        .with_for_update(),
        touch=sa.update(t)
        .where(KEY, LIVE)
        .values(expires_at=EXPIRES)
        .returning(STATE_TEXT, c.version),
        exists=sa.select(sa.literal(1)).where(KEY, LIVE),
        version=sa.select(c.version).where(KEY, LIVE),
        # Liveness is judged in Python: SQLite 3.40 miscomputes `x IS NULL` in
        # a DELETE's RETURNING clause.
        delete=delete,
        delete_events=delete_events,
        purge=_purge_batch(dialect),
        purge_by_key=_purge_batch_by_key() if dialect == "postgresql" else None,
        purge_events=_purge_orphan_events(),
        replace=_upsert(dialect, _EXCLUDED_STATE),
        create=_create(dialect),
        update_cas=_update_cas(_state_param()),
        schema_version=sa.select(version_table.c.version_num),
        pages=page_statements(),
    )


#: Expired sessions one purge statement deletes at most: each batch is its own
#: short transaction, so a purge never holds locks for long on a busy table.
PURGE_BATCH = 1000


def _purge_orphan_events() -> sa.Executable:
    """DELETE the app's events whose session is gone (purged, or deleted mid-append)."""
    ev = events.c
    has_session = (
        sa.select(sa.literal(1))
        .where(
            c.app_name == ev.app_name,
            c.user_id == ev.user_id,
            c.session_id == ev.session_id,
        )
        .exists()
    )
    return sa.delete(events).where(ev.app_name == sa.bindparam("p_app"), ~has_session)


def _purge_batch(dialect: str) -> sa.Executable:
    """DELETE at most ``p_batch`` of the app's sessions expired at ``p_now``.

    The batch is picked by row address (``ctid`` on PostgreSQL, ``rowid`` on
    SQLite), so each deleted row is one direct lookup, whatever the table's
    size. No RETURNING: the operation reads the row count.

    On PostgreSQL the batch is taken along the expiry index, so a batch does
    not rescan the dead rows the batches before it left, and the expiry is
    tested again on the rows deleted: a session saved (revived) meanwhile is
    kept (a row updated concurrently also has a new address and is skipped).
    SQLite runs the statement under its one write lock, so nothing changes
    between the subquery and the delete.
    """
    expired = sa.and_(c.app_name == sa.bindparam("p_app"), c.expires_at <= NOW)
    limit = sa.bindparam("p_batch", type_=sa.Integer)
    if dialect == "postgresql":
        ctid: sa.ColumnClause[Any] = sa.literal_column("ctid")
        batch = sa.select(ctid).select_from(t).where(expired).order_by(c.expires_at).limit(limit)
        return sa.delete(t).where(expired, ctid.in_(batch))
    rowid: sa.ColumnClause[Any] = sa.literal_column("rowid")
    batch = sa.select(rowid).select_from(t).where(expired).limit(limit)
    return sa.delete(t).where(rowid.in_(batch))


def _purge_batch_by_key() -> sa.Executable:
    """PostgreSQL: :func:`_purge_batch` picking the batch by primary key, not ``ctid``.

    For a distributed database (Citus), which refuses ``ctid`` in a
    multi-shard DELETE. Slower on plain PostgreSQL (1.8x with every session
    expired: the join on three text columns), so it is the fallback.
    """
    expired = sa.and_(c.app_name == sa.bindparam("p_app"), c.expires_at <= NOW)
    key = (c.app_name, c.user_id, c.session_id)
    batch = sa.select(*key).where(expired).order_by(c.expires_at)
    return sa.delete(t).where(
        expired, sa.tuple_(*key).in_(batch.limit(sa.bindparam("p_batch", type_=sa.Integer)))
    )


#: SQLite merges with one ``json_set`` path per module; more modules than this
#: in one call, or a name its path syntax cannot quote, take the locked path.
SQLITE_MERGE_MAX_MODULES = 8


@functools.cache
def merge_statements(dialect: str, modules: int) -> tuple[Any, Any]:
    """The one-statement merge of ``modules`` modules: as an upsert and as a CAS update."""
    if dialect == "postgresql":
        return (
            # In the upsert a function call, not pg_merged's subquery (see pg_merged_call).
            _upsert("postgresql", pg_merged_call(c.state, _EXCLUDED_STATE)),
            _update_cas(pg_merged(c.state, sa.cast(_state_param(), postgresql.JSON))),
        )
    merged = sqlite_merged(c.state, modules)
    return _upsert("sqlite", merged), _update_cas(merged)


def one_statement_merge(dialect: str, modules: Mapping[str, Any]) -> bool:
    if dialect == "postgresql":
        return True
    return 0 < len(modules) <= SQLITE_MERGE_MAX_MODULES and not any(  # quotable in a JSON path
        '"' in name or "\\" in name for name in modules
    )
