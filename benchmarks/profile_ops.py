"""Where statekeeper's time goes: profile its side of one benchmark op and sort the time by layer.

Usage::

    python benchmarks/profile_ops.py                       # sync+async, SQLite+PostgreSQL, 10 KB
    python benchmarks/profile_ops.py --db sqlite --api sync --op merge --ops 3000
    python benchmarks/profile_ops.py --tree                # also print pyinstrument's call tree
    python benchmarks/profile_ops.py --html /tmp/profiles  # and save HTML profiles there

Each case warms up, then runs ``--ops`` calls under pyinstrument (0.1 ms
sampling) and splits the sampled time into layers:

* ``driver + database``: inside the DB-API ``execute`` (psycopg, sqlite3,
  aiosqlite), i.e. the round trip and the server's work;
* ``pre-ping``: SQLAlchemy's ``pool_pre_ping`` on checkout (a round trip; only
  in the ``pool_pre_ping=True`` case: statekeeper's own socket check, no round
  trip, counts as ``statekeeper``);
* ``pool checkout/return``: the rest of SQLAlchemy's pool;
* ``compile / cache``: statement compilation and cache-key generation;
* ``SQLAlchemy execution``: the rest of ``Connection.execute`` and result rows;
* ``JSON encode`` / ``JSON decode``: statekeeper's codec;
* ``statekeeper``: statekeeper's own code (validation, op plumbing, ``now()``);
* ``async bridge``: greenlet / asyncio machinery (async stores only);
* ``other``: the benchmark loop itself.

The profiler inflates every Python-heavy layer; compare the *shares*, and
take absolute costs from ``--micro`` (no profiler), which times single pieces.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _common
from _common import SIZES, Module, agent_modules

from statekeeper import AsyncSqlSession, SqlSession

USER = "alice"
FINAL = {"driver + database", "pre-ping", "JSON encode", "JSON decode"}
ORDER = [
    "driver + database",
    "pre-ping",
    "pool checkout/return",
    "compile / cache",
    "SQLAlchemy execution",
    "JSON encode",
    "JSON decode",
    "statekeeper",
    "async bridge",
    "other",
]


# --------------------------------------------------------------------------- attribution


def _own_category(path: str, function: str) -> str | None:
    p = path.replace("\\", "/")
    if p in ("", "<built-in>") and function.startswith(("Cursor.", "Connection.")):
        return "driver + database"  # sqlite3's C methods, called from wherever
    if "/sqlalchemy/" in p:
        if "ping" in function:
            return "pre-ping"
        if p.endswith("engine/default.py") and function.startswith("do_execute"):
            return "driver + database"
        if "/sqlalchemy/pool/" in p:
            return "pool checkout/return"
        if p.endswith(("sql/compiler.py", "sql/cache_key.py")) or "compile" in function:
            return "compile / cache"
        if "/util/_concurrency" in p or "greenlet" in function or "await_" in function:
            return "async bridge"
        return "SQLAlchemy execution"
    if "/psycopg/" in p or "/aiosqlite/" in p or "/psycopg_binary/" in p or "sqlite3" in p:
        return "driver + database"
    if "/statekeeper/" in p:
        if p.endswith("codec.py"):
            return "JSON decode" if function.startswith(("decode", "_load")) else "JSON encode"
        return "statekeeper"
    if "/asyncio/" in p or "greenlet" in p:
        return "async bridge"
    return None


def attribute(root: Any) -> dict[str, float]:
    """Seconds of sampled time per layer, walking pyinstrument's frame tree."""
    totals: dict[str, float] = defaultdict(float)
    stack: list[tuple[Any, str]] = [(root, "other")]
    while stack:
        frame, inherited = stack.pop()
        if inherited in FINAL:
            category = inherited
        else:
            own = _own_category(frame.file_path or "", frame.function or "")
            if own is None or (
                own == "SQLAlchemy execution"
                and inherited in ("pool checkout/return", "compile / cache")
            ):
                category = inherited
            else:
                category = own
        totals[category] += frame.time - sum(child.time for child in frame.children)
        stack.extend((child, category) for child in frame.children)
    return dict(totals)


# --------------------------------------------------------------------------- cases


@contextmanager
def _database(db: str, pg_url: str) -> Iterator[str]:
    if db == "sqlite":
        with _common.scratch_dir() as folder:
            url = f"sqlite:///{Path(folder) / 'profile.db'}"
            _common.upgrade(url)
            yield url
    else:
        with _common.postgres_database(pg_url) as url:
            _common.upgrade(url)
            yield url


def _call(store: Any, op: str, state: dict[str, Any]) -> Callable[[], Any]:
    """The call of ``op`` on ``store`` (async: it returns the coroutine to await)."""
    agent, memory = Module(state["agent"]), Module(state["memory"])
    if op == "write":
        return lambda: store.set_state("p", state, user_id=USER)
    if op == "merge":
        return lambda: store.save_session_state("p", USER, agent=agent, memory=memory)
    return lambda: store.get_state("p", user_id=USER)


