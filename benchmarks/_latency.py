"""Per-operation latency: statekeeper beside the raw driver (the floor), batch for batch.

Ops: ``write`` (``set_state``), ``merge`` (``save_session_state`` of two
modules; its floor is the plain upsert of the same two modules) and ``read``
(``get_state``). The floor runs in autocommit on one connection and one
cursor: ``json.dumps`` + one ``INSERT ... ON CONFLICT DO UPDATE``, or one
point ``SELECT`` + ``json.loads``, on the same table under its own app_name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import _common
from _common import Module, Read, Report, Settings, Write

from statekeeper import AsyncSqlSession, SqlSession

OPS = ("write", "merge", "read")
SK_APP = "bench"
FLOOR_APP = "bench_floor"
USER = "alice"
SESSIONS_PER_CASE = 8
#: The floor's driver per (database, API).
DRIVERS = {
    ("sqlite", "sync"): "sqlite3",
    ("postgresql", "sync"): "psycopg",
    ("sqlite", "async"): "sqlite3 in a thread",
    ("postgresql", "async"): "psycopg async",
}


def _cases() -> Iterator[tuple[str, int, str, dict[str, Any], list[str]]]:
    """Each (size, JSON bytes, op, state, session ids) to measure."""
    for size, target in _common.SIZES.items():
        modules = _common.agent_modules(target)
        nbytes = _common.json_size(modules)
        for op in OPS:
            yield size, nbytes, op, modules, [f"{op}-{size}-{i}" for i in range(SESSIONS_PER_CASE)]


def _calls(
    store: Any, fwrite: Write, fread: Read, op: str, modules: dict[str, Any], keys: list[str]
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The statekeeper call and the floor call of one op, each rotating over ``keys``.

    On the async store and floor each call returns the coroutine to await.
    """
    agent, memory = Module(modules["agent"]), Module(modules["memory"])
    sk_key, floor_key = _common.rotating(keys), _common.rotating(keys)
    sk = {
        "write": lambda: store.set_state(sk_key(), modules, user_id=USER),
        "merge": lambda: store.save_session_state(sk_key(), USER, agent=agent, memory=memory),
        "read": lambda: store.get_state(sk_key(), user_id=USER),
    }[op]
    if op == "read":
        return sk, lambda: fread(floor_key())
    return sk, lambda: fwrite(floor_key(), json.dumps(modules))


def _row(db: str, api: str, op: str, size: str, nbytes: int) -> dict[str, Any]:
    floor_name = DRIVERS[db, api]
    return {"db": db, "api": api, "op": op, "size": size, "json_bytes": nbytes, "floor": floor_name}


def run_sync(db: str, url: str, settings: Settings, report: Report) -> None:
    """Measure every op and size with ``SqlSession`` against ``sqlite3`` / psycopg."""
    store, conn = SqlSession(url, app_name=SK_APP), _common.connect(url)
    fwrite, fread = _common.floor(conn, FLOOR_APP, USER)
    try:
        for size, nbytes, op, modules, keys in _cases():
            for key in keys:  # every session exists: writes are updates, reads hit
                store.set_state(key, modules, user_id=USER)
                fwrite(key, json.dumps(modules))
            pair = _common.measure_pair(*_calls(store, fwrite, fread, op, modules, keys), settings)
            report(_row(db, "sync", op, size, nbytes) | pair.summary())
    finally:
        conn.close()
        store.close()


async def run_async(db: str, url: str, settings: Settings, report: Report) -> None:
    """Measure every op and size with ``AsyncSqlSession`` against the async floor.

    SQLite: sqlite3, each operation in one thread hop; PostgreSQL: psycopg async.
    """
    store, conn = AsyncSqlSession(url, app_name=SK_APP), await _common.aconnect(url)
    fwrite, fread = await _common.afloor(conn, FLOOR_APP, USER)
    try:
        for size, nbytes, op, modules, keys in _cases():
            for key in keys:
                await store.set_state(key, modules, user_id=USER)
                await fwrite(key, json.dumps(modules))
            pair = await _common.ameasure_pair(
                *_calls(store, fwrite, fread, op, modules, keys), settings
            )
            report(_row(db, "async", op, size, nbytes) | pair.summary())
    finally:
        await conn.close()
        await store.close()
