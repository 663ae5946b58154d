"""Cancelled async calls: no hang, no connection left in an unknown state, no half-written session.

Each case runs in a subprocess with a hard timeout (and ``faulthandler``
dumping its threads just before), so a hang fails the test instead of
blocking the run. The child cancels every async method of a store or of the
service hundreds of times at seeded random points (``asyncio.wait_for`` with
a small timeout, or ``task.cancel()``, once or twice, after a random number
of loop iterations), then checks what a user would: every later call works,
the pool has no connection checked out, and a counter written only with
``expected_version`` has as many increments as its version says (a
cancelled write applied whole or not at all).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

#: A child that has not finished by then is hung.
HARD_TIMEOUT = 90

CANCELS = 120  # per store or service, per driver


# --------------------------------------------------------------------------- the child


async def _cancel_at_random(rnd: random.Random, make: Callable[[], Awaitable[Any]]) -> Any:
    """Run one call, cancelled at a random point (or not at all); return its result or None."""
    if rnd.random() < 0.5:
        try:
            return await asyncio.wait_for(make(), timeout=rnd.uniform(0, 0.004))
        except (asyncio.TimeoutError, TimeoutError):
            return None
    task = asyncio.ensure_future(make())
    for _ in range(rnd.randrange(40)):
        await asyncio.sleep(0)
    task.cancel()
    if rnd.random() < 0.3:
        await asyncio.sleep(0)
        task.cancel()  # a second cancellation, as a task group's or a server's
    try:
        return await task
    except asyncio.CancelledError:
        return None


async def _version(store: Any) -> int:
    page = await store.list_sessions(limit=100)
    return next(i.version for i in page.items if i.session_id == "counter")


async def _counter(store: Any) -> tuple[dict[str, Any], int]:
    """The counter's state and its version, read between two reads of the same version."""
    while True:  # a cancelled call's write may land in between: read again
        before = await _version(store)
        state = await store.get_state("counter")
        if await _version(store) == before:
            return state, before


async def _bump(store: Any, rnd: random.Random) -> bool:
    """Increment the counter session through expected_version; True when reported done."""
    state, version = await _counter(store)
    try:
        await _cancel_at_random(
            rnd,
            lambda: store.set_state(
                "counter", {"count": state["count"] + 1}, expected_version=version
            ),
        )
    except Exception as exc:
        if type(exc).__name__ != "ConflictError":
            raise
        return False
    return (await store.get_state("counter"))["count"] == state["count"] + 1


async def _hammer_store(store: Any, rnd: random.Random) -> dict[str, int]:
    """Cancel every method of a store; return the counter's figures."""
    from statekeeper import StateModule

    class Memory(StateModule):
        def __init__(self) -> None:
            super().__init__()
            self.items: list[int] = []
            self.register_state("items")

    memory = Memory()
    await store.set_state("counter", {"count": 0})
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.get_state("counter"),
        lambda: store.set_state("other", {"n": rnd.random(), "blob": "x" * 2000}),
        lambda: store.merge_state("other", {"m": rnd.random()}),
        lambda: store.save_session_state("modules", memory=memory),
        lambda: store.load_session_state("modules", memory=memory),
        lambda: store.session_exists("other"),
        lambda: store.list_sessions(limit=10),
        lambda: store.delete_session("other"),
        lambda: store.purge_expired(),
    ]
    reported = 0
    for i in range(CANCELS):
        if i % 3 == 0:
            reported += await _bump(store, rnd)
        else:
            await _cancel_at_random(rnd, rnd.choice(calls))
    return {"reported": reported}


async def _check_store(store: Any, figures: dict[str, int]) -> None:
    """Every call works after the cancellations, and the counter is whole."""
    state, version = await _counter(store)
    assert set(state) == {"count"}, state
    # Version 1 is the counter's creation; every applied increment is one version.
    assert state["count"] == version - 1, (state, version)
    assert figures["reported"] <= state["count"] <= CANCELS, (figures, state)
    await store.set_state("other", {"after": True})
    assert await store.get_state("other") == {"after": True}
    assert await store.merge_state("other", {"more": 1}) >= 2
    assert await store.delete_session("other")


async def _hammer_service(service: Any, rnd: random.Random) -> dict[str, int]:
    """Cancel every method of the service; return the counter's figures."""
    created = await service.create_session("counter", "u", state={"count": 0})
    reported = 0
    for i in range(CANCELS):
        if i % 3 == 0:
            record = await service.get_session("counter", "u")
            count = record.state["count"]
            append = service.append_event(
                "counter",
                {"n": count},
                "u",
                state_delta={"count": count + 1, "user:seen": count},
                expected_version=record.version,
            )
            try:
                await _cancel_at_random(rnd, lambda: append)  # noqa: B023 (awaited at once)
            except Exception as exc:
                if type(exc).__name__ != "ConflictError":
                    raise
                continue
            reported += (await service.get_session("counter", "u")).state["count"] == count + 1
            continue
        sid = f"s{rnd.randrange(3)}"
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: service.create_session(None, "u", state={"app:k": 1, "k": 2}),
            lambda: service.get_session("counter", "u", recent=5),
            lambda: service.list_sessions("u", limit=5),
            lambda: service.delete_session(sid, "u"),  # noqa: B023 (awaited at once)
            lambda: service.get_app_state(),
            lambda: service.get_user_state("u"),
        ]
        await _cancel_at_random(rnd, rnd.choice(calls))
    return {"reported": reported, "version0": created.version}


