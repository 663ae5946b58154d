"""The terms the statements share: a session's key, "live at ``p_now``", state merges, pages.

Bound parameters are named ``p_*`` (``c_*`` for a listing cursor); every
statements module builds on these and on the schema, nothing else.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..schema import RawDouble, RawJSON, app_state, events, sessions, user_state

__all__ = [
    "EVENTS_OF_KEY",
    "EXPIRES",
    "FRESH",
    "KEY",
    "LIVE",
    "NOW",
    "RECORD",
    "ONE",
    "STATE_TEXT",
    "ZERO",
    "TIME",
    "create_unless_live",
    "page_statements",
    "pg_merged",
    "pg_merged_call",
    "scoped_text",
    "sqlite_merged",
]

c = sessions.c

KEY = sa.and_(
    c.app_name == sa.bindparam("p_app"),
    c.user_id == sa.bindparam("p_user"),
    c.session_id == sa.bindparam("p_session"),
)

NOW = sa.bindparam("p_now", type_=c.updated_at.type)

#: The constants of a write, written into the SQL: a plain ``1`` would be bound
#: as a parameter, which SQLAlchemy converts and passes on every call.
ONE: sa.ColumnElement[int] = sa.literal_column("1", sa.Integer)
ZERO: sa.ColumnElement[int] = sa.literal_column("0", sa.Integer)

#: True for a row that has not expired at ``p_now``.
LIVE = sa.or_(c.expires_at.is_(None), c.expires_at > NOW)

EXPIRES = sa.bindparam("p_expires", type_=c.expires_at.type)

TIME: sa.BindParameter[float] = sa.bindparam("p_time", type_=sa.Double())

#: A new session's row: version 1, created and updated at ``p_now``, expiring at ``p_expires``.
FRESH = {
    "app_name": sa.bindparam("p_app"),
    "user_id": sa.bindparam("p_user"),
    "session_id": sa.bindparam("p_session"),
    "state": sa.bindparam("p_state", type_=RawJSON()),
    "version": ONE,
    "created_at": NOW,
    "updated_at": NOW,
    "expires_at": EXPIRES,
}


def create_unless_live(dialect: str, update_time: Any) -> Any:
    """INSERT a new session's row (:data:`FRESH`), over an expired one too; not over a live one.

    ``update_time`` is the new row's (NULL for a store's session, ``p_time`` for
    the service's); its log starts empty. Add the ``RETURNING`` columns.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(sessions).values(**FRESH, update_time=update_time, event_count=0)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.app_name, c.user_id, c.session_id],
        set_={
            "state": ex.state,
            "version": 1,
            "created_at": ex.created_at,
            "updated_at": ex.updated_at,
            "expires_at": ex.expires_at,
            "update_time": ex.update_time,
            "event_count": 0,
        },
        where=sa.not_(LIVE),
    )


STATE_TEXT = sa.type_coerce(c.state, RawJSON()).label("state")

#: The columns a session record is built from, in ``SessionRow`` order.
RECORD = (
    STATE_TEXT,
    c.version,
    c.event_count,
    sa.type_coerce(c.update_time, RawDouble()).label("update_time"),
    c.created_at,
    c.updated_at,
    c.expires_at,
)

EVENTS_OF_KEY = sa.and_(
    events.c.app_name == sa.bindparam("p_app"),
    events.c.user_id == sa.bindparam("p_user"),
    events.c.session_id == sa.bindparam("p_session"),
)


def pg_merged(old: Any, new: Any) -> sa.ColumnElement[Any]:
    """PostgreSQL: the JSON object ``old`` with the top-level keys of ``new`` replaced.

    Only ``old`` is taken apart: ``json_each`` hands back each kept entry's
    value as the text stored (``json``, not ``jsonb``, so nothing is
    reformatted), and the new object's entries are spliced in as text. The
    new keys come as the ``p_keys`` array, so ``new`` is never parsed twice.
    """
    each = sa.func.json_each(old).table_valued("key", "value").render_derived("o")
    new_text = sa.cast(new, sa.Text)
    entry = sa.cast(sa.func.to_json(each.c.key), sa.Text) + ":" + sa.cast(each.c.value, sa.Text)
    spliced = "{" + sa.func.string_agg(entry, ",") + "," + sa.func.substr(new_text, 2)
    keys = sa.bindparam("p_keys", type_=postgresql.ARRAY(sa.Text))
    kept_and_new = (
        sa.select(sa.cast(spliced, postgresql.JSON))
        .select_from(each)
        .where(each.c.key != sa.all_(keys))
        .having(sa.and_(sa.func.count() > 0, new_text != "{}"))
        .scalar_subquery()
    )
    # Nothing kept: the new object; nothing new: the old one.
    return sa.func.coalesce(kept_and_new, sa.case((new_text == "{}", old), else_=new))


