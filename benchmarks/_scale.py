"""Latency as the table grows: a point read and a page of ``list_sessions`` at N sessions.

Each N gets its own table (a PostgreSQL schema, or a SQLite file), bulk
loaded with one ``INSERT ... SELECT`` (not through the API): ``N / 100`` users
with 100 sessions each, 1 KB states, distinct ``updated_at``. Every larger N
is measured in alternating batches against the smallest, so the ratio
``latency(N) / latency(smallest)`` comes from one stretch of time.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import COLUMNS, TABLE, Report, Settings, sqlite_now, utcnow

from statekeeper import SqlSession

APP = "scale"
PAGE = 50
SAMPLE_KEYS = 512


@dataclass
class Point:
    """One loaded table: its store, the raw floor calls, and keys to read."""

    n: int
    users: int
    store: SqlSession
    floor_read: Callable[[str, str], object]
    floor_list: Callable[[str], object]
    load_seconds: float

    def calls(self, seed: int) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
        """Per measured op, the statekeeper call and its raw floor, on random keys."""
        rng = random.Random(seed)
        ids = [rng.randrange(self.n) for _ in range(SAMPLE_KEYS)]
        sessions = _common.rotating([f"{i % self.users}:{i}" for i in ids])
        users = _common.rotating([f"u{rng.randrange(self.users)}" for _ in range(SAMPLE_KEYS)])

        def key() -> tuple[str, str]:
            user, session = sessions().split(":")
            return f"u{user}", f"s{session}"

        def read() -> object:
            user, session = key()
            state = self.store.get_state(session, user_id=user)
            assert state is not None
            return state

        def floor_read() -> object:
            user, session = key()
            return self.floor_read(user, session)

        def page() -> object:
            return self.store.list_sessions(users(), limit=PAGE)

        def floor_page() -> object:
            return self.floor_list(users())

        def page_all() -> object:
            return self.store.list_sessions(limit=PAGE)

        return {
            "read": (read, floor_read),
            "list_user": (page, floor_page),
            "list_all": (page_all, page_all),
        }


def _state_text() -> str:
    return json.dumps(_common.agent_modules(1_000), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- loaders


@contextmanager
def _point(
    n: int, users: int, store: SqlSession, conn: Any, table: str, load: float
) -> Iterator[Point]:
    """The loaded table's :class:`Point`: the floor's read and page on ``conn``'s cursor."""
    sqlite = isinstance(conn, sqlite3.Connection)
    style, stamp = ("qmark", sqlite_now) if sqlite else ("format", utcnow)
    select, page = _common.select_sql(style, table), _common.list_sql(style, table)
    cur = conn.cursor()

    def floor_read(user: str, session: str) -> object:
        row = cur.execute(select, (APP, user, session, stamp())).fetchone()
        assert row is not None
        return json.loads(row[0])

    def floor_list(user: str) -> object:
        return cur.execute(page, (APP, user, stamp(), PAGE + 1)).fetchall()

    try:
        yield Point(n, users, store, floor_read, floor_list, load)
    finally:
        store.close()
        conn.close()


@contextmanager
def _pg_point(url: str, n: int, settings: Settings) -> Iterator[Point]:
    import psycopg

    schema = f"scale_{n}"
    users = max(1, n // settings.sessions_per_user)
    _common.upgrade(url, schema=schema)
    table = f"{schema}.{TABLE}"
    start = time.perf_counter()
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(
        f"INSERT INTO {table} ({COLUMNS}) "
        "SELECT %s, 'u' || (i %% %s), 's' || i, %s::json, 1, "
        "now() - make_interval(secs => i), now() - make_interval(secs => i), NULL "
        "FROM generate_series(0, %s - 1) AS i",
        (APP, users, _state_text(), n),
    )
    conn.execute(f"VACUUM ANALYZE {table}")
    conn.execute("CHECKPOINT")  # write the load out now, not during the measurements
    load = time.perf_counter() - start
    with _point(n, users, SqlSession(url, app_name=APP, schema=schema), conn, table, load) as p:
        yield p


@contextmanager
def _sqlite_point(folder: Path, n: int, settings: Settings) -> Iterator[Point]:
    path = folder / f"scale_{n}.db"
    users = max(1, n // settings.sessions_per_user)
    _common.upgrade(f"sqlite:///{path}")
    start = time.perf_counter()
    conn = _common.sqlite_connect(path)
    base = utcnow().timestamp()
    conn.execute(
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?) "
        f"INSERT INTO {TABLE} ({COLUMNS}) "
        "SELECT ?, 'u' || (i % ?), 's' || i, ?, 1, "
        "strftime('%Y-%m-%d %H:%M:%S', ? - i, 'unixepoch') || '.000000', "
        "strftime('%Y-%m-%d %H:%M:%S', ? - i, 'unixepoch') || '.000000', NULL FROM s",
        (n, APP, users, _state_text(), int(base), int(base)),
    )
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    load = time.perf_counter() - start
    with _point(n, users, SqlSession(f"sqlite:///{path}", app_name=APP), conn, TABLE, load) as p:
        yield p


# --------------------------------------------------------------------------- scenario


def run(db: str, url: str, settings: Settings, report: Report) -> None:
    """Load each N of ``settings.scale_points``; measure it against the smallest and the floor.

    On PostgreSQL each N gets a schema in ``url``'s database, on SQLite a file
    beside ``url``'s.
    """
    folder = Path(url.removeprefix("sqlite:///")).parent
    with ExitStack() as stack:
        points = [
            stack.enter_context(
                _pg_point(url, n, settings)
                if db == "postgresql"
                else _sqlite_point(folder, n, settings)
            )
            for n in settings.scale_points
        ]
        smallest = points[0]
        small_calls = smallest.calls(seed=1)
        for point in points:
            calls = point.calls(seed=2)
            for op, (sk, floor) in calls.items():
                row: dict[str, Any] = {
                    "db": db,
                    "op": op,
                    "sessions": point.n,
                    "users": point.users,
                    "page": PAGE,
                    "load_s": point.load_seconds,
                }
                own: float | None = None
                if op != "list_all":  # the floor has no all-users page
                    vs_floor = _common.measure_pair(sk, floor, settings)
                    own = vs_floor.a_median
                    row |= {"floor_s": vs_floor.b_median, "floor_ratio": vs_floor.ratio}
                if point is smallest:
                    if own is None:
                        own = _common.measure_pair(sk, sk, settings).a_median
                    row |= {"statekeeper_s": own, "vs_smallest": 1.0}
                else:
                    vs_small = _common.measure_pair(sk, small_calls[op][0], settings)
                    row |= {
                        "statekeeper_s": vs_small.a_median,
                        "smallest_s": vs_small.b_median,
                        "vs_smallest": vs_small.ratio,
                    }
                report(row)
