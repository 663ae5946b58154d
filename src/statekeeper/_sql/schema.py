"""The tables statekeeper owns, as SQLAlchemy Core objects.

Private: the migrations create these tables; the stores never call
``create_all``. Every name starts with ``statekeeper_`` so a host app can tell
ours from its own.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator, UserDefinedType

from .._rules import ID_LENGTH

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

__all__ = [
    "ADVISORY_LOCK_KEY",
    "HEAD_REVISION",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "RawDouble",
    "RawJSON",
    "UTCDateTime",
    "app_state",
    "events",
    "metadata",
    "sessions",
    "user_state",
    "version_table",
]

TABLE_PREFIX = "statekeeper_"
VERSION_TABLE = "statekeeper_alembic_version"

#: Key of the PostgreSQL advisory lock that serialises upgrades (and Citus distribution).
ADVISORY_LOCK_KEY = 0x5354_4B50  # "STKP"

#: The revision the code expects; a test keeps it equal to the migrations' head.
HEAD_REVISION = "0003"

metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s"})


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is timezone-aware UTC in Python on every dialect.

    PostgreSQL stores ``timestamptz``; SQLite, which has no time zones, stores
    the UTC wall time as fixed-width text, which sorts in time order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Convert to UTC; naive values are refused, they are a bug."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: statekeeper stores UTC, pass an aware one")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite, write a UTC datetime's text in one C call; anything else as above.

        ``isoformat(" ", "microseconds")`` writes the fixed-width text SQLAlchemy's
        SQLite ``DATETIME`` stores (``2026-01-02 03:04:05.000006``), and a UTC
        datetime's ends in ``+00:00``, cut off. A statement binds the time of
        a call at every place it appears (SQLite's parameters are positional):
        seven in an upsert, each converted by itself.
        """
        chain = super().bind_processor(dialect)
        if dialect.name != "sqlite" or chain is None:
            return chain
        datetime, utc = dt.datetime, dt.timezone.utc

        def process(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is utc:
                return value.isoformat(" ", "microseconds")[:-6]
            return chain(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """On SQLite, parse the stored text with the C ``fromisoformat`` (no regex)."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        utc, parse = dt.timezone.utc, dt.datetime.fromisoformat

        def process(value: Any) -> dt.datetime | None:
            if value is None:
                return None
            if isinstance(value, str):
                stamp = parse(value)
                return stamp.replace(tzinfo=utc) if stamp.tzinfo is None else stamp.astimezone(utc)
            return self.process_result_value(value, dialect)

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. from a textual query
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(dt.timezone.utc)  # type: ignore[no-any-return]


class RawJSON(UserDefinedType[str]):
    """JSON column values passed through as text, encoded and decoded by statekeeper's codec.

    Used in statements (not in the table definition) so neither SQLAlchemy nor
    the driver parses or re-encodes the state: one encode per write, one decode
    per read. On PostgreSQL the column is ``json`` (not ``jsonb``), which keeps
    the text verbatim, so ``\\u0000`` and lone surrogates survive.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """Render ``JSON``."""
        return "JSON"

    def column_expression(self, colexpr: Any) -> Any:
        """Read the column as text so the driver does not parse it."""
        return sa.cast(colexpr, sa.Text)


class RawDouble(UserDefinedType[float]):
    """A double-precision float read as the driver returns it (a Python ``float``, exact).

    Used in statements: SQLAlchemy's own float types want the column's type
    code to pick a result processor, which the direct execution path does not pass.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """Render ``DOUBLE PRECISION``."""
        return "DOUBLE PRECISION"


sessions = sa.Table(
    "statekeeper_sessions",
    metadata,
    sa.Column("app_name", sa.String(ID_LENGTH), nullable=False),
    sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("session_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("state", sa.JSON(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    # The event-log service's exact float update time (seconds since the
    # epoch); NULL for sessions only SqlSession wrote.
    sa.Column("update_time", sa.Double(), nullable=True),
    # How many events the session's log holds: the seq of the newest one.
    sa.Column("event_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("app_name", "user_id", "session_id"),
    sa.Index("ix_statekeeper_sessions_expires_at", "expires_at"),
    # Serves "a user's sessions, newest update first" and its keyset pages.
    sa.Index(
        "ix_statekeeper_sessions_user_updated", "app_name", "user_id", "updated_at", "session_id"
    ),
    # Serves an app's sessions of every user, newest update first.
    sa.Index(
        "ix_statekeeper_sessions_app_updated", "app_name", "updated_at", "user_id", "session_id"
    ),
)

#: The event log: one JSON document per event, keyed by session and ``seq``
#: (1, 2, ... in insertion order), with its exact float timestamp beside it.
events = sa.Table(
    "statekeeper_events",
    metadata,
    sa.Column("app_name", sa.String(ID_LENGTH), nullable=False),
    sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("session_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("timestamp", sa.Double(), nullable=False),
    # json, not jsonb: the document's text is kept verbatim.
    sa.Column("event", sa.JSON(), nullable=False),
    # The primary key serves "the last N events" (a backward scan by seq).
    sa.PrimaryKeyConstraint("app_name", "user_id", "session_id", "seq"),
    # Serves "the events at or after T".
    sa.Index("ix_statekeeper_events_time", "app_name", "user_id", "session_id", "timestamp", "seq"),
)

#: State shared by every session of an app (``app:`` keys), one row per key.
#: ``value`` is the key's value as JSON text in a text column: a JSON column
#: on SQLite has numeric affinity and would rewrite a bare number's text
#: (``-0.0``, integers past 64 bits).
app_state = sa.Table(
    "statekeeper_app_state",
    metadata,
    sa.Column("app_name", sa.String(ID_LENGTH), nullable=False),
    sa.Column("key", sa.String(ID_LENGTH), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("app_name", "key"),
)

#: State shared by the sessions of one user of an app (``user:`` keys), one
#: row per key. A table apart from ``app_state``, so user ``""`` is not the app.
user_state = sa.Table(
    "statekeeper_user_state",
    metadata,
    sa.Column("app_name", sa.String(ID_LENGTH), nullable=False),
    sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("key", sa.String(ID_LENGTH), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("app_name", "user_id", "key"),
)


#: The migrations' version table, for reading the revision in statements.
#: Kept out of ``metadata``: Alembic owns it, and a ``Table`` (unlike
#: ``sa.table()``) follows ``schema_translate_map``.
version_table = sa.Table(
    VERSION_TABLE,
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), primary_key=True),
)
