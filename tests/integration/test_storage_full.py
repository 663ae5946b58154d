"""A backend out of memory or disk: ``StorageFullError``, nothing written, the session whole.

Redis runs as a server of the test's own (``maxmemory 2mb``, ``noeviction``)
on a free loopback port, so filling it touches nobody else's data. SQLite is
filled with a caller's engine whose ``max_page_count`` is tiny.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import IN_CI, SyncAsAsync

from statekeeper import (
    AsyncRedisSession,
    AsyncSqlSession,
    RedisSession,
    SqlSession,
    StorageFullError,
    migrations,
)

BIG = "x" * 200_000  # a module's state too big for what is left


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def small_redis() -> Iterator[str]:
    """A Redis server of this module's own with 2 MB of memory and no eviction."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: the out-of-memory tests must run)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--daemonize", "no"]
    server = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    try:
        while True:  # poll until it answers: start-up takes longer on a busy machine
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)


def _fill(url: str) -> Any:
    """Fill the server until it refuses writes; return a client to free it with."""
    import redis

    client = redis.Redis.from_url(url)
    i = 0
    while True:
        try:
            client.set(f"filler:{i}", "f" * 50_000)
        except redis.exceptions.OutOfMemoryError:
            break
        i += 1
    # Just under the limit, freed client buffers could let a write through:
    # put the limit well below what is used, so every write is refused.
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - 512 * 1024))
    return client


def _free(client: Any) -> None:
    client.config_set("maxmemory", "2mb")
    client.delete(*client.keys("filler:*"))
    client.close()


class Big:
    """A state module too big for the memory left."""

    def state_dict(self) -> dict[str, Any]:
        return {"blob": BIG}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Unused."""


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_redis_out_of_memory_is_storage_full_and_writes_nothing(
    small_redis: str, facade: str
) -> None:
    import redis

    redis.Redis.from_url(small_redis).flushall()  # this module's own server only
    if facade == "sync":
        store: Any = SyncAsAsync(RedisSession(small_redis, app_name="full"))
    else:
        store = AsyncRedisSession(small_redis, app_name="full")
    version = await store.set_state("s", {"agent": {"n": 1}, "memory": [1, 2]}, user_id="u")
    before = await store.get_state("s", user_id="u")
    filler = _fill(small_redis)
    try:
        writes = [
            store.save_session_state("s", user_id="u", agent=Big()),
            store.merge_state("s", {"agent": BIG}, user_id="u"),
            store.merge_state("s", {"tiny": 1}, user_id="u", expected_version=version),
            store.set_state("s", {"agent": BIG}, user_id="u"),
            store.set_state("s", {}, user_id="u", expected_version=version),
            store.set_state("new", {"agent": BIG}, user_id="u"),
        ]
        for write in writes:
            with pytest.raises(StorageFullError, match="out of memory") as exc:
                await write
            assert type(exc.value.__cause__).__name__ == "OutOfMemoryError"
            assert await store.get_state("s", user_id="u") == before
        assert not await store.session_exists("new", user_id="u")
        [info] = (await store.list_sessions("u")).items
        assert info.version == version
    finally:
        _free(filler)
    # With memory free again, the same write goes through on the same store.
    assert await store.merge_state("s", {"agent": {"n": 2}}, user_id="u") == version + 1
    await store.close()


def _tiny_sqlite(url: str, facade: str) -> Any:
    """A caller's engine on ``url`` that may grow the file by a few pages only."""
    engine: Any = (
        sa.create_engine(url)
        if facade == "sync"
        else create_async_engine(sa.make_url(url).set(drivername="sqlite+aiosqlite"))
    )
    sync_engine = engine if facade == "sync" else engine.sync_engine

    @sa.event.listens_for(sync_engine, "connect")
    def _limit(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages + 4}")
        cursor.close()

    return engine


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_sqlite_disk_full_is_storage_full_and_writes_nothing(
    tmp_path: Path, facade: str
) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    migrations.upgrade(url)
    engine = _tiny_sqlite(url, facade)
    kind = SqlSession if facade == "sync" else AsyncSqlSession
    store: Any = kind(engine, app_name="full")
    store = SyncAsAsync(store) if facade == "sync" else store
    try:
        version = await store.set_state("s", {"agent": {"n": 1}}, user_id="u")
        before = await store.get_state("s", user_id="u")
        for write in (
            store.merge_state("s", {"agent": BIG * 5}, user_id="u"),
            store.set_state("s", {"agent": BIG * 5}, user_id="u", expected_version=version),
            store.save_session_state("s", user_id="u", agent=Big()),
            store.set_state("new", {"agent": BIG * 5}, user_id="u"),
        ):
            with pytest.raises(StorageFullError, match="database or disk is full"):
                await write
            assert await store.get_state("s", user_id="u") == before
        assert not await store.session_exists("new", user_id="u")
        assert await store.merge_state("s", {"small": 1}, user_id="u") == version + 1
    finally:
        await store.close()
        result = engine.dispose()
        if result is not None:
            await result
