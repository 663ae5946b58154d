"""What only the Redis store must guarantee: AgentScope keys, ASCII values, Redis-side expiry."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from statekeeper import (
    AsyncRedisSession,
    ConflictError,
    DatabaseUnavailableError,
    RedisSession,
    StoreClosedError,
)


class Recording(redis.Redis):
    """A client that notes the name of every command it sends outside pipelines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)


@pytest.fixture
def client(redis_url: str) -> Any:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _agentscope_key(prefix: str, user: str, session: str) -> str:
    return f"{prefix}user_id:{user}:session:{session}:state"


def test_reads_and_takes_over_agentscope_keys(
    redis_url: str, redis_prefix: str, client: Any
) -> None:
    legacy = {"agent": {"name": "helper", "memory": [{"text": "日本"}]}, "toolkit": {"n": 1}}
    key = _agentscope_key(redis_prefix, "alice", "s1")
    client.set(key, json.dumps(legacy, ensure_ascii=False))  # as AgentScope 1.x writes it
    store = RedisSession(redis_url, key_prefix=redis_prefix)
    assert store.session_exists("s1", user_id="alice")
    assert store.get_state("s1", user_id="alice") == legacy
    assert store.list_sessions("alice").items == ()  # not indexed until written

    assert store.merge_state("s1", {"toolkit": {"n": 2}}, user_id="alice") == 2
    assert store.get_state("s1", user_id="alice") == {**legacy, "toolkit": {"n": 2}}
    assert client.exists(key) == 0  # taken over: one copy only
    [info] = store.list_sessions("alice").items
    assert (info.session_id, info.version) == ("s1", 2)

    client.set(_agentscope_key(redis_prefix, "bob", "s2"), json.dumps({"a": 1}))
    assert store.delete_session("s2", user_id="bob") is True
    assert store.get_state("s2", user_id="bob") is None
    store.close()


def test_agentscope_key_and_expected_version(
    redis_url: str, redis_prefix: str, client: Any
) -> None:
    client.set(_agentscope_key(redis_prefix, "", "s"), json.dumps({"a": 1}))
    store = RedisSession(redis_url, key_prefix=redis_prefix)
    with pytest.raises(ConflictError):
        store.set_state("s", {"a": 2}, expected_version=0)  # it exists: version 1
    assert store.set_state("s", {"a": 3}, expected_version=1) == 2
    assert store.get_state("s") == {"a": 3}
    store.close()


def test_values_are_stored_as_ascii_json(redis_url: str, redis_prefix: str, client: Any) -> None:
    store = RedisSession(redis_url, key_prefix=redis_prefix)
    state = {"m": {"nul": "a\x00b", "lone": "\ud800", "wide": "🚀"}}
    store.set_state("s", state)
    [key] = list(client.scan_iter(match=redis_prefix + "statekeeper:s:*"))
    raw = client.hget(key, "m:m")
    assert raw.isascii()
    assert b"\\u0000" in raw
    assert b"\\ud800" in raw
    assert store.get_state("s") == state
    store.close()


def test_redis_expires_sessions_and_loads_slide_the_expiry(
    redis_url: str, redis_prefix: str, client: Any
) -> None:
    store = RedisSession(redis_url, key_prefix=redis_prefix, ttl=100)
    store.set_state("s", {"a": 1})
    [key] = list(client.scan_iter(match=redis_prefix + "statekeeper:s:*"))
    # The expiry is rounded up to the next millisecond: never a moment early.
    assert 99_000 < client.pttl(key) <= 100_001
    client.pexpire(key, 5_000)
    store.get_state("s")
    assert client.pttl(key) > 99_000  # the load moved it forward
    forever = RedisSession(redis_url, key_prefix=redis_prefix)
    forever.merge_state("s", {"b": 2})
    assert client.pttl(key) == -1
    store.close()
    forever.close()