class _MergeJson(FunctionElement[Any]):
    """``statekeeper_merge_json(old, new, p_keys)``, the function migration 0003 creates."""

    name = "statekeeper_merge_json"
    type = postgresql.JSON()
    inherit_cache = True


@compiles(_MergeJson)
def _render_merge_json(element: _MergeJson, compiler: Any, **kw: Any) -> str:
    # The function lives in the tables' schema: render the schema the way the
    # sessions table is rendered, so ``schema_translate_map`` maps both.
    table = compiler.preparer.format_table(sessions)
    prefix = table[: len(table) - len(compiler.preparer.quote(sessions.name))]
    return f"{prefix}{element.name}({compiler.process(element.clause_expr, **kw)[1:-1]})"


def pg_merged_call(old: Any, new: Any) -> sa.ColumnElement[Any]:
    """PostgreSQL: :func:`pg_merged` as a call of the database's ``statekeeper_merge_json``.

    The same merge, for an upsert's ``ON CONFLICT DO UPDATE``: a distributed
    PostgreSQL (Citus) refuses a subquery anywhere in an INSERT, not a call of
    an IMMUTABLE function.
    """
    keys = sa.bindparam("p_keys", type_=postgresql.ARRAY(sa.Text))
    return _MergeJson(old, new, keys)


def sqlite_merged(old: Any, modules: int) -> sa.ColumnElement[Any]:
    """SQLite: the JSON object ``old`` with ``modules`` top-level entries set.

    ``json_set`` replaces or appends each entry and leaves every other byte of
    the stored text alone (escapes and number spellings included). Entry ``i``
    comes as the ``p_path{i}`` / ``p_value{i}`` params.
    """
    args: list[Any] = []
    for i in range(modules):
        args += [
            sa.bindparam(f"p_path{i}", type_=sa.Text),
            sa.func.json(sa.bindparam(f"p_value{i}", type_=sa.Text)),
        ]
    return sa.func.json_set(old, *args)


def scoped_text(dialect: str, user: Any) -> tuple[Any, Any]:
    """The app's and ``user``'s state as the text of JSON object members, or NULL.

    ``"k":v,...`` is spliced from each row's stored value text and its key
    quoted by the database, so the values come back exactly as written.
    """
    a, u = app_state.c, user_state.c

    def members(key: Any, value: Any) -> Any:
        if dialect == "postgresql":
            quoted = sa.cast(sa.func.to_json(key), sa.Text)
            return sa.func.string_agg(quoted + ":" + value, sa.literal_column("','"))
        return sa.func.group_concat(sa.func.json_quote(key) + ":" + value, ",")

    app = (
        sa.select(members(a.key, a.value))
        .where(a.app_name == sa.bindparam("p_app"))
        .scalar_subquery()
        .label("app_state")
    )
    users = (
        sa.select(members(u.key, u.value))
        .where(u.app_name == sa.bindparam("p_app"), u.user_id == user)
        .scalar_subquery()
        .label("user_state")
    )
    return app, users


def page_statements() -> dict[tuple[bool, bool], sa.Select[Any]]:
    """The four listing queries: with or without a user, first page or after a cursor."""
    base = (
        sa.select(
            c.app_name,
            c.user_id,
            c.session_id,
            c.version,
            c.created_at,
            c.updated_at,
            c.expires_at,
        )
        .where(c.app_name == sa.bindparam("p_app"), LIVE)
        .order_by(c.updated_at.desc(), c.user_id.desc(), c.session_id.desc())
        .limit(sa.bindparam("p_limit", type_=sa.Integer))
    )
    updated = sa.bindparam("c_updated", type_=c.updated_at.type)
    user = sa.bindparam("c_user", type_=c.user_id.type)
    session = sa.bindparam("c_session", type_=c.session_id.type)
    # Row comparisons in each index's column order, so the page is a seek.
    after_all = sa.tuple_(c.updated_at, c.user_id, c.session_id) < sa.tuple_(updated, user, session)
    after_user = sa.tuple_(c.updated_at, c.session_id) < sa.tuple_(updated, session)
    by_user = base.where(c.user_id == sa.bindparam("p_user"))
    return {
        (False, False): base,
        (False, True): base.where(after_all),
        (True, False): by_user,
        (True, True): by_user.where(after_user, c.user_id == user),
    }
