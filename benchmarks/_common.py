"""Shared pieces of the benchmark: settings, states, timing, databases, raw SQL.

Nothing here is part of statekeeper's API; the benchmark imports statekeeper
only through its public names and ``statekeeper.migrations.upgrade``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Where every benchmark writes its results (``*-quick.*`` files are not kept).
RESULTS = Path(__file__).resolve().parent / "results"

try:  # a fresh clone that has not been installed yet still runs
    import statekeeper  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the repo was set up
    sys.path.insert(0, str(REPO / "src"))

import sqlalchemy as sa  # noqa: E402  (after the path fix above, like statekeeper)

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "statekeeper_sessions"
#: What statekeeper's SQLite connections get (src/statekeeper/_engine.py); the floor gets the same.
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
)

SIZES: dict[str, int] = {"1KB": 1_000, "10KB": 10_000, "100KB": 100_000, "1MB": 1_000_000}
COLUMNS = "app_name, user_id, session_id, state, version, created_at, updated_at, expires_at"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How hard to push: batch sizes and repetitions for one run."""

    quick: bool
    rounds: int  # batches per side of a pair (statekeeper, floor, statekeeper, ...)
    batch_seconds: float  # aimed duration of one batch
    min_ops: int
    max_ops: int
    warmup_ops: int
    writers: int = 64
    pool_size: int = 16
    writes_per_writer: int = 25
    concurrency_rounds: int = 5
    scale_points: tuple[int, ...] = (1_000, 100_000)
    sessions_per_user: int = 100
    memory_bytes: int = 10_000_000
    durable: bool = True  # fsync in the numbers, as users run (False: --no-fsync)

    @classmethod
    def make(cls, *, quick: bool, million: bool, durable: bool = True) -> Settings:
        """The settings of a full run, a ``--quick`` smoke run, or a ``--million`` run."""
        if quick:
            return cls(
                quick=True,
                durable=durable,
                rounds=2,
                batch_seconds=0.01,
                min_ops=1,
                max_ops=5,
                warmup_ops=1,
                writes_per_writer=2,
                concurrency_rounds=1,
                scale_points=(200, 2_000),
                memory_bytes=1_000_000,
            )
        points = (1_000, 100_000, 1_000_000) if million else (1_000, 100_000)
        return cls(
            quick=False,
            durable=durable,
            rounds=7,
            batch_seconds=0.1,
            min_ops=3,
            max_ops=400,
            warmup_ops=5,
            scale_points=points,
        )


# --------------------------------------------------------------------------- states

_WORDS = (  # noqa: SIM905 (as a literal, one line a word)
    "the agent should call search tool with query results summary user asked about weather "
    "plan step observation thought answer because therefore file code error retry context token "
    "budget memory note task done next review function argument value returned list café naïve "
    "東京 データ ünïcödé émoji 🚀"
).split()


def _message(rng: random.Random, index: int, words: int) -> dict[str, Any]:
    role = ("user", "assistant", "tool")[index % 3]
    msg: dict[str, Any] = {
        "id": f"msg_{rng.getrandbits(64):016x}",
        "name": {"user": "alice", "assistant": "assistant", "tool": "search"}[role],
        "role": role,
        "content": " ".join(rng.choice(_WORDS) for _ in range(words)),
        "timestamp": f"2026-11-21 16:{index // 60 % 60:02d}:{index % 60:02d}.{index % 1000:03d}",
        "metadata": {"tokens": rng.randint(5, 900), "latency_ms": round(rng.random() * 900, 3)},
    }
    if role == "assistant" and index % 2:
        msg["tool_calls"] = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"q": "weather", "k": 5})},
            }
        ]
    return msg


