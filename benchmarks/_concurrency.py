"""Throughput of many concurrent async writers on PostgreSQL, against a raw psycopg pool.

``writers`` tasks each write ``writes_per_writer`` times to their own session
(a 10 KB state). statekeeper's ``AsyncSqlSession`` gets a pool of
``pool_size`` connections (``max_overflow=0``); the floor is psycopg_pool's
``AsyncConnectionPool(max_size=pool_size)`` doing ``json.dumps`` and the
same upsert. Rounds alternate between the two; the medians are compared.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import Settings, agent_modules, upsert_sql, utcnow

from statekeeper import AsyncSqlSession

SK_APP = "bench_conc"
FLOOR_APP = "bench_conc_floor"
USER = "alice"
SIZE = 10_000


async def _round(writer: Callable[[int, int], Awaitable[None]], writers: int, writes: int) -> float:
    """Run ``writers`` concurrent writers; return the throughput in writes per second."""
    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(writer(w, writes) for w in range(writers)))
    return writers * writes / (time.perf_counter() - start)


async def run(url: str, settings: Settings) -> dict[str, Any]:
    """Measure both sides; return medians, their ratio and every round."""
    from psycopg_pool import AsyncConnectionPool

    state = agent_modules(SIZE)
    upsert = upsert_sql("format")
    store = AsyncSqlSession(
        url,
        app_name=SK_APP,
        engine_options={"pool_size": settings.pool_size, "max_overflow": 0},
    )
    pool = AsyncConnectionPool(
        url,
        min_size=settings.pool_size,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True)

    async def sk_writer(w: int, writes: int) -> None:
        for _ in range(writes):
            await store.set_state(f"writer-{w}", state, user_id=USER)

    async def floor_writer(w: int, writes: int) -> None:
        for _ in range(writes):
            text = json.dumps(state)
            now = utcnow()
            async with pool.connection() as conn:
                cur = await conn.execute(upsert, (FLOOR_APP, USER, f"writer-{w}", text, now, now))
                await cur.fetchone()

    sk_rounds: list[float] = []
    floor_rounds: list[float] = []
    try:
        # Warm-up: fill both pools, create every session, prepare the statements.
        await _round(sk_writer, settings.writers, 2)
        await _round(floor_writer, settings.writers, 2)
        for r in range(settings.concurrency_rounds):
            order = [(sk_writer, sk_rounds), (floor_writer, floor_rounds)]
            for writer, out in order if r % 2 == 0 else order[::-1]:
                out.append(await _round(writer, settings.writers, settings.writes_per_writer))
    finally:
        await pool.close()
        await store.close()
    sk, floor = statistics.median(sk_rounds), statistics.median(floor_rounds)
    return {
        "writers": settings.writers,
        "pool_size": settings.pool_size,
        "writes_per_writer": settings.writes_per_writer,
        "state_bytes": SIZE,
        "statekeeper_ops_s": sk,
        "floor_ops_s": floor,
        "ratio": sk / floor,
        "statekeeper_rounds_ops_s": sk_rounds,
        "floor_rounds_ops_s": floor_rounds,
        "floor": "psycopg_pool.AsyncConnectionPool",
    }