def profile_case(
    url: str,
    api: str,
    op: str,
    state: dict[str, Any],
    ops: int,
    html: Path | None,
    tree: bool,
    label: str,
) -> dict[str, Any]:
    """Profile ``ops`` calls of one op (after 50 unprofiled); return per-op seconds per layer."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001, async_mode="enabled" if api == "async" else "disabled")
    if api == "sync":
        with SqlSession(url, app_name="profile") as store:
            store.set_state("p", state, user_id=USER)
            call = _call(store, op, state)
            for _ in range(50):
                call()
            start = time.perf_counter()
            profiler.start()
            for _ in range(ops):
                call()
            profiler.stop()
            wall = time.perf_counter() - start
    else:

        async def main() -> float:
            async with AsyncSqlSession(url, app_name="profile") as store:
                await store.set_state("p", state, user_id=USER)
                call = _call(store, op, state)
                for _ in range(50):
                    await call()
                begin = time.perf_counter()
                profiler.start()
                for _ in range(ops):
                    await call()
                profiler.stop()
                return time.perf_counter() - begin

        wall = asyncio.run(main())
    session = profiler.last_session
    assert session is not None
    totals = attribute(session.root_frame())
    if tree:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    if html is not None:
        html.mkdir(parents=True, exist_ok=True)
        (html / f"{label}.html").write_text(profiler.output_html())
    return {"wall_per_op": wall / ops, "layers": {k: v / ops for k, v in totals.items()}}


# --------------------------------------------------------------------------- micro


_best = _common.median_per_call


def micro(size: str, pg_url: str | None) -> list[tuple[str, float]]:
    """Single pieces timed without a profiler."""
    from statekeeper import codec

    state = agent_modules(SIZES[size])
    text = codec.encode(state)
    n = max(20, 20_000_000 // max(len(text), 1))
    out = [
        (f"codec.encode ({size})", _best(lambda: codec.encode(state), n)),
        (f"json.dumps, default ({size})", _best(lambda: json.dumps(state), n)),
        (f"codec.decode ({size})", _best(lambda: codec.decode(text), n)),
        (f"json.loads ({size})", _best(lambda: json.loads(text), n)),
    ]
    try:
        import orjson
    except ImportError:
        pass
    else:
        out.append((f"orjson.loads alone ({size})", _best(lambda: orjson.loads(text), n)))
    with _common.scratch_dir() as folder:
        url = f"sqlite:///{Path(folder) / 'micro.db'}"
        _common.upgrade(url)
        out += _micro_store("SQLite", url, state, size)
    if pg_url is not None:
        with _common.postgres_database(pg_url) as url:
            _common.upgrade(url)
            out += _micro_store("PostgreSQL", url, state, size)
    return out


def _micro_store(name: str, url: str, state: dict[str, Any], size: str) -> list[tuple[str, float]]:
    import sqlalchemy as sa

    out = []
    for label, options in (("default", None), ("pool_pre_ping=True", {"pool_pre_ping": True})):
        if options and name == "SQLite":
            continue
        store = SqlSession(url, app_name="micro", engine_options=options)
        store.set_state("m", state, user_id=USER)
        engine = store.engine

        def checkout(engine: sa.Engine = engine) -> None:
            with engine.connect():
                pass

        def select1(engine: sa.Engine = engine) -> None:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").fetchone()

        out += [
            (f"{name} {label}: engine.connect()+close", _best(checkout, 2000)),
            (f"{name} {label}: connect + exec_driver_sql('SELECT 1')", _best(select1, 2000)),
            (
                f"{name} {label}: get_state {size}",
                _best(functools.partial(store.get_state, "m", user_id=USER), 1000),
            ),
            (
                f"{name} {label}: set_state {size}",
                _best(functools.partial(store.set_state, "m", state, user_id=USER), 300),
            ),
        ]
        store.close()
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Profile the selected cases and print each one's layers."""
    p = _common.parser(__doc__, "pg-url")
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--api", default="sync,async")
    p.add_argument("--op", default="write,read,merge")
    p.add_argument("--size", default="10KB", choices=list(SIZES))
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--tree", action="store_true", help="print pyinstrument's call tree")
    p.add_argument("--html", type=Path, default=None, help="save HTML profiles in this folder")
    p.add_argument("--micro", action="store_true", help="also time single pieces (no profiler)")
    args = p.parse_args(argv)
    state = agent_modules(SIZES[args.size])
    pg_ok = _common.postgres_skipped(args) is None
    for db in args.db.split(","):
        if db == "postgresql" and not pg_ok:
            continue
        with _database(db, args.pg_url) as url:
            for api in args.api.split(","):
                for op in args.op.split(","):
                    label = f"{db}-{api}-{op}-{args.size}"
                    result = profile_case(
                        url, api, op, state, args.ops, args.html, args.tree, label
                    )
                    layers = result["layers"]
                    sampled = sum(layers.values())
                    print(
                        f"\n{label}: {result['wall_per_op'] * 1e6:.0f} µs/op under the "
                        f"profiler ({sampled * 1e6:.0f} µs sampled)"
                    )
                    for name in ORDER:
                        if layers.get(name):
                            share = layers[name] / sampled
                            print(f"  {name:<22} {layers[name] * 1e6:8.1f} µs  {share:6.1%}")
    if args.micro:
        print(f"\nSingle pieces, no profiler ({args.size} state):")
        for name, seconds in micro(args.size, args.pg_url if pg_ok else None):
            print(f"  {name:<60} {seconds * 1e6:9.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
