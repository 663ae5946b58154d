"""The body of statekeeper's Alembic ``env.py``, shared by the packaged and the repository layout.

Where the settings come from, first match wins:

- database URL: ``config.attributes["connection"]`` (set by
  :mod:`statekeeper.migrations`), ``sqlalchemy.url`` of the ini section,
  ``-x url=...``, the ``STATEKEEPER_URL`` environment variable;
- schema: ``config.attributes["schema"]``, ``-x schema=...``, ``schema`` of
  the ini section.

Online, every upgrade or downgrade is one transaction: on PostgreSQL it first
takes an advisory lock (replicas starting together queue there), on SQLite it
starts with ``BEGIN IMMEDIATE`` (the database's write lock). Each process then
reads the version table and applies only what is left, so the history runs once.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import context

from .._sql.schema import ADVISORY_LOCK_KEY, TABLE_PREFIX, VERSION_TABLE, metadata
from .._sql.statements.citus import SEQUENTIAL

if TYPE_CHECKING:
    from collections.abc import Iterator

_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}


def ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate filter of statekeeper's own history: only its tables, not its version table."""
    table_name = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return bool(table_name and table_name.startswith(TABLE_PREFIX) and table_name != VERSION_TABLE)


def _schema(config: Any) -> str | None:
    schema = (
        config.attributes.get("schema")
        or context.get_x_argument(as_dictionary=True).get("schema")
        or config.get_main_option("schema")
    )
    return str(schema) if schema else None


def _url(config: Any) -> str:
    url = (
        config.get_main_option("sqlalchemy.url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("STATEKEEPER_URL")
    )
    if not url:
        raise ValueError(
            "no database URL for statekeeper's migrations: pass --url (or -x url=... to alembic), "
            "set STATEKEEPER_URL, or set sqlalchemy.url in the alembic.ini section"
        )
    return str(url)


def _check_schema(schema: str | None, dialect: str) -> None:
    if schema is None:
        return
    if dialect != "postgresql":
        raise ValueError(f"schema {schema!r}: schemas need PostgreSQL, this database is {dialect}")
    if not schema.isidentifier():
        raise ValueError(f"schema {schema!r}: use a plain identifier (letters, digits, _)")


def _record_steps(config: Any) -> Any:
    """Alembic ``on_version_apply`` hook: note each revision applied or undone, if asked to."""
    applied = config.attributes.get("applied")
    if applied is None:
        return None

    def on_version_apply(*, step: Any, **_: Any) -> None:
        applied.append(step.up_revision_id)

    return on_version_apply


def _configure(schema: str | None, **kwargs: Any) -> None:
    context.configure(
        on_version_apply=_record_steps(context.config),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=ours,
        include_schemas=False,
        compare_type=True,
        # SQLite alters most columns by copying the table; batch operations do
        # that there and emit plain ALTERs on PostgreSQL.
        render_as_batch=True,
        **kwargs,
    )


@contextlib.contextmanager
def _sqlite_transaction(connection: sa.Connection) -> Iterator[None]:
    """Run the block in ``BEGIN IMMEDIATE``: DDL included, atomic and serialised."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    saved = dbapi_connection.isolation_level
    # The driver must not open transactions of its own (it would not cover DDL).
    dbapi_connection.isolation_level = None
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    finally:
        dbapi_connection.isolation_level = saved


def _postgresql_prepare(connection: sa.Connection, schema: str | None) -> None:
    """Take the upgrade lock, then create the schema if it is missing."""
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    # On Citus, DDL on distributed tables followed by a reference table's
    # creation (or write: the version table) in one transaction must run one
    # shard at a time. Plain PostgreSQL keeps the setting as a placeholder.
    connection.exec_driver_sql(SEQUENTIAL)
    if schema is not None:
        found = connection.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        ).first()
        if found is None:
            quoted = connection.dialect.identifier_preparer.quote_schema(schema)
            connection.exec_driver_sql(f"CREATE SCHEMA {quoted}")


@contextlib.contextmanager
def _postgresql_transaction(connection: sa.Connection, schema: str | None) -> Iterator[None]:
    """Run the block in a transaction holding the upgrade lock, the schema in place."""
    # READ COMMITTED: after the lock wait, each statement sees what the
    # process before us committed.
    connection.execution_options(isolation_level="READ COMMITTED")
    with connection.begin():
        _postgresql_prepare(connection, schema)
        yield


def _run_online(connection: sa.Connection, schema: str | None) -> None:
    dialect = connection.dialect.name
    _check_schema(schema, dialect)
    if schema is not None:
        connection.execution_options(schema_translate_map={None: schema})
    if connection.in_transaction():  # the caller's transaction: the caller commits
        transaction: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if dialect == "postgresql":
            _postgresql_prepare(connection, schema)
    elif dialect == "postgresql":
        transaction = _postgresql_transaction(connection, schema)
    elif dialect == "sqlite":
        transaction = _sqlite_transaction(connection)
    else:
        raise ValueError(f"statekeeper supports SQLite and PostgreSQL, not {dialect!r}")
    with transaction:
        # Configured inside our transaction, Alembic leaves commit and rollback to us.
        _configure(schema, connection=connection)
        context.run_migrations()


def _run_offline(config: Any, schema: str | None) -> None:
    url = sa.make_url(_url(config))
    dialect = _DIALECTS.get(url.get_backend_name())
    if dialect is None:
        raise ValueError(
            f"statekeeper supports SQLite and PostgreSQL, not {url.get_backend_name()!r}"
        )
    _check_schema(schema, dialect)
    _configure(schema, dialect_name=dialect, literal_binds=True)
    with context.begin_transaction():
        if schema is not None:
            context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            # The migrations name no schema; the tables land in the first one searched.
            context.execute(f'SET LOCAL search_path TO "{schema}"')
        context.run_migrations()


def run_env() -> None:
    """Run the migrations Alembic asked for: as SQL text (offline) or on a database."""
    config = context.config
    schema = _schema(config)
    if context.is_offline_mode():
        _run_offline(config, schema)
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection, schema)
        return
    from .._sql.engine import migration_engine

    engine = migration_engine(_url(config))
    try:
        with engine.connect() as conn:
            _run_online(conn, schema)
    finally:
        engine.dispose()
