"""The store's operations, written once and free of I/O.

Each operation is a generator: it yields a :class:`Call` (a prebuilt SQLAlchemy
Core statement and its parameters), or :data:`BEGIN` / :data:`COMMIT`, and is
sent back the buffered result. ``_drivers.run`` and ``_drivers.arun`` drive
the same generator on a sync or an async connection, so the SQL, the dialect
differences and the semantics live here alone.

Connections run in autocommit: a single statement is its own transaction, with
no BEGIN/COMMIT round trips. Every write is one statement; only a merge the
one-statement form cannot express reads before it writes, inside a
transaction that locks the row (``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import codec
from ._records import SessionInfo, SessionPage
from ._schema import ID_LENGTH, RawJSON, sessions, version_table
from .errors import ConflictError, SchemaNotReadyError

__all__ = [
    "BEGIN",
    "COMMIT",
    "Call",
    "Context",
    "Op",
    "check_schema",
    "delete_session",
    "get_state",
    "list_sessions",
    "merge_state",
    "purge_expired",
    "session_exists",
    "set_state",
    "validate_id",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One statement to execute, with its parameters."""

    statement: sa.Executable
    params: Mapping[str, Any]


class Result(Protocol):
    """What an operation is sent back for a :class:`Call`: the rows, fully fetched."""

    def first(self) -> Any:
        """Return the first row, or ``None``."""

    def all(self) -> Any:
        """Return every row."""


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
    def sql(self) -> _Statements:
        """The prebuilt statements for this dialect."""
        return _statements(self.dialect)

    def expires(self, now: dt.datetime) -> dt.datetime | None:
        """When a session saved or loaded ``now`` expires."""
        return None if self.ttl is None else now + self.ttl


def validate_id(value: object, what: str, *, allow_empty: bool) -> str:
    """Return ``value`` if it is a usable id, else raise ``ValueError`` saying why."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    if len(value) > ID_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; at most {ID_LENGTH} are allowed")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL character, which databases cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} {value!r} contains a lone surrogate; ids must be valid text"
        ) from None
    return value


# --------------------------------------------------------------------------- statements

t = sessions
c = t.c
_KEY = sa.and_(
    c.app_name == sa.bindparam("p_app"),
    c.user_id == sa.bindparam("p_user"),
    c.session_id == sa.bindparam("p_session"),
)


_NOW = sa.bindparam("p_now", type_=c.updated_at.type)
#: True for a row that has not expired at ``p_now``.
_LIVE = sa.or_(c.expires_at.is_(None), c.expires_at > _NOW)
_STATE = sa.type_coerce(c.state, RawJSON()).label("state")


def _state_param() -> sa.BindParameter[str]:
    return sa.bindparam("p_state", type_=RawJSON())


def _pg_merged(old: Any, new: Any) -> sa.ColumnElement[Any]:
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


def _sqlite_merged(old: Any, modules: int) -> sa.ColumnElement[Any]:
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


@dataclass(frozen=True)
class _Statements:
    """Every statement of one dialect, built once so SQLAlchemy's compiled cache always hits."""

    select: sa.Select[Any]
    select_locked: sa.Select[Any]
    touch: sa.Executable
    exists: sa.Select[Any]
    version: sa.Select[Any]
    delete: sa.Executable
    purge: sa.Executable
    replace: sa.Executable
    create: sa.Executable
    update_cas: sa.Executable
    schema_version: sa.Select[Any]
    pages: dict[tuple[bool, bool], sa.Select[Any]]


_EXPIRES = sa.bindparam("p_expires", type_=c.expires_at.type)
_FRESH = {
    "app_name": sa.bindparam("p_app"),
    "user_id": sa.bindparam("p_user"),
    "session_id": sa.bindparam("p_session"),
    "state": _state_param(),
    "version": 1,
    "created_at": _NOW,
    "updated_at": _NOW,
    "expires_at": _EXPIRES,
}
# In an upsert's SET, a subquery naming `excluded` as a table would add it to
# its own FROM; as a literal it refers to the row that was not inserted.
_EXCLUDED_STATE: Any = sa.literal_column("excluded.state")


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(t).values(_FRESH)
    if dialect == "sqlite":
        return sqlite.insert(t).values(_FRESH)
    raise ValueError(f"unsupported dialect {dialect!r}")  # pragma: no cover


