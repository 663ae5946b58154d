"""Peak Python memory of saving and loading one big state, as a multiple of its JSON size.

``tracemalloc`` counts what Python allocates during one call, from a
collected heap: for a load that includes the returned dict itself, which
the caller keeps. Memory that libpq or SQLite allocate with ``malloc``
is not seen, for either side.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable

from _common import Module, Report, Settings, agent_modules, connect, floor, json_size

from statekeeper import SqlSession

SK_APP = "bench_mem"
FLOOR_APP = "bench_mem_floor"
USER = "alice"
KEY = "big"


def peak_bytes(fn: Callable[[], object]) -> tuple[int, int]:
    """Peak bytes Python allocated while ``fn`` ran, and the bytes its result still holds."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        held, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return peak - base, held - base


def run(db: str, url: str, settings: Settings, report: Report) -> None:
    """Save (``set_state``, ``save_session_state``) and load (``get_state``) one big state."""
    state = agent_modules(settings.memory_bytes)
    nbytes = json_size(state)
    agent, memory = Module(state["agent"]), Module(state["memory"])
    store, conn = SqlSession(url, app_name=SK_APP), connect(url)
    fwrite, fread = floor(conn, FLOOR_APP, USER)
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "save (set_state)": (
            lambda: store.set_state(KEY, state, user_id=USER),
            lambda: fwrite(KEY, json.dumps(state)),
        ),
        "save (save_session_state)": (
            lambda: store.save_session_state(KEY, USER, agent=agent, memory=memory),
            lambda: fwrite(KEY, json.dumps(state)),
        ),
        "load (get_state)": (lambda: store.get_state(KEY, user_id=USER), lambda: fread(KEY)),
    }
    try:
        for sk, floor_call in cases.values():  # warm up: compile statements, open connections
            sk()
            floor_call()
        for name, (sk, floor_call) in cases.items():
            (sk_peak, sk_held), (floor_peak, floor_held) = peak_bytes(sk), peak_bytes(floor_call)
            report(
                {
                    "db": db,
                    "api": "sync",
                    "op": name,
                    "json_bytes": nbytes,
                    "statekeeper_peak_bytes": sk_peak,
                    "floor_peak_bytes": floor_peak,
                    "statekeeper_result_bytes": sk_held,
                    "floor_result_bytes": floor_held,
                    "statekeeper_multiple": sk_peak / nbytes,
                    "floor_multiple": floor_peak / nbytes,
                }
            )
    finally:
        conn.close()
        store.close()