def agent_modules(target_bytes: int, seed: int = 7) -> dict[str, dict[str, Any]]:
    """An AgentScope-like state of about ``target_bytes`` of JSON: an agent and its memory.

    ``{"agent": {...}, "memory": {"content": [message dicts]}}``; the messages
    hold ids, roles, some non-ASCII text, token counts and tool calls.
    """
    rng = random.Random(seed)
    agent: dict[str, Any] = {
        "name": "assistant",
        "sys_prompt": "You are a helpful assistant. Answer briefly and cite tools you used.",
        "model": {"name": "gpt-like", "temperature": 0.2, "max_tokens": 2048},
        "turn": 0,
        "toolkit": {"active_groups": ["basic", "search"], "tools": ["search", "read_file"]},
    }
    content: list[dict[str, Any]] = []
    state: dict[str, dict[str, Any]] = {"agent": agent, "memory": {"content": content}}
    size = json_size(state)
    words = max(8, min(300, target_bytes // 60))  # ~1 message per 10% at small sizes
    while size < target_bytes:
        msg = _message(rng, len(content), words)
        size += json_size(msg) + 1
        content.append(msg)
    # Trim the last message's text so the JSON lands close to the target.
    if content:
        over = size - target_bytes
        last = content[-1]
        while over > 0 and len(last["content"]) > 1:
            cut = last["content"][-over:]
            over -= len(cut.encode())
            last["content"] = last["content"][: -len(cut)]
    agent["turn"] = len(content)
    return state


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what statekeeper stores)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


class Module:
    """A minimal state module: anything with ``state_dict`` / ``load_state_dict``."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = {} if state is None else state

    def state_dict(self) -> dict[str, Any]:
        """Return the module's state."""
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a stored state."""
        self.state = state


# --------------------------------------------------------------------------- timing


@dataclass
class Pair:
    """Two sides of one comparison measured in alternating batches; times are seconds per op.

    ``a`` / ``b`` hold each batch's wall time, ``a_cpu`` / ``b_cpu`` this process's CPU time
    (``time.process_time``: every thread of the client, not a database server's).
    """

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    ops_per_batch: int = 0
    a_cpu: list[float] = field(default_factory=list)
    b_cpu: list[float] = field(default_factory=list)

    @property
    def a_median(self) -> float:
        """Median per-op time of side A (statekeeper) over its batches."""
        return statistics.median(self.a)

    @property
    def b_median(self) -> float:
        """Median per-op time of side B (the floor) over its batches."""
        return statistics.median(self.b)

    @property
    def ratio(self) -> float:
        """A / B of the medians."""
        return self.a_median / self.b_median

    def add(self, side: int, wall: float, cpu: float) -> None:
        """Keep one batch of side 0 (A) or 1 (B)."""
        (self.b if side else self.a).append(wall)
        (self.b_cpu if side else self.a_cpu).append(cpu)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers: medians, ratio, spread of the batches."""
        return {
            "statekeeper_s": self.a_median,
            "floor_s": self.b_median,
            "ratio": self.ratio,
            "ops_per_batch": self.ops_per_batch,
            "batches": len(self.a),
            "statekeeper_batches_s": self.a,
            "floor_batches_s": self.b,
        }


def _ops_for(settings: Settings, per_op: float) -> int:
    if per_op <= 0:
        return settings.max_ops
    return max(settings.min_ops, min(settings.max_ops, round(settings.batch_seconds / per_op)))


def _sides(settings: Settings) -> list[int]:
    """The side of each timed batch: A B, B A, A B, ... (``rounds`` batches per side)."""
    return [s for r in range(settings.rounds) for s in ((0, 1) if r % 2 == 0 else (1, 0))]


def _batch(fn: Callable[[], object], n: int) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


async def _abatch(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def measure_pair(a: Callable[[], object], b: Callable[[], object], settings: Settings) -> Pair:
    """Time ``a`` and ``b`` in alternating batches (A B B A A B ...), the same op count each.

    The first batch of each side is a warm-up and a calibration; both sides
    then run ``rounds`` batches, the order flipping every round so neither
    always goes first.
    """
    fns, warm = (a, b), settings.warmup_ops
    pair = Pair(ops_per_batch=_ops_for(settings, max(_batch(a, warm)[0], _batch(b, warm)[0])))
    for side in _sides(settings):
        pair.add(side, *_batch(fns[side], pair.ops_per_batch))
    return pair


async def ameasure_pair(
    a: Callable[[], Awaitable[object]], b: Callable[[], Awaitable[object]], settings: Settings
) -> Pair:
    """:func:`measure_pair` for coroutine functions, on the running event loop."""
    fns, warm = (a, b), settings.warmup_ops
    per_op = max((await _abatch(a, warm))[0], (await _abatch(b, warm))[0])
    pair = Pair(ops_per_batch=_ops_for(settings, per_op))
    for side in _sides(settings):
        pair.add(side, *(await _abatch(fns[side], pair.ops_per_batch)))
    return pair


def median_per_call(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Median over ``rounds`` runs of ``n`` calls of the seconds per call (no floor beside it)."""
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


def rotating(keys: list[str]) -> Callable[[], str]:
    """Return a function giving the next key of ``keys``, round-robin."""
    it = iter(range(sys.maxsize))
    n = len(keys)
    return lambda: keys[next(it) % n]


# --------------------------------------------------------------------------- raw SQL (the floor)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def sqlite_stamp(value: dt.datetime) -> str:
    """A UTC time as statekeeper stores it in SQLite (SQLAlchemy's DateTime text)."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def upsert_sql(paramstyle: str, table: str = TABLE) -> str:
    """The floor's write: one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING version``.

    Parameters: app, user, session, state (JSON text), now (created and updated).
    """
    p = "?" if paramstyle == "qmark" else "%s"
    state = p if paramstyle == "qmark" else "%s::json"
    return (
        f"INSERT INTO {table} ({COLUMNS}) VALUES ({p}, {p}, {p}, {state}, 1, {p}, {p}, NULL) "
        "ON CONFLICT (app_name, user_id, session_id) DO UPDATE SET "
        f"state = excluded.state, version = {table}.version + 1, "
        "updated_at = excluded.updated_at, expires_at = excluded.expires_at "
        "RETURNING version"
    )


def select_sql(paramstyle: str, table: str = TABLE) -> str:
    """The floor's read: one point ``SELECT`` of a live session's state text and version.

    Parameters: app, user, session, now.
    """
    p = "?" if paramstyle == "qmark" else "%s"
    state = "state" if paramstyle == "qmark" else "state::text"
    return (
        f"SELECT {state}, version FROM {table} "
        f"WHERE app_name = {p} AND user_id = {p} AND session_id = {p} "
        f"AND (expires_at IS NULL OR expires_at > {p})"
    )


def list_sql(paramstyle: str, table: str = TABLE) -> str:
    """The floor's page of a user's sessions, newest update first.

    Parameters: app, user, now, limit.
    """
    p = "?" if paramstyle == "qmark" else "%s"
    return (
        "SELECT app_name, user_id, session_id, version, created_at, updated_at, expires_at "
        f"FROM {table} WHERE app_name = {p} AND user_id = {p} "
        f"AND (expires_at IS NULL OR expires_at > {p}) "
        f"ORDER BY updated_at DESC, user_id DESC, session_id DESC LIMIT {p}"
    )


def sqlite_connect(path: Path) -> Any:
    """A ``sqlite3`` connection in autocommit with the pragmas statekeeper's store sets."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


def _sqlite_path(url: str) -> Path | None:
    parsed = sa.make_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def connect(url: str) -> Any:
    """The floor's connection to ``url``: ``sqlite3`` (:func:`sqlite_connect`) or psycopg."""
    if (path := _sqlite_path(url)) is not None:
        return sqlite_connect(path)
    import psycopg

    return psycopg.connect(url, autocommit=True)


class ThreadedSqlite:
    """The async floor on SQLite: a ``sqlite3`` connection whose every operation runs
    whole in one thread of the loop's default executor (``asyncio.to_thread``), the
    way statekeeper's async SQLite stores run theirs."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        timeout = SQLITE_BUSY_TIMEOUT_MS / 1000
        self.conn = sqlite3.connect(
            path, isolation_level=None, timeout=timeout, check_same_thread=False
        )
        for pragma in SQLITE_PRAGMAS:
            self.conn.execute(pragma)

    async def close(self) -> None:
        """Close the connection."""
        self.conn.close()


async def aconnect(url: str) -> Any:
    """:func:`connect` for asyncio: :class:`ThreadedSqlite` or psycopg's ``AsyncConnection``."""
    if (path := _sqlite_path(url)) is not None:
        return ThreadedSqlite(path)
    import psycopg

    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def sqlite_now() -> str:
    """The current time as statekeeper stores it in SQLite."""
    return sqlite_stamp(utcnow())


def _floor_sql(conn: Any) -> tuple[str, str, Callable[[], Any]]:
    """The upsert, the select and the clock of the floor on ``conn`` (SQLite or psycopg)."""
    if type(conn).__module__.split(".")[0] == "sqlite3":
        return upsert_sql("qmark"), select_sql("qmark"), sqlite_now
    return upsert_sql("format"), select_sql("format"), utcnow


Report = Callable[[dict[str, Any]], None]  # a section's sink for each result row
Write = Callable[[str, str], Any]  # (session id, state JSON text) -> the new version's row
Read = Callable[[str], Any]  # session id -> the state


def floor(conn: Any, app: str, user: str) -> tuple[Write, Read]:
    """The floor's write and read on a sync connection: one cursor, autocommit.

    Write: one upsert of the JSON text (:func:`upsert_sql`); read: one point
    select (:func:`select_sql`) and ``json.loads``.
    """
    upsert, select, stamp = _floor_sql(conn)
    cur = conn.cursor()

    def write(key: str, text: str) -> Any:
        now = stamp()
        return cur.execute(upsert, (app, user, key, text, now, now)).fetchone()

    def read(key: str) -> Any:
        row = cur.execute(select, (app, user, key, stamp())).fetchone()
        assert row is not None
        return json.loads(row[0])

    return write, read


async def afloor(conn: Any, app: str, user: str) -> tuple[Write, Read]:
    """:func:`floor` on an async connection (:class:`ThreadedSqlite` or psycopg); its
    calls are coroutines."""
    if isinstance(conn, ThreadedSqlite):
        swrite, sread = floor(conn.conn, app, user)

        async def twrite(key: str, text: str) -> Any:
            return await asyncio.to_thread(swrite, key, text)

        async def tread(key: str) -> Any:
            return await asyncio.to_thread(sread, key)

        return twrite, tread
    upsert, select, stamp = _floor_sql(conn)
    cur = conn.cursor()

    async def write(key: str, text: str) -> Any:
        now = stamp()
        await cur.execute(upsert, (app, user, key, text, now, now))
        return await cur.fetchone()

    async def read(key: str) -> Any:
        await cur.execute(select, (app, user, key, stamp()))
        row = await cur.fetchone()
        assert row is not None
        return json.loads(row[0])

    return write, read


# --------------------------------------------------------------------------- databases


def libpq_url(url: str | sa.URL, driver: str = "postgresql") -> str:
    """``url`` with the driver ``driver`` (by default none, as psycopg takes it), password in."""
    return sa.make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@contextmanager
def postgres_database(admin_url: str, *, durable: bool = True) -> Iterator[str]:
    """Create a throwaway database ``statekeeper_bench_<random>``; yield its URL; drop it.

    By default it runs at the server's settings, as users run it. Only with
    ``durable=False`` (a benchmark's ``--no-fsync``, for a figure shown beside
    the default one, never instead of it) its sessions get
    ``synchronous_commit = off``: a commit does not wait for the WAL flush.
    """
    import psycopg

    admin = sa.make_url(admin_url)
    name = f"statekeeper_bench_{secrets.token_hex(4)}"
    with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        if not durable:
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        yield libpq_url(admin.set(database=name))
    finally:
        with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bulk_events(engine: sa.Engine, key: tuple[str, str, str], n: int, doc: str, t0: float) -> None:
    """Give the new session ``key`` (app, user, id) ``n`` events in one ``INSERT ... SELECT``.

    Not through the API: this writes statekeeper's tables directly. The events
    get ``seq`` 1..n, timestamps from ``t0`` a millisecond apart and ``doc``
    with ``__ID__`` (if any) replaced by ``bulk-<seq>``; the session row the
    ``event_count``, ``version`` and ``update_time`` that ``n`` appends leave.
    """
    pg = engine.dialect.name == "postgresql"
    series = (
        "generate_series(1, :n) AS g(i)"
        if pg
        else "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
        "SELECT i FROM s) AS g"
    )
    event = "replace(:doc, '__ID__', 'bulk-' || i)" + ("::json" if pg else "")
    where = "WHERE app_name = :a AND user_id = :u AND session_id = :s"
    params = {"a": key[0], "u": key[1], "s": key[2], "n": n, "t": t0, "doc": doc}
    params["end"] = t0 + n * 0.001
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO statekeeper_events (app_name, user_id, session_id, seq, timestamp, "
                f"event) SELECT :a, :u, :s, i, :t + i * 0.001, {event} FROM {series}"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "UPDATE statekeeper_sessions SET event_count = :n, version = version + :n, "
                f"update_time = :end {where}"
            ),
            params,
        )


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (``/proc/mounts``), or ``"?"``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    best, kind = "", "?"
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def disk_dir() -> Path:
    """Where a benchmark's SQLite files go by default: a folder on disk, as users have.

    ``$BENCH_DIR`` when set; else the system's temporary folder, unless that
    is in memory (``tmpfs``, as on some distributions), then ``~/.cache``.
    """
    if os.environ.get("BENCH_DIR"):
        return Path(os.environ["BENCH_DIR"])
    tmp = Path(tempfile.gettempdir())
    if _filesystem(tmp) not in ("tmpfs", "ramfs"):
        return tmp
    cache = Path.home() / ".cache" / "statekeeper-bench"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def scratch_dir(*, durable: bool = True) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the SQLite files: on disk (default), or in memory (``/dev/shm``).

    On disk (:func:`disk_dir`) every commit pays SQLite's flush, as in users'
    apps. Only with ``durable=False`` (``--no-fsync``, a figure shown beside
    the default one) it is in ``/dev/shm``, where a flush costs nothing.
    """
    shm = Path("/dev/shm")
    memory = not durable and shm.is_dir() and os.access(shm, os.W_OK)
    return tempfile.TemporaryDirectory(
        prefix="statekeeper-bench-", dir=shm if memory else disk_dir()
    )


def setup_text(durable: bool, where: str | None = None) -> str:
    """The setup of a run, for a report: the default one users run, or ``--no-fsync``."""
    if durable:
        return (
            f"the setup users run: the SQLite files on disk ({where or 'a temporary folder'}, "
            "default durability: every commit waits for the flush) and PostgreSQL at its "
            "default settings (`synchronous_commit = on`)"
        )
    return (
        "**not the setup users run** (`--no-fsync`): the SQLite files in memory "
        "(`/dev/shm`) and the throwaway PostgreSQL database at `synchronous_commit = off`, "
        "so no commit waits for the disk; these figures belong beside a default run's, "
        "never instead of them"
    )


def storage(folder: str | Path) -> str:
    """Where ``folder`` is, for a report: its path and file system type."""
    return f"{Path(folder).parent} ({_filesystem(Path(folder))})"


def server_setting(url: str, name: str = "server_version") -> str:
    """The PostgreSQL setting ``name`` at ``url`` (by default the server's version)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]) if row else "?"


def upgrade(url: str, schema: str | None = None) -> None:
    """Create statekeeper's tables with its own migrations."""
    from statekeeper.migrations import upgrade as sk_upgrade

    sk_upgrade(url, schema=schema)


def put_block(path: Path, name: str, text: str) -> None:
    """Replace block ``name`` of the Markdown file ``path`` with ``text``, or append it."""
    old = path.read_text() if path.exists() else ""
    block = f"<!-- begin:{name} -->\n{text.rstrip()}\n<!-- end:{name} -->\n"
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->\n"
    if begin in old and end in old:
        start = old.index(begin)
        stop = old.index(end, start) + len(end)
        path.write_text(old[:start] + block + old[stop:])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + block)


def keep_blocks(path: Path, new: str) -> str:
    """``new`` with the marked blocks of the current ``path`` that ``new`` lacks appended.

    Other benchmark scripts (``benchmarks/service.py``) write their sections
    into ``docs/performance.md`` between ``<!-- begin:NAME -->`` and
    ``<!-- end:NAME -->``; regenerating the page keeps them.
    """
    old = path.read_text() if path.exists() else ""
    kept = [
        m.group(0)
        for m in re.finditer(r"<!-- begin:(\S+) -->\n.*?<!-- end:\1 -->\n", old, re.S)
        if m.group(0).split("\n", 1)[0] not in new
    ]
    return new.rstrip("\n") + "\n" + "".join("\n" + block for block in kept)


# --------------------------------------------------------------------------- command lines


#: The options several benchmarks share; :func:`parser` adds those it is given.
_OPTIONS: dict[str, dict[str, Any]] = {
    "quick": {"action": "store_true", "help": "smoke run: tiny batches and cases (noisy numbers)"},
    "out": {"type": Path, "help": "results JSON (default: benchmarks/results/, see the README)"},
    "chart": {"type": Path, "help": "chart PNG"},
    "no-chart": {"action": "store_true", "help": "do not draw the chart"},
    "write-docs": {"action": "store_true", "help": "put the results into docs/performance.md"},
    "from-json": {"type": Path, "metavar": "RESULTS", "help": "no run: report these results"},
    "pg-url": {
        "default": os.environ.get("STATEKEEPER_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        "help": "PostgreSQL server for a throwaway database (default: %(default)s)",
    },
    "no-postgres": {"action": "store_true", "help": "SQLite only"},
    "no-fsync": {
        "action": "store_true",
        "help": "not the setup users run: SQLite files in /dev/shm and PostgreSQL's "
        "synchronous_commit off, for a figure shown beside the default one (never with "
        "--write-docs: the docs show the default setup)",
    },
}


def parser(
    doc: str, *names: str, only: tuple[str, ...] = (), **changed: dict[str, Any]
) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with the shared options ``names``.

    ``changed`` amends an option's settings, by its name with underscores:
    ``out={"help": "..."}``. ``only``: the sections ``--only`` may pick (a set).
    """
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    for name in names:
        p.add_argument(f"--{name}", **(_OPTIONS[name] | changed.get(name.replace("-", "_"), {})))
    if only:

        def sections(text: str) -> set[str]:
            chosen = {s.strip() for s in text.split(",") if s.strip()}
            if not chosen <= set(only):
                raise argparse.ArgumentTypeError(f"choose from {','.join(only)}")
            return chosen

        p.add_argument("--only", type=sections, default=set(only), help=f"some of {','.join(only)}")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``p.parse_args(argv)``, refusing ``--no-fsync`` with ``--write-docs``."""
    args = p.parse_args(argv)
    if getattr(args, "no_fsync", False) and getattr(args, "write_docs", False):
        p.error(
            "--no-fsync is not the setup users run: its figures go beside the default ones "
            "(--out), never into the docs instead of them; drop --write-docs"
        )
    return args


def postgres_skipped(args: argparse.Namespace) -> str | None:
    """Why this run leaves PostgreSQL out (``--no-postgres``, no server; printed), or ``None``."""
    if getattr(args, "no_postgres", False):
        return "--no-postgres"
    try:
        import psycopg
    except ImportError:
        reason = "psycopg is not installed: pip install 'statekeeper[postgres]'"
    else:
        try:
            with psycopg.connect(libpq_url(args.pg_url), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return None
        except Exception as exc:  # any connection failure means: skip PostgreSQL
            reason = f"PostgreSQL not reachable at {args.pg_url}: {exc}".strip()
    print(f"PostgreSQL skipped: {reason}", file=sys.stderr, flush=True)
    return reason


def save(data: Any, name: str, out: Path | None = None, *, quick: bool = False) -> Path:
    """Write ``data`` as JSON to ``out``, by default ``results/NAME.json`` (``NAME-quick``)."""
    path = out or RESULTS / f"{name}{'-quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def version(name: str) -> str:
    """The installed version of the distribution ``name``, or ``"not installed"``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def now_text() -> str:
    """The current UTC time to the minute, as the reports state a run's date."""
    return utcnow().strftime("%Y-%m-%d %H:%M UTC")


def fmt_us(seconds: float) -> str:
    """Seconds as ``123 µs`` below a millisecond, else ``1.23 ms``."""
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Imported:
    """What one ``statekeeper import`` run printed as its last line, and how long it took."""

    seconds: float
    imported: int
    unchanged: int
    skipped: int
    failed: int
    output: str


_SUMMARY = re.compile(r"^imported (\d+), unchanged (\d+), skipped (\d+), failed (\d+) of ", re.M)


def import_command(*args: str) -> Imported:
    """Run ``statekeeper import ARGS`` (the public command, in this process); read its summary."""
    from click.testing import CliRunner

    from statekeeper.cli import main

    started = time.perf_counter()
    done = CliRunner().invoke(main, ["import", *args])
    seconds = time.perf_counter() - started
    found = _SUMMARY.findall(done.output)
    if done.exit_code != 0 or not found:
        raise RuntimeError(f"statekeeper import {' '.join(args)} failed:\n{done.output[-2000:]}")
    imported, unchanged, skipped, failed = (int(n) for n in found[-1])
    return Imported(seconds, imported, unchanged, skipped, failed, done.output)


def import_twice(label: str, sessions: int, *args: str, events: int = 0) -> None:
    """``statekeeper import ARGS`` of ``sessions``, then again (nothing to write); print rates."""
    first = import_command(*args)
    assert first.imported == sessions, first.output[-2000:]
    what, rates = f"{sessions} sessions", f"{sessions / first.seconds:7.0f} sessions/s"
    if events:
        what += f" ({sessions * events} events)"
        rates += f", {sessions * events / first.seconds:7.0f} events/s"
    print(f"{label:10} {what} in {first.seconds:6.1f} s: {rates} (read-back check included)")
    again = import_command(*args)
    assert again.unchanged == sessions, again.output[-2000:]
    print(f"{label:10} second run (nothing to write): {sessions / again.seconds:7.0f} sessions/s")
