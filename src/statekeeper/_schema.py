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

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

__all__ = [
    "HEAD_REVISION",
    "ID_LENGTH",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "RawJSON",
    "UTCDateTime",
    "metadata",
    "sessions",
    "version_table",
]

TABLE_PREFIX = "statekeeper_"
VERSION_TABLE = "statekeeper_alembic_version"
ID_LENGTH = 255

#: The revision the code expects; a test keeps it equal to the migrations' head.
HEAD_REVISION = "0001"

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


#: The migrations' version table, for reading the revision in statements.
#: Kept out of ``metadata``: Alembic owns it, and a ``Table`` (unlike
#: ``sa.table()``) follows ``schema_translate_map``.
version_table = sa.Table(
    VERSION_TABLE,
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), primary_key=True),
)