def _upsert(dialect: str, state_on_live: Any) -> Any:
    """INSERT the fresh row, or update a live one with ``state_on_live``.

    An expired row reads as absent, so it is replaced as if it were new.
    """
    stmt = _insert(dialect)
    ex = stmt.excluded
    live = _LIVE
    return stmt.on_conflict_do_update(
        index_elements=[c.app_name, c.user_id, c.session_id],
        set_={
            "state": sa.case((live, state_on_live), else_=ex.state),
            "version": sa.case((live, c.version + 1), else_=1),
            "created_at": sa.case((live, c.created_at), else_=ex.created_at),
            "updated_at": ex.updated_at,
            "expires_at": ex.expires_at,
        },
    ).returning(c.version)


def _create(dialect: str) -> Any:
    """INSERT the fresh row unless a live one exists (then return nothing)."""
    stmt = _insert(dialect)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.app_name, c.user_id, c.session_id],
        set_={
            "state": ex.state,
            "version": 1,
            "created_at": ex.created_at,
            "updated_at": ex.updated_at,
            "expires_at": ex.expires_at,
        },
        where=sa.not_(_LIVE),
    ).returning(c.version)


def _update_cas(state: Any) -> Any:
    """UPDATE a live row at version ``p_expected`` to ``state``."""
    return (
        sa.update(t)
        .where(_KEY, _LIVE, c.version == sa.bindparam("p_expected"))
        .values(state=state, version=c.version + 1, updated_at=_NOW, expires_at=_EXPIRES)
        .returning(c.version)
    )


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(
        select=sa.select(_STATE, c.version).where(_KEY, _LIVE),
        select_locked=sa.select(_STATE, c.version, _LIVE.label("live"))
        .where(_KEY)
        .with_for_update(),
        touch=sa.update(t)
        .where(_KEY, _LIVE)
        .values(expires_at=_EXPIRES)
        .returning(_STATE, c.version),
        exists=sa.select(sa.literal(1)).where(_KEY, _LIVE),
        version=sa.select(c.version).where(_KEY, _LIVE),
        # Liveness is judged in Python: SQLite 3.40 miscomputes `x IS NULL` in
        # a DELETE's RETURNING clause.
        delete=sa.delete(t).where(_KEY).returning(c.expires_at),
        purge=sa.delete(t)
        .where(c.app_name == sa.bindparam("p_app"), c.expires_at <= _NOW)
        .returning(c.version),
        replace=_upsert(dialect, _EXCLUDED_STATE),
        create=_create(dialect),
        update_cas=_update_cas(_state_param()),
        schema_version=sa.select(version_table.c.version_num),
        pages=_page_statements(),
    )


#: SQLSTATEs of PostgreSQL's JSON functions refusing ``\\u0000`` (22P05) or a lone
#: surrogate (22P02) in a stored state; that merge takes the locked path.
_JSON_REFUSED = frozenset({"22P05", "22P02"})

#: SQLite merges with one ``json_set`` path per module; more modules than this
#: in one call, or a name its path syntax cannot quote, take the locked path.
SQLITE_MERGE_MAX_MODULES = 8


@functools.cache
def _merge_statements(dialect: str, modules: int) -> tuple[Any, Any]:
    """The one-statement merge of ``modules`` modules: as an upsert and as a CAS update."""
    if dialect == "postgresql":
        return (
            _upsert("postgresql", _pg_merged(c.state, _EXCLUDED_STATE)),
            _update_cas(_pg_merged(c.state, sa.cast(_state_param(), postgresql.JSON))),
        )
    merged = _sqlite_merged(c.state, modules)
    return _upsert("sqlite", merged), _update_cas(merged)


def _one_statement_merge(dialect: str, modules: Mapping[str, Any]) -> bool:
    if dialect == "postgresql":
        return True
    return 0 < len(modules) <= SQLITE_MERGE_MAX_MODULES and not any(  # quotable in a JSON path
        '"' in name or "\\" in name for name in modules
    )


# --------------------------------------------------------------------------- operations


