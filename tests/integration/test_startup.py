"""Many stores starting at once: every one works, each database is migrated once."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from statekeeper import AsyncSqlSession, SchemaNotReadyError, SqlSession, migrations
from statekeeper._sql import migrate as migrations_module


class Module:
    def __init__(self, value: int) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"v": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["v"]


@pytest.fixture
def created_tables() -> Iterator[Counter[str]]:
    """Count ``CREATE TABLE statekeeper_sessions`` per database, across every engine."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE STATEKEEPER_SESSIONS"):
            with lock:
                seen[str(conn.engine.url.database)] += 1

    sa.event.listen(sa.Engine, "before_cursor_execute", listen)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", listen)


async def test_eight_async_stores_first_used_at_once_all_work(
    tmp_path: Path, created_tables: Counter[str]
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    stores = [AsyncSqlSession(url, auto_migrate=True) for _ in range(8)]
    results = await asyncio.gather(
        *(s.save_session_state(f"s{i}", m=Module(i)) for i, s in enumerate(stores)),
        return_exceptions=True,
    )
    assert results == [None] * 8
    for i, store in enumerate(stores):
        assert await store.get_state(f"s{i}") == {"m": {"v": i}}
        await store.close()
    assert created_tables == {str(tmp_path / "t.db"): 1}
    assert migrations.current(url) == migrations.head()


async def test_async_callers_cancelled_mid_migration_leave_one_migration(
    tmp_path: Path, created_tables: Counter[str]
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    loop = asyncio.get_running_loop()
    first = AsyncSqlSession(url, auto_migrate=True)
    call = asyncio.ensure_future(first.set_state("c", {"a": 1}))
    cancelled_mid_upgrade = threading.Event()

    def cancel_the_caller(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE STATEKEEPER_SESSIONS"):
            loop.call_soon_threadsafe(call.cancel)
            cancelled_mid_upgrade.wait(5)  # the upgrade goes on after its caller is gone

    sa.event.listen(sa.Engine, "before_cursor_execute", cancel_the_caller)
    try:
        with pytest.raises(asyncio.CancelledError):
            await call
        # Stores started while that upgrade still runs wait for it: one migration.
        later = [AsyncSqlSession(url, auto_migrate=True) for _ in range(4)]
        writes = asyncio.gather(*(s.set_state(f"s{i}", {"i": i}) for i, s in enumerate(later)))
        await asyncio.sleep(0.2)
        cancelled_mid_upgrade.set()
        assert await writes == [1] * 4
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", cancel_the_caller)
    for store in [first, *later]:
        await store.close()
    assert created_tables == {str(tmp_path / "t.db"): 1}
    assert migrations.current(url) == migrations.head()


def _thread_work(url: str, kind: str, index: int, errors: list[BaseException]) -> None:
    try:
        if kind == "sync":
            with SqlSession(url, auto_migrate=True) as store:
                store.save_session_state(f"s{index}", m=Module(index))
                assert store.get_state(f"s{index}") == {"m": {"v": index}}
        else:

            async def work() -> None:
                async with AsyncSqlSession(url, auto_migrate=True) as store:
                    await store.save_session_state(f"s{index}", m=Module(index))
                    assert await store.get_state(f"s{index}") == {"m": {"v": index}}

            asyncio.run(work())
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.postgres
def test_threads_on_several_databases_sync_and_async_mixed(
    tmp_path: Path, pg_empty_database: str, created_tables: Counter[str]
) -> None:
    sqlite_urls = [f"sqlite:///{tmp_path / f'db{n}.db'}" for n in range(3)]
    urls = [*sqlite_urls, pg_empty_database]
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def start(url: str, kind: str, index: int) -> None:
        barrier.wait()
        _thread_work(url, kind, index, errors)

    threads = [
        threading.Thread(target=start, args=(urls[i % 4], ("sync", "async")[i % 2], i))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    for url in urls:
        assert migrations.current(url) == migrations.head()
    databases = [str(tmp_path / f"db{n}.db") for n in range(3)]
    databases.append(str(sa.make_url(pg_empty_database).database))
    assert created_tables == dict.fromkeys(databases, 1)  # each migrated once, on its own


def test_stores_on_a_database_at_head_run_no_migration(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.upgrade(sqlite_url)
    runs: list[str] = []
    monkeypatch.setattr(
        migrations_module, "upgrade_unlocked", lambda *args: runs.append("upgrade") or []
    )
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        barrier.wait()
        _thread_work(sqlite_url, "sync", index, errors)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert runs == []


def test_first_use_costs_one_read(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    with SqlSession(sqlite_url, auto_migrate=True) as store:
        statements: list[str] = []
        sa.event.listen(
            store.engine, "before_cursor_execute", lambda c, cur, sql, *a: statements.append(sql)
        )
        store.get_state("s")
        first = len(statements)
        store.get_state("s")
    assert (first, len(statements) - first) == (2, 1)
    assert "statekeeper_alembic_version" in statements[0]


def test_threads_share_one_in_memory_database_safely() -> None:
    with SqlSession("sqlite://", auto_migrate=True) as store:
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for n in range(25):
                    store.merge_state("shared", {f"t{index}": n})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert store.get_state("shared") == {f"t{i}": 24 for i in range(8)}


async def test_async_tasks_share_one_in_memory_database() -> None:
    async with AsyncSqlSession("sqlite:///:memory:", auto_migrate=True) as store:
        await asyncio.gather(*(store.merge_state("shared", {f"t{i}": i}) for i in range(16)))
        assert await store.get_state("shared") == {f"t{i}": i for i in range(16)}
    async with AsyncSqlSession("sqlite:///:memory:", auto_migrate=True) as other:
        assert await other.get_state("shared") is None  # each store's memory is its own


def test_a_store_per_request_shares_the_engine_of_the_url(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    with SqlSession(sqlite_url) as long_lived:
        long_lived.set_state("s", {"a": 1})
        for _ in range(3):
            with SqlSession(sqlite_url) as per_request:
                assert per_request.engine is long_lived.engine
                assert per_request.get_state("s") == {"a": 1}
        assert long_lived.get_state("s") == {"a": 1}  # others closing did not close it


def test_a_store_per_request_on_a_checked_engine_runs_no_revision_read(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    with SqlSession(sqlite_url) as long_lived:
        long_lived.set_state("s", {"a": 1})  # the first store reads the revision
        statements: list[str] = []
        sa.event.listen(
            long_lived.engine,
            "before_cursor_execute",
            lambda c, cur, sql, *a: statements.append(sql),
        )
        with SqlSession(sqlite_url) as per_request:
            assert per_request.get_state("s") == {"a": 1}
    assert len(statements) == 1
    assert "statekeeper_alembic_version" not in statements[0]


def test_after_a_downgrade_new_stores_check_the_revision_again(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    with SqlSession(sqlite_url) as long_lived:
        long_lived.set_state("s", {"a": 1})
        migrations.downgrade(sqlite_url, "base")
        with pytest.raises(SchemaNotReadyError, match="db upgrade"):
            SqlSession(sqlite_url).get_state("s")
        migrations.upgrade(sqlite_url)
        with SqlSession(sqlite_url) as per_request:
            assert per_request.get_state("s") is None  # the downgrade dropped the data


async def test_async_stores_per_request_share_the_revision_check(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    async with AsyncSqlSession(sqlite_url) as long_lived:
        await long_lived.set_state("s", {"a": 1})
        statements: list[str] = []
        sa.event.listen(
            long_lived.engine,  # SQLite: the sync engine the calls run on
            "before_cursor_execute",
            lambda c, cur, sql, *a: statements.append(sql),
        )
        for _ in range(3):
            async with AsyncSqlSession(sqlite_url) as per_request:
                assert await per_request.get_state("s") == {"a": 1}
    assert len(statements) == 3
