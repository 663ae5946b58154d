"""StatekeeperSession beside the Agents SDK's SQLiteSession and SQLAlchemySession.

Same machine, same setup: each backend on its own SQLite file on disk, with
its default durability, driven through the SDK's public ``Session`` methods
only. Five operations, medians of repeated calls:

* ``add 1`` -- ``add_items([item])`` of one ~2 KB message;
* ``add 3`` -- ``add_items`` of three of them (a turn: input, tool call, reply);
* ``last 10 of 1,000`` -- ``get_items(limit=10)`` on a 1,000-item conversation;
* ``all 1,000`` -- ``get_items()`` of that conversation;
* ``pop`` -- ``pop_item()`` on it.

    python benchmarks/run.py openai-agents [--repeat 50] [--out FILE]

Prints a Markdown table and writes the figures as JSON (default:
benchmarks/results/openai_agents.json). Needs ``statekeeper[openai-agents]``.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common
import agents
from agents import SQLiteSession
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

from statekeeper import migrations
from statekeeper.openai_agents import StatekeeperSession

ITEM_TEXT = "x" * 2000
LOG = 1000


def _item(n: int) -> dict[str, Any]:
    return {"role": "user" if n % 2 else "assistant", "content": f"{n} {ITEM_TEXT}"}


async def _median(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _backends(folder: Path) -> dict[str, Callable[[str], Any]]:
    url = f"sqlite:///{folder / 'statekeeper.db'}"
    migrations.upgrade(url)
    return {
        "statekeeper StatekeeperSession": lambda sid: StatekeeperSession(sid, url),
        "SDK SQLAlchemySession (aiosqlite)": lambda sid: SQLAlchemySession.from_url(
            sid, url=f"sqlite+aiosqlite:///{folder / 'sqlalchemy.db'}", create_tables=True
        ),
        "SDK SQLiteSession": lambda sid: SQLiteSession(sid, str(folder / "sqlite.db")),
    }


async def _measure(make: Callable[[str], Any], repeat: int) -> dict[str, float]:
    adder = make("add")
    await adder.add_items([_item(0)])  # the first write creates tables / the session
    counter = iter(range(1, 10**9))
    add = await _median(lambda: adder.add_items([_item(next(counter))]), repeat)
    turn = await _median(lambda: adder.add_items([_item(next(counter)) for _ in range(3)]), repeat)
    log = make("log")
    for start in range(0, LOG, 100):
        await log.add_items([_item(n) for n in range(start, start + 100)])
    last = await _median(lambda: log.get_items(limit=10), repeat)
    whole = await _median(log.get_items, max(5, repeat // 5))
    assert len(await log.get_items()) == LOG
    pop = await _median(log.pop_item, repeat)
    for session in (adder, log):
        if isinstance(session, SQLAlchemySession):
            await session.engine.dispose()  # it has no close()
            continue
        closing = session.close()
        if asyncio.iscoroutine(closing):
            await closing
    return {"add 1": add, "add 3": turn, "last 10 of 1,000": last, "all 1,000": whole, "pop": pop}


def main(argv: list[str] | None = None) -> int:
    """Measure every backend; print the table and write the JSON."""
    parser = _common.parser(
        __doc__, "out", out={"help": "results JSON (default benchmarks/results/openai_agents.json)"}
    )
    parser.add_argument("--repeat", type=int, default=50, help="calls per operation")
    args = parser.parse_args(argv)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, make in _backends(Path(folder)).items():
            results[name] = asyncio.run(_measure(make, args.repeat))
    ops = list(next(iter(results.values())))
    print(f"openai-agents {agents.__version__}, Python {platform.python_version()}, {load}")
    print("| backend | " + " | ".join(ops) + " |")
    print("|---|" + "---|" * len(ops))
    for name, figures in results.items():
        print(f"| {name} | " + " | ".join(_common.fmt_us(figures[op]) for op in ops) + " |")
    data = {
        "openai_agents": agents.__version__,
        "python": platform.python_version(),
        "uptime": load,
        "repeat": args.repeat,
        "seconds": results,
    }
    _common.save(data, "openai_agents", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