def test_listing_never_scans_the_keyspace(redis_url: str, redis_prefix: str) -> None:
    client = Recording.from_url(redis_url)
    store = RedisSession(client, key_prefix=redis_prefix)
    for i in range(5):
        store.set_state(f"s{i}", {}, user_id="u")
    client.sent.clear()
    page = store.list_sessions("u", limit=2)
    store.list_sessions(limit=2, cursor=page.next_cursor)
    store.purge_expired()
    assert "ZRANGE" in client.sent
    assert not {"KEYS", "SCAN"} & set(client.sent)
    store.close()
    assert client.ping()  # a caller's client stays open
    client.close()


def test_closed_and_unreachable(redis_url: str, redis_prefix: str) -> None:
    store = RedisSession(redis_url, key_prefix=redis_prefix)
    store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        store.get_state("s")
    down = RedisSession("redis://127.0.0.1:1/0")
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        down.set_state("s", {})


async def test_async_tasks_merge_and_compare_and_swap(redis_url: str, redis_prefix: str) -> None:
    async with AsyncRedisSession(redis_url, key_prefix=redis_prefix) as store:

        async def write(index: int) -> None:
            for i in range(1, 6):
                await store.merge_state("s", {f"m{index}": {"i": i, "nul": "\x00"}})

        await asyncio.gather(*(write(i) for i in range(8)))
        assert await store.get_state("s") == {f"m{i}": {"i": 5, "nul": "\x00"} for i in range(8)}
        version = (await store.list_sessions()).items[0].version
        assert version == 40
        results = await asyncio.gather(
            *(store.set_state("s", {"n": i}, expected_version=version) for i in range(8)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, int)] == [version + 1]
        assert sum(isinstance(r, ConflictError) for r in results) == 7
    with pytest.raises(StoreClosedError):
        await store.get_state("s")


WRITERS, ROUNDS = 4, 15


class Counter:
    def __init__(self, value: int) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "padding": "x" * 2000}


def _writer(url: str, prefix: str, index: int, start: Any) -> None:
    store = RedisSession(url, key_prefix=prefix)
    start.wait()
    for i in range(1, ROUNDS + 1):
        store.save_session_state("shared", user_id="u", **{f"m{index}": Counter(i)})
    store.close()


@pytest.mark.slow
def test_processes_saving_different_modules_lose_nothing(redis_url: str, redis_prefix: str) -> None:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(redis_url, redis_prefix, i, start))
        for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with RedisSession(redis_url, key_prefix=redis_prefix) as store:
        state = store.get_state("shared", user_id="u")
        assert state is not None
        assert {n: s["value"] for n, s in state.items()} == {
            f"m{i}": ROUNDS for i in range(WRITERS)
        }
        assert store.list_sessions("u").items[0].version == WRITERS * ROUNDS


def test_an_async_store_works_from_one_event_loop_after_another(
    redis_url: str, redis_prefix: str, client: Any
) -> None:
    # An app that runs each request in asyncio.run (a sync framework, a task
    # queue): the store made once, at import, serves every loop, and the
    # clients of closed loops are let go, not kept open.
    store = AsyncRedisSession(redis_url, key_prefix=redis_prefix)

    async def request(n: int) -> Any:
        await store.merge_state("s", {f"m{n}": n}, user_id="u")
        return await store.get_state("s", user_id="u")

    def connections() -> int:
        return sum(1 for c in client.client_list() if c.get("cmd") != "client|list")

    before = connections()
    for n in range(12):
        assert asyncio.run(request(n)) == {f"m{k}": k for k in range(n + 1)}
    gc.collect()  # a closed loop's sockets close when their transports are collected
    assert connections() - before <= 1  # the last loop's client, which the store keeps
    asyncio.run(store.close())


def test_an_async_store_serves_loops_of_several_threads_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    store = AsyncRedisSession(redis_url, key_prefix=redis_prefix)

    async def work(t: int) -> list[Any]:
        got = []
        for i in range(20):
            await store.merge_state("s", {f"t{t}": i}, user_id=f"u{t}")
            got.append((await store.get_state("s", user_id=f"u{t}"))[f"t{t}"])
        return got

    with ThreadPoolExecutor(4) as pool:  # a loop in each thread, all started at once
        results = list(pool.map(lambda t: asyncio.run(work(t)), range(4)))
    assert results == [list(range(20))] * 4