def _params(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> dict[str, Any]:
    return {"p_app": ctx.app_name, "p_user": user_id, "p_session": session_id, "p_now": now}


def _conflict(expected: int, actual: int, session_id: str) -> ConflictError:
    state = f"is at version {actual}" if actual else "does not exist"
    return ConflictError(
        f"session {session_id!r} {state}, not the expected version {expected}; "
        "nothing was written: reload it and retry",
        expected=expected,
        actual=actual,
    )


def _current_version(ctx: Context, params: Mapping[str, Any]) -> Op[int]:
    row = (yield Call(ctx.sql.version, params)).first()
    return 0 if row is None else int(row[0])


def get_state(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> Op[Any]:
    """Return the decoded state, or ``None``; with a ``ttl``, a load also refreshes it."""
    params = _params(ctx, user_id, session_id, now)
    if ctx.ttl is None:
        row = (yield Call(ctx.sql.select, params)).first()
    else:
        params["p_expires"] = ctx.expires(now)
        row = (yield Call(ctx.sql.touch, params)).first()
    return None if row is None else codec.decode(row[0])


def session_exists(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> Op[bool]:
    """Return whether a live session exists (without refreshing its ``ttl``)."""
    row = (yield Call(ctx.sql.exists, _params(ctx, user_id, session_id, now))).first()
    return row is not None


def delete_session(ctx: Context, user_id: str, session_id: str, now: dt.datetime) -> Op[bool]:
    """Delete the session; return whether a live one was there."""
    row = (yield Call(ctx.sql.delete, _params(ctx, user_id, session_id, now))).first()
    return row is not None and (row[0] is None or row[0] > now)


def purge_expired(ctx: Context, now: dt.datetime) -> Op[int]:
    """Delete this app's expired sessions; return how many."""
    result = yield Call(ctx.sql.purge, {"p_app": ctx.app_name, "p_now": now})
    return len(result.all())


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
        raise _conflict(expected, (yield from _current_version(ctx, params)), session_id)
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
    if _one_statement_merge(ctx.dialect, modules):
        upsert, cas = _merge_statements(ctx.dialect, len(modules))
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
            if getattr(exc.orig, "sqlstate", None) not in _JSON_REFUSED:
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
            raise _conflict(expected, actual, session_id)
        if live:
            merged = codec.decode(row[0])
            merged.update(modules)
            params["p_state"] = codec.encode(merged)
            params["p_expected"] = actual
            written = (yield Call(ctx.sql.update_cas, params)).first()
        else:
            params["p_state"] = text
            written = (yield Call(ctx.sql.create, params)).first()
        if written is not None:
            yield COMMIT
            return int(written[0])


# --------------------------------------------------------------------------- listing


def _encode_cursor(info: SessionInfo) -> str:
    raw = json.dumps([info.updated_at.isoformat(), info.user_id, info.session_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, user_id, session_id = json.loads(raw)
        updated = dt.datetime.fromisoformat(stamp)
        if (
            updated.tzinfo is None
            or not isinstance(user_id, str)
            or not isinstance(session_id, str)
        ):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(
            f"invalid cursor {cursor!r}: pass the next_cursor of a page from list_sessions"
        ) from None
    return updated, user_id, session_id


def list_sessions(
    ctx: Context, user_id: str | None, limit: int, cursor: str | None, now: dt.datetime
) -> Op[SessionPage]:
    """Return one page of live sessions, newest update first, keyset-paginated."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    params: dict[str, Any] = {"p_app": ctx.app_name, "p_now": now, "p_limit": limit + 1}
    if user_id is not None:
        params["p_user"] = user_id
    if cursor is not None:
        params["c_updated"], params["c_user"], params["c_session"] = _decode_cursor(cursor)
    statement = ctx.sql.pages[user_id is not None, cursor is not None]
    rows = (yield Call(statement, params)).all()
    items = tuple(SessionInfo(*row) for row in rows[:limit])
    next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
    return SessionPage(items, next_cursor)


def _page_statements() -> dict[tuple[bool, bool], sa.Select[Any]]:
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
        .where(c.app_name == sa.bindparam("p_app"), _LIVE)
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


# --------------------------------------------------------------------------- schema


def check_schema(ctx: Context, where: str, schema: str | None) -> Op[None]:
    """Raise :class:`SchemaNotReadyError` unless the database is at the code's revision."""
    from . import migrations  # Alembic is imported only when a store first checks

    try:
        rows = (yield Call(ctx.sql.schema_version, {})).all()
    except sa.exc.DBAPIError:  # no version table: no statekeeper tables at all
        rows = []
    found = str(rows[0][0]) if rows else None
    message = migrations.not_ready_message(found, where, migrations.upgrade_command(where, schema))
    if message is not None:
        raise SchemaNotReadyError(message)
