"""Per-operation latency: statekeeper beside the raw driver (the floor), batch for batch.

Ops: ``write`` (``set_state``), ``merge`` (``save_session_state`` of two
modules; its floor is the plain upsert of the same two modules) and ``read``
(``get_state``). The floor runs in autocommit on one connection and one
cursor: ``json.dumps`` + one ``INSERT ... ON CONFLICT DO UPDATE``, or one
point ``SELECT`` + ``json.loads``, on the same table under its own app_name.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import (
    SIZES,
    Module,
    Settings,
    agent_modules,
    aiosqlite_connect,
    ameasure_pair,
    json_size,
    measure_pair,
    rotating,
    select_sql,
    sqlite_connect,
    sqlite_stamp,
    upsert_sql,
    utcnow,
)

from statekeeper import AsyncSqlSession, SqlSession

OPS = ("write", "merge", "read")
SK_APP = "bench"
FLOOR_APP = "bench_floor"
USER = "alice"
SESSIONS_PER_CASE = 8

Report = Callable[[dict[str, Any]], None]
SyncFloor = tuple[Callable[[str, str], object], Callable[[str], object]]
AsyncFloor = tuple[Callable[[str, str], Awaitable[object]], Callable[[str], Awaitable[object]]]


def _keys(op: str, size: str) -> list[str]:
    return [f"{op}-{size}-{i}" for i in range(SESSIONS_PER_CASE)]


def _row(db: str, api: str, op: str, size: str, nbytes: int, floor: str) -> dict[str, Any]:
    return {"db": db, "api": api, "op": op, "size": size, "json_bytes": nbytes, "floor": floor}


# --------------------------------------------------------------------------- sync


def _sqlite_floor(path: Path) -> tuple[SyncFloor, Callable[[], None]]:
    conn = sqlite_connect(path)
    cur = conn.cursor()
    upsert, select = upsert_sql("qmark"), select_sql("qmark")

    def write(key: str, text: str) -> object:
        now = sqlite_stamp(utcnow())
        return cur.execute(upsert, (FLOOR_APP, USER, key, text, now, now)).fetchone()

    def read(key: str) -> object:
        row = cur.execute(select, (FLOOR_APP, USER, key, sqlite_stamp(utcnow()))).fetchone()
        return json.loads(row[0])

    return (write, read), conn.close


def _pg_floor(url: str) -> tuple[SyncFloor, Callable[[], None]]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    cur = conn.cursor()
    upsert, select = upsert_sql("format"), select_sql("format")

    def write(key: str, text: str) -> object:
        now = utcnow()
        return cur.execute(upsert, (FLOOR_APP, USER, key, text, now, now)).fetchone()

    def read(key: str) -> object:
        row = cur.execute(select, (FLOOR_APP, USER, key, utcnow())).fetchone()
        assert row is not None
        return json.loads(row[0])

    return (write, read), conn.close


def _sync_case(
    store: SqlSession, floor_fns: SyncFloor, op: str, modules: dict[str, Any], keys: list[str]
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The statekeeper call and the floor call of one op, each rotating over ``keys``."""
    fwrite, fread = floor_fns
    agent, memory = Module(modules["agent"]), Module(modules["memory"])
    sk_key, floor_key = rotating(keys), rotating(keys)

    def sk_write() -> object:
        return store.set_state(sk_key(), modules, user_id=USER)

    def sk_merge() -> object:
        store.save_session_state(sk_key(), USER, agent=agent, memory=memory)
        return None

    def sk_read() -> object:
        return store.get_state(sk_key(), user_id=USER)

    def floor_write() -> object:
        return fwrite(floor_key(), json.dumps(modules))

    def floor_read() -> object:
        return fread(floor_key())

    sk = {"write": sk_write, "merge": sk_merge, "read": sk_read}[op]
    return sk, floor_read if op == "read" else floor_write


