"""What a store per request costs, beside one call on a long-lived store.

Usage::

    python benchmarks/per_request.py              # SQLite file and PostgreSQL, sync and async
    python benchmarks/per_request.py --no-postgres

Three ways to read a 1 KB session, each timed as the median of batches:

* ``long-lived``: ``get_state`` on a store made once (the recommended pattern);
* ``per request, shared``: ``with SqlSession(url) as s: s.get_state(...)`` while
  another store on the URL stays open: the new store reuses the URL's engine
  and pool, and pays one revision read on first use;
* ``per request, alone``: the same with no other store open: every request
  builds the engine, connects, and disposes of it at ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import _common

from statekeeper import AsyncSqlSession, SqlSession

STATE = {"memory": {"content": ["x" * 100] * 9}}


async def _amedian_per_call(fn: Callable[[], Awaitable[object]], n: int, rounds: int = 5) -> float:
    """``_common.median_per_call`` of a coroutine function."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def _row(long_lived: float, shared: float, alone: float) -> dict[str, float]:
    """The three ways' medians, in µs."""
    seconds = {"long-lived": long_lived, "per request, shared": shared, "per request, alone": alone}
    return {name: value * 1e6 for name, value in seconds.items()}


def _sync_case(url: str, n: int) -> dict[str, float]:
    with SqlSession(url, app_name="per-request") as keeper:
        keeper.set_state("s", STATE)

        def per_request() -> object:
            with SqlSession(url, app_name="per-request") as store:
                return store.get_state("s")

        long_lived = _common.median_per_call(lambda: keeper.get_state("s"), n)
        shared = _common.median_per_call(per_request, n)
    return _row(long_lived, shared, _common.median_per_call(per_request, max(n // 10, 20)))


async def _async_case(url: str, n: int) -> dict[str, float]:
    async with AsyncSqlSession(url, app_name="per-request") as keeper:
        await keeper.set_state("s", STATE)

        async def per_request() -> object:
            async with AsyncSqlSession(url, app_name="per-request") as store:
                return await store.get_state("s")

        long_lived = await _amedian_per_call(lambda: keeper.get_state("s"), n)
        shared = await _amedian_per_call(per_request, n)
    return _row(long_lived, shared, await _amedian_per_call(per_request, max(n // 10, 20)))


def _print(db: str, api: str, row: dict[str, float]) -> None:
    base = row["long-lived"]
    cells = "  ".join(f"{name}: {us:8.0f} µs ({us / base:4.1f}x)" for name, us in row.items())
    print(f"{db:<10} {api:<5}  {cells}")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one line per database and facade."""
    parser = _common.parser(__doc__, "pg-url", "no-postgres")
    parser.add_argument("-n", type=int, default=300, help="calls per batch")
    args = parser.parse_args(argv)
    use_pg = _common.postgres_skipped(args) is None
    with (
        TemporaryDirectory() as folder,
        _common.postgres_database(args.pg_url) if use_pg else contextlib.nullcontext() as pg_url,
    ):
        urls = [("SQLite", f"sqlite:///{Path(folder) / 'r.db'}")]
        urls += [("PostgreSQL", pg_url)] if pg_url is not None else []
        for db, url in urls:
            _common.upgrade(url)
            _print(db, "sync", _sync_case(url, args.n))
            _print(db, "async", asyncio.run(_async_case(url, args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
