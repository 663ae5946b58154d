"""Concurrent writers lose nothing: real processes, and async tasks in one process."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import Any

import pytest

from statekeeper import AsyncSqlSession, ConflictError, SqlSession

WRITERS = 4
ROUNDS = 15


class Counter:
    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "padding": "x" * 2000}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


def _writer(url: str, app: str, index: int, start: Any) -> None:
    store = SqlSession(url, app_name=app)
    start.wait()
    try:
        for i in range(1, ROUNDS + 1):
            store.save_session_state("shared", user_id="u", **{f"m{index}": Counter(i)})
    finally:
        store.close()


@pytest.mark.slow
def test_processes_saving_different_modules_lose_nothing(db_url: str) -> None:
    app = "concurrency"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(db_url, app, i, start)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    with SqlSession(db_url, app_name=app) as store:
        state = store.get_state("shared", user_id="u")
        assert state is not None
        assert {name: s["value"] for name, s in state.items()} == {
            f"m{i}": ROUNDS for i in range(WRITERS)
        }
        info = store.list_sessions("u").items[0]
        assert info.version == WRITERS * ROUNDS
        store.delete_session("shared", user_id="u")


async def test_async_tasks_merging_one_session_lose_nothing(db_url: str) -> None:
    async with AsyncSqlSession(
        db_url, app_name="tasks", engine_options={"pool_size": 4, "max_overflow": 0}
    ) as store:

        async def write(index: int) -> None:
            for i in range(1, 6):
                await store.merge_state("s", {f"m{index}": {"i": i, "nul": "\x00"}})

        await asyncio.gather(*(write(i) for i in range(8)))
        state = await store.get_state("s")
        assert state == {f"m{i}": {"i": 5, "nul": "\x00"} for i in range(8)}
        assert (await store.list_sessions()).items[0].version == 40


async def test_compare_and_swap_lets_exactly_one_writer_win(db_url: str) -> None:
    async with AsyncSqlSession(
        db_url, app_name="cas", engine_options={"pool_size": 4, "max_overflow": 0}
    ) as store:
        version = await store.set_state("s", {"n": 0})
        results = await asyncio.gather(
            *(store.set_state("s", {"n": i}, expected_version=version) for i in range(1, 9)),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, int)]
        assert wins == [version + 1]
        assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, int))


def test_purge_keeps_a_session_revived_while_it_waits(pg_database: str) -> None:
    """PostgreSQL: a purge batch blocked on a row that a writer revives does not delete it."""
    import datetime as dt
    import threading
    import time

    import sqlalchemy as sa

    from statekeeper._sql.schema import sessions

    app = "purge-revive"
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    engine = sa.create_engine(pg_database, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(sessions),
            [
                {
                    "app_name": app,
                    "user_id": "u",
                    "session_id": sid,
                    "state": {},
                    "version": 1,
                    "created_at": past,
                    "updated_at": past,
                    "expires_at": past,
                }
                for sid in ("revived", "gone")
            ],
        )
    writer = engine.connect()
    writer.begin()  # revives "revived" and holds its row lock until commit
    writer.execute(
        sa.update(sessions)
        .where(sessions.c.app_name == app, sessions.c.session_id == "revived")
        .values(expires_at=past + dt.timedelta(days=1))
    )
    counted: list[int] = []
    store = SqlSession(pg_database, app_name=app)
    purge = threading.Thread(target=lambda: counted.append(store.purge_expired()))
    purge.start()
    try:
        waiting = sa.text(  # the purge's connection, waiting for the writer's transaction
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with engine.connect() as watcher:
            deadline = time.monotonic() + 120  # generous: a busy machine starts threads late
            while not watcher.execute(waiting).scalar_one():  # until the purge waits for the lock
                if time.monotonic() > deadline:
                    pytest.fail("the purge never waited for the writer's lock")
                time.sleep(0.01)
        writer.commit()
        purge.join(timeout=30)
    finally:
        writer.close()
        purge.join(timeout=30)
        store.close()
        engine.dispose()
    assert counted == [1]  # "gone" only
    with SqlSession(pg_database, app_name=app) as check:
        assert check.session_exists("revived", "u")
        assert not check.session_exists("gone", "u")
