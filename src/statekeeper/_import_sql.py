"""Batched writes of ``statekeeper import`` into a SQL store: a few statements per 500 sessions.

The store API writes one session per statement, each its own transaction; an
import of 100 000 sessions would wait for 100 000 commits. Here a batch is one
``SELECT`` of the sessions already there, one ``INSERT ... ON CONFLICT DO
NOTHING`` of the others inside one transaction, and one ``SELECT`` reading
them back for the check. The rows are the ones ``set_state`` would write for
a new session (version 1).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import codec
from ._rules import check_ids
from ._sql.driver import connect
from ._sql.schema import RawJSON
from ._sql.schema import sessions as t

if TYPE_CHECKING:
    from ._importers.agentscope import Item, Summary
    from .sql import SqlSession

__all__ = ["BATCH", "write_batch"]

BATCH = 500
"""Sessions per batch."""

_STATE = sa.type_coerce(t.c.state, RawJSON()).label("state")


def _stored(conn: sa.Connection, app: str, keys: list[tuple[str, str]]) -> dict[Any, Any]:
    """Return ``(state text, live)`` of each of ``keys`` stored, by key."""
    columns = (t.c.user_id, t.c.session_id, _STATE, t.c.expires_at)
    if conn.dialect.name == "postgresql":  # a join on unnest() plans fast; a long IN does not
        texts = postgresql.ARRAY(sa.Text)
        wanted = (
            sa.func.unnest(
                sa.bindparam("users", [u for u, _ in keys], type_=texts),
                sa.bindparam("sessions", [s for _, s in keys], type_=texts),
            )
            .table_valued("u", "s")
            .render_derived(name="wanted")
        )
        query = sa.select(*columns).join_from(
            wanted,
            t,
            sa.and_(t.c.app_name == app, t.c.user_id == wanted.c.u, t.c.session_id == wanted.c.s),
        )
    else:
        query = sa.select(*columns).where(
            t.c.app_name == app, sa.tuple_(t.c.user_id, t.c.session_id).in_(keys)
        )
    now = dt.datetime.now(dt.timezone.utc)
    return {
        (row[0], row[1]): (row[2], row[3] is None or row[3] > now)
        for row in conn.execute(query).all()
    }


def _insert(dialect: str) -> Any:
    insert = postgresql.insert(t) if dialect == "postgresql" else sqlite.insert(t)
    return insert.values(
        app_name=sa.bindparam("a"),
        user_id=sa.bindparam("u"),
        session_id=sa.bindparam("s"),
        state=sa.bindparam("state", type_=RawJSON()),
        version=1,
        created_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        expires_at=None,
    ).on_conflict_do_nothing()


def write_batch(
    store: SqlSession,
    batch: list[tuple[Item, dict[str, Any]]],
    summary: Summary,
    overwrite: bool,
) -> None:
    """Import one batch of loaded sessions into ``store``, counting each in ``summary``."""
    from ._importers.agentscope import differs

    app = store._core.ctx.app_name
    encoded = []
    for item, state in batch:
        try:
            check_ids(item.user_id, item.session_id)
            encoded.append((item, state, codec.encode_modules(state)))
        except ValueError as exc:  # StateEncodingError included
            summary.failed.append((item.source, str(exc)))
    engine = store.engine
    with connect(engine) as conn:
        stored = _stored(conn, app, [(i.user_id, i.session_id) for i, _, _ in encoded])
        fresh, replace = [], []
        for item, state, text in encoded:
            found = stored.get((item.user_id, item.session_id))
            if found is None:
                fresh.append((item, state, text))
            elif found[1] and codec.decode(found[0]) == state:
                summary.unchanged += 1
            elif overwrite or not found[1]:
                replace.append((item, state))
            else:
                summary.skipped.append((item.source, differs(item)))
        now = dt.datetime.now(dt.timezone.utc)
        rows = [
            {"a": app, "u": i.user_id, "s": i.session_id, "state": text, "now": now}
            for i, _, text in fresh
        ]
        if rows:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else "BEGIN")
            try:
                conn.execute(_insert(engine.dialect.name), rows)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
    for item, state in replace:  # rare: a state that differs, or an expired one
        store.set_state(item.session_id, state, item.user_id)
        fresh.append((item, state, ""))
    with connect(engine) as conn:  # the check: every written state, read back
        back = _stored(conn, app, [(i.user_id, i.session_id) for i, _, _ in fresh])
    for item, state, _ in fresh:
        found = back.get((item.user_id, item.session_id))
        if found is not None and codec.decode(found[0]) == state:
            summary.imported += 1
        else:
            summary.failed.append(
                (item.source, "the state read back differs from the source (written meanwhile?)")
            )
