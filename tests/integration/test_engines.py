"""Engines: connection settings, callers' engines, schema readiness."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import (
    AsyncSessionService,
    AsyncSqlSession,
    ConflictError,
    SchemaNotReadyError,
    SqlSession,
    migrations,
)


def test_sqlite_connections_get_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    with SqlSession(sqlite_url) as store, store.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        }
    assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1}


async def test_async_sqlite_store_runs_on_the_sync_engine_of_its_url(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    async with AsyncSqlSession(sqlite_url) as store:
        with SqlSession(sqlite_url) as twin:
            # One engine and pool for both twins on the URL, bound to no event loop.
            assert isinstance(store.engine, sa.Engine)
            assert store.engine.pool is twin.engine.pool
        await store.set_state("s", {"a": 1})
        with store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1}


def test_callers_engine_is_used_and_not_disposed(db_url: str) -> None:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with SqlSession(engine, app_name="mine") as store:
        store.set_state("s", {"a": 1})
    # The store is closed; the caller's engine still works and sees the data.
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM statekeeper_sessions WHERE app_name = 'mine'")
        ).scalar()
    assert count == 1
    assert engine.get_execution_options().get("isolation_level") is None
    engine.dispose()


async def test_callers_async_engine_is_used_and_not_disposed(db_url: str) -> None:
    url = sa.make_url(db_url)
    url = url.set(
        drivername="sqlite+aiosqlite"
        if url.get_backend_name() == "sqlite"
        else "postgresql+psycopg"
    )
    engine = create_async_engine(url)
    async with AsyncSqlSession(engine, app_name="mine-async") as store:
        await store.set_state("s", {"a": 1})
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                sa.text("SELECT count(*) FROM statekeeper_sessions WHERE app_name = 'mine-async'")
            )
        ).scalar()
    assert count == 1
    await engine.dispose()


def test_unmigrated_database_names_the_command(sqlite_url: str) -> None:
    with SqlSession(sqlite_url) as store, pytest.raises(SchemaNotReadyError) as info:
        store.get_state("s")
    assert "statekeeper db upgrade --url" in str(info.value)
    assert "auto_migrate=True" in str(info.value)


async def test_unmigrated_database_async(sqlite_url: str) -> None:
    async with AsyncSqlSession(sqlite_url) as store:
        with pytest.raises(SchemaNotReadyError, match="statekeeper db upgrade"):
            await store.get_state("s")


def test_auto_migrate(sqlite_url: str) -> None:
    with SqlSession(sqlite_url, auto_migrate=True) as store:
        assert store.set_state("s", {"a": 1}) == 1
    assert migrations.current(sqlite_url) == migrations.head()


async def test_auto_migrate_async(sqlite_url: str) -> None:
    async with AsyncSqlSession(sqlite_url, auto_migrate=True) as store:
        assert await store.set_state("s", {"a": 1}) == 1
    assert migrations.current(sqlite_url) == migrations.head()


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        SqlSession("mysql://root@127.0.0.1/test")


@pytest.mark.parametrize("schema", ["agents", None])
def test_schema_needs_postgres(sqlite_url: str, schema: Any) -> None:
    if schema is None:
        SqlSession(sqlite_url).close()
        return
    with pytest.raises(ValueError, match="schema"):
        SqlSession(sqlite_url, schema=schema)


async def test_callers_engine_gets_every_behaviour(db_url: str, facade: str) -> None:
    url = sa.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite" if facade == "async" else "sqlite")
    else:
        url = url.set(drivername="postgresql+psycopg")
    if facade == "async":
        engine: Any = create_async_engine(url)
        store: Any = AsyncSqlSession(engine, app_name="callers")
    else:
        engine = sa.create_engine(url)
        store = SqlSession(engine, app_name="callers")

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(store, name)(*args, **kwargs)
        return await result if facade == "async" else result

    assert await call("set_state", "s", {"a": "\x00", "b": 1}) == 1
    assert await call("merge_state", "s", {"b": 2}, expected_version=1) == 2
    with pytest.raises(ConflictError):
        await call("merge_state", "s", {"b": 3}, expected_version=1)
    assert await call("get_state", "s") == {"a": "\x00", "b": 2}
    assert [i.session_id for i in (await call("list_sessions")).items] == ["s"]
    assert await call("delete_session", "s") is True
    await call("close")
    if facade == "async":
        await engine.dispose()
    else:
        engine.dispose()


async def test_async_sqlite_call_runs_whole_in_one_worker_thread(sqlite_url: str) -> None:
    import threading

    migrations.upgrade(sqlite_url)
    async with AsyncSessionService(sqlite_url, app_name="hop") as service:
        threads: list[tuple[int, str]] = []
        sa.event.listen(
            service.engine,
            "before_cursor_execute",
            lambda c, cur, sql, *a: threads.append((threading.get_ident(), sql.split()[0])),
        )
        await service.create_session("s", "u")
        threads.clear()
        await service.append_event("s", {"id": "e1", "timestamp": 1.0}, "u")
    # The append's BEGIN IMMEDIATE ... COMMIT, every statement seen, all in one
    # thread that is not the event loop's.
    statements = [sql for _, sql in threads]
    assert statements[0] == "BEGIN"
    assert statements[-1] == "COMMIT"
    assert len({ident for ident, _ in threads}) == 1
    assert threads[0][0] != threading.get_ident()


async def test_async_sqlite_call_waiting_for_the_write_lock_leaves_the_loop_free(
    sqlite_url: str,
) -> None:
    import asyncio
    import sqlite3

    migrations.upgrade(sqlite_url)
    holder = sqlite3.connect(sa.make_url(sqlite_url).database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
    try:
        async with AsyncSqlSession(sqlite_url) as store:
            write = asyncio.ensure_future(store.set_state("s", {"a": 1}))
            for _ in range(20):  # the loop runs this task meanwhile, 0.2 s of it
                await asyncio.sleep(0.01)
            assert not write.done()  # the write still waits for the lock, off the loop
            holder.execute("COMMIT")
            assert await write == 1
            assert await store.get_state("s") == {"a": 1}
    finally:
        holder.close()


@pytest.mark.parametrize("pool", ["SingletonThreadPool", "StaticPool"])
async def test_async_store_refuses_a_sqlite_engine_whose_pool_threads_would_share(
    sqlite_url: str, pool: str
) -> None:
    engine = sa.create_engine(sqlite_url, poolclass=getattr(sa.pool, pool))
    try:
        with pytest.raises(ValueError, match=f"{pool}.*Pass the URL instead"):
            AsyncSqlSession(engine)
    finally:
        engine.dispose()
    # The sync store takes it as before, and an async store takes the URL.
    with SqlSession(sa.create_engine("sqlite://"), auto_migrate=True) as store:
        store.set_state("s", {"a": 1})
        assert store.get_state("s") == {"a": 1}


async def test_async_store_on_a_postgres_sync_engine_names_the_twin(pg_database: str) -> None:
    engine = sa.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://"))
    with pytest.raises(TypeError, match="for the twin SqlSession"):
        AsyncSqlSession(engine)
    engine.dispose()
