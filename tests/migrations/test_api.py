"""The programmatic API: current/check, SchemaNotReadyError, auto_migrate, the async twins."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import AsyncSqlSession, SchemaNotReadyError, SqlSession, migrations
from statekeeper._sql.schema import HEAD_REVISION, VERSION_TABLE


def test_check_names_the_command_to_run(sqlite_url: str) -> None:
    with pytest.raises(SchemaNotReadyError) as caught:
        migrations.check(sqlite_url)
    message = str(caught.value)
    assert "no statekeeper tables" in message
    assert f"statekeeper db upgrade --url '{sqlite_url}'" in message

    migrations.upgrade(sqlite_url)
    migrations.check(sqlite_url)  # at head: no error


def test_check_hides_the_password() -> None:
    command = migrations.upgrade_command("postgresql://app:s3cret@db/app", schema="agents")
    assert command == "statekeeper db upgrade --url 'postgresql://app:***@db/app' --schema agents"


def test_check_tells_an_older_library_to_upgrade_itself(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaNotReadyError, match="newer statekeeper migrated it"):
        migrations.check(sqlite_url)


def test_store_on_unmigrated_database_names_the_command(empty_url: str) -> None:
    with SqlSession(empty_url) as store, pytest.raises(SchemaNotReadyError) as caught:
        store.get_state("s1")
    assert "statekeeper db upgrade --url" in str(caught.value)
    assert migrations.current(empty_url) is None  # nothing was created behind our back


async def test_async_store_on_unmigrated_database_names_the_command(empty_url: str) -> None:
    async with AsyncSqlSession(empty_url) as store:
        with pytest.raises(SchemaNotReadyError, match="statekeeper db upgrade --url"):
            await store.get_state("s1")


def test_auto_migrate_sync(empty_url: str) -> None:
    with SqlSession(empty_url, auto_migrate=True) as store:
        store.set_state("s1", {"a": 1})
        assert store.get_state("s1") == {"a": 1}
    assert migrations.current(empty_url) == HEAD_REVISION


async def test_auto_migrate_async(empty_url: str) -> None:
    async with AsyncSqlSession(empty_url, auto_migrate=True) as store:
        await store.set_state("s1", {"a": 1})
        assert await store.get_state("s1") == {"a": 1}
    assert migrations.current(empty_url) == HEAD_REVISION


async def test_async_twins(empty_url: str) -> None:
    engine = create_async_engine(
        sa.make_url(empty_url).set(
            drivername="sqlite+aiosqlite"
            if empty_url.startswith("sqlite")
            else "postgresql+psycopg"
        )
    )
    try:
        assert await migrations.acurrent(engine) is None
        with pytest.raises(SchemaNotReadyError):
            await migrations.acheck(engine)
        await migrations.aupgrade(engine)
        assert await migrations.acurrent(engine) == HEAD_REVISION
        await migrations.acheck(engine)
        await migrations.adowngrade(engine, "base")
        assert await migrations.acurrent(engine) is None
    finally:
        await engine.dispose()


async def test_async_twins_on_the_engine_of_an_async_sqlite_store(sqlite_url: str) -> None:
    # On a SQLite URL, an async store's engine is a sync Engine: the async
    # helpers take it and run in a worker thread.
    async with AsyncSqlSession(sqlite_url) as store:
        assert isinstance(store.engine, sa.Engine)
        assert await migrations.acurrent(store.engine) is None
        with pytest.raises(SchemaNotReadyError):
            await migrations.acheck(store.engine)
        assert await migrations.aupgrade(store.engine) == ["0001", "0002", "0003"]
        await migrations.acheck(store.engine)
        await store.set_state("s", {"a": 1})
        assert await migrations.adowngrade(store.engine, "0002") == ["0003"]
        assert await migrations.acurrent(store.engine) == "0002"


def test_upgrade_on_a_callers_engine_keeps_it_usable(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        migrations.upgrade(engine)
        assert migrations.current(engine) == HEAD_REVISION
        with engine.connect() as conn:  # the pooled connection is not left in a transaction
            assert conn.execute(sa.text("SELECT count(*) FROM statekeeper_sessions")).scalar() == 0
        with SqlSession(engine) as store:
            store.set_state("s1", {"a": 1})
    finally:
        engine.dispose()


def test_sync_functions_refuse_an_async_engine(sqlite_url: str) -> None:
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://"))
    with pytest.raises(TypeError, match="AsyncEngine"):
        migrations.upgrade(engine)  # type: ignore[arg-type]


def test_schema_needs_postgresql(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="schemas need PostgreSQL"):
        migrations.upgrade(sqlite_url, schema="agents")


def test_include_object_keeps_host_autogenerate_off_our_tables() -> None:
    ours = sa.Table("statekeeper_sessions", sa.MetaData(), sa.Column("x", sa.Integer))
    theirs = sa.Table("orders", sa.MetaData(), sa.Column("x", sa.Integer))
    include = migrations.include_object
    assert not include(ours, "statekeeper_sessions", "table", True, None)
    assert not include(ours, VERSION_TABLE, "table", True, None)
    assert not include(ours.c.x, "x", "column", True, None)
    assert not include(
        sa.Index("ix_statekeeper_x", ours.c.x), "ix_statekeeper_x", "index", True, None
    )
    assert include(theirs, "orders", "table", True, None)
    assert include(theirs.c.x, "x", "column", False, None)
    assert include(sa.Index("ix_orders_x", theirs.c.x), "ix_orders_x", "index", True, None)


def test_offline_sql_has_the_create_table() -> None:
    for url in ("sqlite://", "postgresql://"):
        sql = migrations.upgrade_sql(url)
        assert "CREATE TABLE statekeeper_sessions" in sql
        assert f"INSERT INTO {VERSION_TABLE}" in sql
        assert "alembic_version " not in sql.replace(VERSION_TABLE, "")


def test_offline_sql_with_schema_creates_it_and_puts_tables_there() -> None:
    sql = migrations.upgrade_sql("postgresql://", schema="agents")
    assert 'CREATE SCHEMA IF NOT EXISTS "agents"' in sql
    assert 'SET LOCAL search_path TO "agents"' in sql
    assert "CREATE TABLE agents.statekeeper_alembic_version" in sql
    assert sql.index("SET LOCAL search_path") < sql.index("CREATE TABLE statekeeper_sessions")


def test_offline_downgrade_sql() -> None:
    sql = migrations.upgrade_sql("postgresql://", f"{HEAD_REVISION}:base", downgrade=True)
    assert "DROP TABLE statekeeper_sessions" in sql
