"""JSONSession and RedisSession beside AgentScope 1.x's own JSONSession / RedisSession logic.

Usage::

    python benchmarks/stores_vs_agentscope.py            # 10 KB and 1 MB states
    python benchmarks/stores_vs_agentscope.py --quick    # fewer rounds

AgentScope's logic is reproduced with the same raw calls it makes (read from
its 1.x sources, not imported: statekeeper never imports agentscope):

* ``JSONSession`` save: ``open(path, "w", encoding="utf-8",
  errors="surrogatepass")`` then ``json.dump(states, file, ensure_ascii=False)``;
  load: ``open`` the same way, ``json.load``, ``load_state_dict`` per module.
  No temp file, no fsync, no lock, no merge with the modules already stored.
* ``RedisSession`` save: ``json.dumps(states, ensure_ascii=False)`` and ``SET``;
  load: ``GET``, ``json.loads``, ``load_state_dict``.

statekeeper's stores do what those skip: the JSON store writes a temp file,
fsyncs it, renames it and fsyncs the folder, under a file lock, merging with
the stored modules; the Redis store merges per module and bumps the version
and both indexes in one Lua script. Both sides run in one process, the same
rounds interleaved (A, B, A, B ...), and the table gives each side's median
and the ratio statekeeper / AgentScope (lower is better; the issue's target
is at most 1.5).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import _common
from _common import Module

from statekeeper import JSONSession, RedisSession

REDIS_URL = os.environ.get("STATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_state(size: int) -> dict[str, Any]:
    """An agent memory of chat messages of about ``size`` bytes of JSON."""
    messages = []
    total = 0
    i = 0
    while total < size:
        message = {
            "id": uuid.UUID(int=i).hex,
            "role": "user" if i % 2 else "assistant",
            "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 8,
            "metadata": {"tokens": 57 + i, "score": 0.25 * i},
        }
        total += len(json.dumps(message))
        messages.append(message)
        i += 1
    return {"memory": {"content": messages}, "name": "Friday"}


# --------------------------------------------------------------------------- AgentScope's logic


def agentscope_json_save(path: str, **modules: Module) -> None:
    states = {name: m.state_dict() for name, m in modules.items()}
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as file:
        json.dump(states, file, ensure_ascii=False)


def durable_json_save(path: str, **modules: Module) -> None:
    """AgentScope's save made atomic and durable, nothing else: the floor of a safe write."""
    states = {name: m.state_dict() for name, m in modules.items()}
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as file:
        json.dump(states, file, ensure_ascii=False)
        file.flush()
        os.fdatasync(file.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def agentscope_json_load(path: str, **modules: Module) -> None:
    with open(path, encoding="utf-8", errors="surrogatepass") as file:
        states = json.load(file)
    for name, m in modules.items():
        if name in states:
            m.load_state_dict(states[name])


def agentscope_redis_save(client: Any, key: str, **modules: Module) -> None:
    states = {name: m.state_dict() for name, m in modules.items()}
    client.set(key, json.dumps(states, ensure_ascii=False))


def agentscope_redis_load(client: Any, key: str, **modules: Module) -> None:
    states = json.loads(client.get(key))
    for name, m in modules.items():
        if name in states:
            m.load_state_dict(states[name])


# --------------------------------------------------------------------------- timing


def interleaved(a: Callable[[], None], b: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run alternately."""
    times_a, times_b = [], []
    a()
    b()  # warm up
    for _ in range(rounds):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        times_a.append(t1 - t0)
        times_b.append(t2 - t1)
    return statistics.median(times_a), statistics.median(times_b)


def cases(
    json_store: JSONSession,
    redis_store: RedisSession,
    client: Any,
    agent: Module,
    raw_dir: str,
    prefix: str,
) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    """Each operation, done by statekeeper and by AgentScope's logic."""
    raw_path = os.path.join(raw_dir, "u_s.json")
    raw_key = f"{prefix}user_id:u:session:s:state"
    return [
        (
            "JSON save",
            lambda: json_store.save_session_state("s", "u", agent=agent),
            lambda: agentscope_json_save(raw_path, agent=agent),
        ),
        (
            "JSON save vs durable floor",
            lambda: json_store.save_session_state("s", "u", agent=agent),
            lambda: durable_json_save(raw_path + ".durable", agent=agent),
        ),
        (
            "JSON load",
            lambda: json_store.load_session_state("s", "u", agent=Module()),
            lambda: agentscope_json_load(raw_path, agent=Module()),
        ),
        (
            "Redis save",
            lambda: redis_store.save_session_state("s", "u", agent=agent),
            lambda: agentscope_redis_save(client, raw_key, agent=agent),
        ),
        (
            "Redis load",
            lambda: redis_store.load_session_state("s", "u", agent=Module()),
            lambda: agentscope_redis_load(client, raw_key, agent=Module()),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure save and load beside AgentScope's own JSON and Redis sessions; print the table."""
    args = _common.parser(
        __doc__, "quick", "out", out={"help": "write the results as JSON to this file"}
    ).parse_args(argv)
    sizes = {
        "10 KB": (10_000, 20 if args.quick else 300),
        "1 MB": (1_000_000, 5 if args.quick else 40),
    }
    rows = []
    prefix = f"skbench-{uuid.uuid4().hex[:8]}:"
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    bench_dir = os.environ.get("BENCH_DIR")
    with tempfile.TemporaryDirectory(prefix="statekeeper-bench-", dir=bench_dir) as tmp:
        json_store = JSONSession(os.path.join(tmp, "statekeeper"))
        redis_store = RedisSession(REDIS_URL, key_prefix=prefix)
        raw_dir = os.path.join(tmp, "agentscope")
        os.makedirs(raw_dir)
        for label, (size, rounds) in sizes.items():
            agent = Module(make_state(size))
            other = Module({"tools": ["search"]})
            json_store.save_session_state("s", "u", agent=agent, toolkit=other)
            redis_store.save_session_state("s", "u", agent=agent, toolkit=other)
            for name, ours, theirs in cases(
                json_store, redis_store, client, agent, raw_dir, prefix
            ):
                a, b = interleaved(ours, theirs, rounds)
                case = f"{name} {label}"
                row = {"case": case, "statekeeper_ms": a * 1e3, "agentscope_ms": b * 1e3}
                rows.append({**row, "ratio": a / b})
                print(
                    f"{case:34} statekeeper {a * 1e3:8.3f} ms   "
                    f"AgentScope {b * 1e3:8.3f} ms   ratio {a / b:5.2f}"
                )
        redis_store.close()
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
    if args.out:
        _common.save(rows, "vs_agentscope", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