def run_sync(
    db: str, url: str, sqlite_path: Path | None, settings: Settings, report: Report
) -> None:
    """Measure every op and size with ``SqlSession`` against ``sqlite3`` / psycopg."""
    store = SqlSession(url, app_name=SK_APP)
    if db == "sqlite":
        assert sqlite_path is not None
        (fwrite, fread), close = _sqlite_floor(sqlite_path)
        floor_name = "sqlite3"
    else:
        (fwrite, fread), close = _pg_floor(url)
        floor_name = "psycopg"
    try:
        for size, target in SIZES.items():
            modules = agent_modules(target)
            nbytes = json_size(modules)
            for op in OPS:
                keys = _keys(op, size)
                for key in keys:  # every session exists: writes are updates, reads hit
                    store.set_state(key, modules, user_id=USER)
                    fwrite(key, json.dumps(modules))
                sk, floor = _sync_case(store, (fwrite, fread), op, modules, keys)
                pair = measure_pair(sk, floor, settings)
                report(_row(db, "sync", op, size, nbytes, floor_name) | pair.summary())
    finally:
        close()
        store.close()


# --------------------------------------------------------------------------- async


async def _aiosqlite_floor(path: Path) -> tuple[AsyncFloor, Callable[[], Awaitable[None]]]:
    conn = await aiosqlite_connect(path)
    cur = await conn.cursor()
    upsert, select = upsert_sql("qmark"), select_sql("qmark")

    async def write(key: str, text: str) -> object:
        now = sqlite_stamp(utcnow())
        await cur.execute(upsert, (FLOOR_APP, USER, key, text, now, now))
        return await cur.fetchone()

    async def read(key: str) -> object:
        await cur.execute(select, (FLOOR_APP, USER, key, sqlite_stamp(utcnow())))
        row = await cur.fetchone()
        assert row is not None
        return json.loads(row[0])

    async def close() -> None:
        await cur.close()
        await conn.close()

    return (write, read), close


async def _apg_floor(url: str) -> tuple[AsyncFloor, Callable[[], Awaitable[None]]]:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    cur = conn.cursor()
    upsert, select = upsert_sql("format"), select_sql("format")

    async def write(key: str, text: str) -> object:
        now = utcnow()
        await cur.execute(upsert, (FLOOR_APP, USER, key, text, now, now))
        return await cur.fetchone()

    async def read(key: str) -> object:
        await cur.execute(select, (FLOOR_APP, USER, key, utcnow()))
        row = await cur.fetchone()
        assert row is not None
        return json.loads(row[0])

    return (write, read), conn.close


def _async_case(
    store: AsyncSqlSession, floor_fns: AsyncFloor, op: str, modules: dict[str, Any], keys: list[str]
) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]:
    """:func:`_sync_case` for the async store and floor."""
    fwrite, fread = floor_fns
    agent, memory = Module(modules["agent"]), Module(modules["memory"])
    sk_key, floor_key = rotating(keys), rotating(keys)

    async def sk_write() -> object:
        return await store.set_state(sk_key(), modules, user_id=USER)

    async def sk_merge() -> object:
        await store.save_session_state(sk_key(), USER, agent=agent, memory=memory)
        return None

    async def sk_read() -> object:
        return await store.get_state(sk_key(), user_id=USER)

    async def floor_write() -> object:
        return await fwrite(floor_key(), json.dumps(modules))

    async def floor_read() -> object:
        return await fread(floor_key())

    sk = {"write": sk_write, "merge": sk_merge, "read": sk_read}[op]
    return sk, floor_read if op == "read" else floor_write


async def run_async(
    db: str, url: str, sqlite_path: Path | None, settings: Settings, report: Report
) -> None:
    """Measure every op and size with ``AsyncSqlSession`` against aiosqlite / psycopg async."""
    store = AsyncSqlSession(url, app_name=SK_APP)
    if db == "sqlite":
        assert sqlite_path is not None
        (fwrite, fread), close = await _aiosqlite_floor(sqlite_path)
        floor_name = "aiosqlite"
    else:
        (fwrite, fread), close = await _apg_floor(url)
        floor_name = "psycopg async"
    try:
        for size, target in SIZES.items():
            modules = agent_modules(target)
            nbytes = json_size(modules)
            for op in OPS:
                keys = _keys(op, size)
                for key in keys:
                    await store.set_state(key, modules, user_id=USER)
                    await fwrite(key, json.dumps(modules))
                sk, floor = _async_case(store, (fwrite, fread), op, modules, keys)
                pair = await ameasure_pair(sk, floor, settings)
                report(_row(db, "async", op, size, nbytes, floor_name) | pair.summary())
    finally:
        await close()
        await store.close()
