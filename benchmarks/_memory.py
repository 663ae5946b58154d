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
from pathlib import Path
from typing import Any

from _common import (
    Module,
    Settings,
    agent_modules,
    json_size,
    select_sql,
    sqlite_connect,
    sqlite_stamp,
    upsert_sql,
    utcnow,
)

from statekeeper import SqlSession

SK_APP = "bench_mem"
FLOOR_APP = "bench_mem_floor"
USER = "alice"
KEY = "big"

Report = Callable[[dict[str, Any]], None]


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


def run(db: str, url: str, sqlite_path: Path | None, settings: Settings, report: Report) -> None:
    """Save (``set_state``, ``save_session_state``) and load (``get_state``) one big state."""
    state = agent_modules(settings.memory_bytes)
    nbytes = json_size(state)
    agent, memory = Module(state["agent"]), Module(state["memory"])
    store = SqlSession(url, app_name=SK_APP)
    if db == "sqlite":
        assert sqlite_path is not None
        conn: Any = sqlite_connect(sqlite_path)
        params = "qmark"

        def stamp() -> Any:
            return sqlite_stamp(utcnow())
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        params = "format"
        stamp = utcnow
    cur = conn.cursor()
    upsert, select = upsert_sql(params), select_sql(params)

    def floor_save() -> object:
        now = stamp()
        return cur.execute(upsert, (FLOOR_APP, USER, KEY, json.dumps(state), now, now)).fetchone()

    def floor_load() -> object:
        row = cur.execute(select, (FLOOR_APP, USER, KEY, stamp())).fetchone()
        return json.loads(row[0])

    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "save (set_state)": (lambda: store.set_state(KEY, state, user_id=USER), floor_save),
        "save (save_session_state)": (
            lambda: store.save_session_state(KEY, USER, agent=agent, memory=memory),
            floor_save,
        ),
        "load (get_state)": (lambda: store.get_state(KEY, user_id=USER), floor_load),
    }
    try:
        for sk, floor in cases.values():  # warm up: compile statements, open connections
            sk()
            floor()
        for name, (sk, floor) in cases.items():
            (sk_peak, sk_held), (floor_peak, floor_held) = peak_bytes(sk), peak_bytes(floor)
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
        cur.close()
        conn.close()
        store.close()