async def _check_service(service: Any, figures: dict[str, int]) -> None:
    """Every call works after the cancellations, and the event log agrees with the state."""
    record = await service.get_session("counter", "u")
    count = record.state["count"]
    assert [e.data["n"] for e in record.events] == list(range(count)), record.events
    assert record.version - figures["version0"] == count, (record.version, count)
    assert figures["reported"] <= count <= CANCELS
    assert record.state["user:seen"] == count - 1 if count else True
    await service.append_event("counter", {"n": count}, "u", state_delta={"count": count + 1})
    assert (await service.get_session("counter", "u")).state["count"] == count + 1


def _sql_stores(target: str, where: str, app: str) -> tuple[Any, Any, Any]:
    """The store under test, a second one on the same engine, and the engine (or None)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from statekeeper import AsyncSessionService, AsyncSqlSession

    kind, facade = target.split("-")
    cls = AsyncSqlSession if facade == "store" else AsyncSessionService
    engine: Any = where
    if kind == "asyncpg":
        engine = create_async_engine(where.replace("+psycopg://", "+asyncpg://"))
    elif kind == "aiosqlite":  # a caller's engine; from the URL, sqlite3 in a worker thread
        engine = create_async_engine(where.replace("sqlite://", "sqlite+aiosqlite://"))
    return cls(engine, app_name=app), cls(engine, app_name=app), engine


async def _child(target: str, where: str, seed: int) -> None:
    rnd = random.Random(seed)
    app = f"cancel-{uuid.uuid4().hex[:8]}"
    kind, facade = target.split("-")
    if kind in ("json", "redis"):
        from statekeeper import AsyncJSONSession, AsyncRedisSession

        def make() -> Any:
            if kind == "json":
                return AsyncJSONSession(where)
            url, prefix = where.split("|")
            return AsyncRedisSession(url, key_prefix=prefix)

        store, later = make(), make()
        figures = await _hammer_store(store, rnd)
        await store.close()
        await _check_store(later, figures)
        await later.close()
        return
    store, later, engine = _sql_stores(target, where, app)
    if facade == "store":
        figures = await _hammer_store(store, rnd)
    else:
        figures = await _hammer_service(store, rnd)
    await later.get_app_state() if facade == "service" else await later.get_state("counter")
    await store.close()  # waits for the operations of cancelled calls
    assert later.engine.pool.checkedout() == 0, later.engine.pool.status()
    await (_check_store(later, figures) if facade == "store" else _check_service(later, figures))
    assert later.engine.pool.checkedout() == 0, later.engine.pool.status()
    await later.close()
    if not isinstance(engine, str):
        await engine.dispose()


def _shutdown_child(where: str, seed: int) -> None:
    """End event loops with writes in flight (asyncio.run cancels them); later loops still write."""
    from statekeeper import AsyncSqlSession

    rnd = random.Random(seed)

    async def writer(store: Any, n: int) -> None:
        while True:
            await store.merge_state("s", {f"w{n}": rnd.random()})

    async def run_once() -> None:
        store = AsyncSqlSession(where)
        await store.set_state("s", {})
        writers = [asyncio.ensure_future(writer(store, n)) for n in range(3)]
        for _ in range(rnd.randrange(200)):
            await asyncio.sleep(0)
        assert not any(w.done() for w in writers)  # left for asyncio.run to cancel

    for _ in range(10):
        asyncio.run(run_once())


if __name__ == "__main__":
    faulthandler.dump_traceback_later(HARD_TIMEOUT - 10, exit=True)
    target, where, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if target == "shutdown":
        _shutdown_child(where, seed)
    else:
        for surface in (
            ("store", "service")
            if target in ("sqlite", "aiosqlite", "psycopg", "asyncpg")
            else ("store",)
        ):
            asyncio.run(_child(f"{target}-{surface}", where, seed))
    print(json.dumps({"ok": target}))


# --------------------------------------------------------------------------- the tests


def _run_child(target: str, where: str, seed: int = 14) -> None:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__)), target, where, str(seed)],
            capture_output=True,
            text=True,
            timeout=HARD_TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{target}: hung (no end after {HARD_TIMEOUT} s)\n{exc.stderr}")
    assert done.returncode == 0, f"{target} failed:\n{done.stdout}\n{done.stderr[-6000:]}"


def _sqlite(tmp_path: Path) -> str:
    from statekeeper import migrations

    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    migrations.upgrade(url)
    return url


def test_cancelled_calls_on_sqlite(tmp_path: Path) -> None:
    _run_child("sqlite", _sqlite(tmp_path))  # each call in a worker thread, on sqlite3


def test_cancelled_calls_on_a_callers_aiosqlite_engine(tmp_path: Path) -> None:
    _run_child("aiosqlite", _sqlite(tmp_path))


@pytest.mark.parametrize("pg_driver", ["psycopg", "asyncpg"])
def test_cancelled_calls_on_postgresql(pg_driver: str, pg_database: str) -> None:
    _run_child(pg_driver, pg_database)


def test_cancelled_calls_on_redis(redis_url: str, redis_prefix: str) -> None:
    _run_child("redis", f"{redis_url}|{redis_prefix}")


def test_cancelled_calls_on_json_files(tmp_path: Path) -> None:
    _run_child("json", str(tmp_path / "sessions"))


def test_loops_ended_with_writes_in_flight(tmp_path: Path) -> None:
    _run_child("shutdown", _sqlite(tmp_path))
