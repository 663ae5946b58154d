"""A store used before ``os.fork()`` never lets a child use a connection the parent opened.

The parent makes a store (from a URL, or on its own engine), writes one
session per child and reads one back, so its pool holds a connection; then
it forks. Each child merges into and reads its own session; every read must
be the child's own session (never another user's, never absent) and no call
may raise. The parent must keep working afterwards. Children report through
a pipe or a queue; every wait is bounded, so a hang fails the test.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import select
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from statekeeper import (
    AsyncRedisSession,
    AsyncSessionService,
    AsyncSqlSession,
    RedisSession,
    SessionService,
    SqlSession,
    migrations,
)

CHILDREN = 3
CALLS = 15
TIMEOUT = 60.0  # seconds for all children of one test; a hang fails instead of blocking

SQL_KINDS = ["SqlSession", "AsyncSqlSession", "SessionService", "AsyncSessionService", "adk"]
ASYNC_KINDS = {"AsyncSqlSession", "AsyncSessionService", "adk", "AsyncRedisSession"}
_INHERITED_LOOPS: list[asyncio.AbstractEventLoop] = []  # in a child: the parent's, kept open


class Facade:
    """One store kind, driven the same way from sync and async code."""

    def __init__(self, kind: str, target: Any, app_name: str) -> None:
        self.kind = kind
        self.target = target
        self.app_name = app_name
        self.loop = asyncio.new_event_loop() if kind in ASYNC_KINDS else None
        self.store = self.call(self._make)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (for an async kind, the coroutine it returns, on this process's loop)."""
        result = fn()
        return self.loop.run_until_complete(result) if self.loop is not None else result

    async def _amake(self) -> Any:
        return self._build()

    def _make(self) -> Any:
        return self._amake() if self.loop is not None else self._build()

    def _build(self) -> Any:
        kind, target, app = self.kind, self.target, self.app_name
        if kind in ("SqlSession", "AsyncSqlSession"):
            cls: Any = SqlSession if kind == "SqlSession" else AsyncSqlSession
            return cls(target, app_name=app)
        if kind in ("SessionService", "AsyncSessionService"):
            cls = SessionService if kind == "SessionService" else AsyncSessionService
            return cls(target, app_name=app)
        if kind == "adk":
            from statekeeper.adk import SqlSessionService

            return SqlSessionService(target)
        cls = RedisSession if kind == "RedisSession" else AsyncRedisSession
        return cls(target, key_prefix=app)

    def seed(self, c: int) -> None:
        """Create child ``c``'s session, owned by user ``u{c}``."""
        s, sid, uid = self.store, f"s{c}", f"u{c}"
        if self.kind in ("SessionService", "AsyncSessionService"):
            self.call(lambda: s.create_session(sid, uid, state={"owner": c}))
        elif self.kind == "adk":
            self.call(
                lambda: s.create_session(
                    app_name=self.app_name, user_id=uid, session_id=sid, state={"owner": c}
                )
            )
        else:
            self.call(lambda: s.set_state(sid, {"owner": c}, user_id=uid))

    def step(self, c: int, i: int) -> int | None:
        """Write to child ``c``'s session (where the kind writes), read it; return its owner."""
        s, sid, uid = self.store, f"s{c}", f"u{c}"
        if self.kind in ("SessionService", "AsyncSessionService"):
            self.call(lambda: s.append_event(sid, {"n": i}, uid, state_delta={"n": i}))
            got = self.call(lambda: s.get_session(sid, uid, recent=1))
            return None if got is None else got.state.get("owner")
        if self.kind == "adk":
            got = self.call(
                lambda: s.get_session(app_name=self.app_name, user_id=uid, session_id=sid)
            )
            return None if got is None else got.state.get("owner")
        self.call(lambda: s.merge_state(sid, {"n": i}, user_id=uid))
        state = self.call(lambda: s.get_state(sid, user_id=uid))
        return None if state is None else state.get("owner")

    def work(self, c: int, calls: int) -> dict[str, Any]:
        """Run ``calls`` steps as child ``c``; count wrong and missing reads and errors."""
        wrong = missing = 0
        errors: list[str] = []
        for i in range(calls):
            try:
                owner = self.step(c, i)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if owner is None:
                missing += 1
            elif owner != c:
                wrong += 1
        return {"wrong": wrong, "missing": missing, "errors": errors}

    def in_child(self, c: int, calls: int) -> dict[str, Any]:
        """Work as a forked child, on a loop of its own for an async kind."""
        if self.loop is not None:
            # The parent's loop is the parent's: kept referenced and never closed
            # here. Its epoll instance is shared with the parent, so closing it
            # (or letting it be collected) in the child unregisters the parent's
            # wake-up pipe, and the parent's loop never sees a thread finish.
            _INHERITED_LOOPS.append(self.loop)
            self.loop = asyncio.new_event_loop()
        return self.work(c, calls)


# --------------------------------------------------------------------------- children


def _read_until_eof(fd: int, deadline: float) -> bytes | None:
    """Read ``fd`` to its end, or return ``None`` at ``deadline``."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fork_children(run: Callable[[int], dict[str, Any]], children: int) -> list[dict[str, Any]]:
    """Run ``run(c)`` in ``children`` forked children; return their reports (a hang is one)."""
    started = []
    for c in range(children):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running the parent's cleanup
            try:
                os.close(read_end)
                try:
                    report = run(c)
                except BaseException as exc:
                    report = {"errors": [f"child crashed: {type(exc).__name__}: {exc}"]}
                os.write(write_end, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        started.append((pid, read_end))
    deadline = time.monotonic() + TIMEOUT
    reports = []
    for pid, read_end in started:
        data = _read_until_eof(read_end, deadline)
        os.close(read_end)
        if data is None:
            os.kill(pid, signal.SIGKILL)
            reports.append({"errors": [f"child hung for more than {TIMEOUT}s"]})
        else:
            reports.append(json.loads(data) if data else {"errors": ["child died silently"]})
        os.waitpid(pid, 0)
    return reports


def _mp_child(facade: Facade, c: int, calls: int, queue: Any) -> None:
    queue.put(facade.in_child(c, calls))


def _spawned_child(kind: str, target: str, app_name: str, c: int, calls: int, queue: Any) -> None:
    queue.put(Facade(kind, target, app_name).work(c, calls))


def mp_children(
    method: str,
    target: Callable[..., None],
    args: Callable[[int], tuple[Any, ...]],
    children: int = CHILDREN,
) -> list[dict[str, Any]]:
    """Run ``target(*args(c), queue)`` in processes of start ``method``; return their reports."""
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args(c), queue)) for c in range(children)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + TIMEOUT
    reports = []
    for _ in procs:
        try:
            reports.append(queue.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception:
            reports.append({"errors": [f"a child hung for more than {TIMEOUT}s"]})
    for proc in procs:
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    return reports


def assert_clean(reports: list[dict[str, Any]], facade: Facade) -> None:
    """No wrong or missing read and no error in any child; the parent still reads right."""
    summary = {
        "wrong": sum(r.get("wrong", 0) for r in reports),
        "missing": sum(r.get("missing", 0) for r in reports),
        "errors": [e for r in reports for e in r.get("errors", [])],
    }
    assert summary == {"wrong": 0, "missing": 0, "errors": []}
    assert facade.work(0, 5) == {"wrong": 0, "missing": 0, "errors": []}  # the parent's turn


# --------------------------------------------------------------------------- targets


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated SQLite file or the run's throwaway PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database"))
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    migrations.upgrade(url)
    return url


def caller_engine(kind: str, url: str) -> sa.Engine | AsyncEngine:
    """The engine a caller would pass, already used by the caller before the store sees it."""
    backend = sa.make_url(url).get_backend_name()
    if kind in ASYNC_KINDS:
        engine: Any = create_async_engine(
            sa.make_url(url).set(
                drivername=f"{backend}+{'aiosqlite' if backend == 'sqlite' else 'psycopg'}"
            )
        )

        async def use() -> None:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        asyncio.run(use())
        return engine  # type: ignore[no-any-return]
    engine = sa.create_engine(
        sa.make_url(url).set(
            drivername=f"{backend}+{'pysqlite' if backend == 'sqlite' else 'psycopg'}"
        )
    )
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    return engine  # type: ignore[no-any-return]


@pytest.fixture
def make_facade() -> Iterator[Callable[[str, Any], Facade]]:
    """Build a seeded facade the parent has used; close it afterwards."""
    made: list[Facade] = []

    def make(kind: str, target: Any, app_name: str | None = None) -> Facade:
        facade = Facade(kind, target, app_name or f"fork-{uuid.uuid4().hex[:8]}")
        for c in range(CHILDREN):
            facade.seed(c)
        assert facade.step(0, -1) == 0  # the parent's pool now holds a connection
        made.append(facade)
        return facade

    yield make
    for facade in made:
        facade.call(facade.store.close)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("owner", ["url", "engine"])
@pytest.mark.parametrize("kind", SQL_KINDS)
def test_sql_stores_used_before_fork(kind: str, owner: str, sql_url: str, make_facade: Any) -> None:
    if kind == "adk":  # the dev extra installs it; CI's lowest-versions run goes without
        pytest.importorskip("google.adk", reason="the adk extra is not installed here")
    target = sql_url if owner == "url" else caller_engine(kind, sql_url)
    facade = make_facade(kind, target)
    assert_clean(fork_children(lambda c: facade.in_child(c, CALLS), CHILDREN), facade)


@pytest.mark.parametrize("kind", ["RedisSession", "AsyncRedisSession"])
def test_redis_stores_used_before_fork(
    kind: str, redis_url: str, redis_prefix: str, make_facade: Any
) -> None:
    facade = make_facade(kind, redis_url, redis_prefix)
    assert_clean(fork_children(lambda c: facade.in_child(c, CALLS), CHILDREN), facade)


@pytest.mark.parametrize("owner", ["url", "engine"])
@pytest.mark.parametrize("kind", ["SqlSession", "AsyncSqlSession"])
def test_multiprocessing_fork_children(
    kind: str, owner: str, sql_url: str, make_facade: Any
) -> None:
    target = sql_url if owner == "url" else caller_engine(kind, sql_url)
    facade = make_facade(kind, target)
    reports = mp_children("fork", _mp_child, lambda c: (facade, c, CALLS))
    assert_clean(reports, facade)


@pytest.mark.parametrize("kind", ["SqlSession", "AsyncSqlSession"])
def test_multiprocessing_spawn_children_beside_the_parent(
    kind: str, pg_database: str, make_facade: Any
) -> None:
    # A spawned child inherits nothing: it makes its store from the URL while
    # the parent's store (and pool) stay in use.
    facade = make_facade(kind, pg_database)
    reports = mp_children(
        "spawn", _spawned_child, lambda c: (kind, pg_database, facade.app_name, c, CALLS), 2
    )
    assert_clean(reports, facade)


@pytest.mark.parametrize("kind", ["SqlSession", "AsyncSqlSession"])
def test_a_store_made_in_the_child_while_another_thread_held_the_engine_lock(
    kind: str, sql_url: str, make_facade: Any
) -> None:
    # Another thread of the parent was in the middle of making a store when
    # the process forked: the child must not wait for it for ever.
    from statekeeper._sql import engine as _engine

    facade = make_facade(kind, sql_url)
    registry_lock = _engine._SYNC.lock if kind == "SqlSession" else _engine._ASYNC_LOCK
    taken, forked = threading.Event(), threading.Event()

    def hold() -> None:
        with registry_lock:
            taken.set()
            forked.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(TIMEOUT)
    try:

        def child(c: int) -> dict[str, Any]:
            return Facade(kind, sql_url, facade.app_name).work(c, 3)

        reports = fork_children(child, 1)
    finally:
        forked.set()
        holder.join(TIMEOUT)
    assert_clean(reports, facade)


@pytest.mark.parametrize("kind", ["SqlSession", "AsyncSqlSession", "AsyncSessionService"])
def test_a_callers_engine_used_before_fork_and_first_given_to_a_store_in_the_child(
    kind: str, sql_url: str, make_facade: Any
) -> None:
    # The app used its engine before forking, statekeeper saw it only in the
    # children: the connections the children inherited carry no stamp, and
    # statekeeper's checkouts replace them instead of sharing the parent's.
    seeded = make_facade(kind, sql_url)
    engine = caller_engine(kind, sql_url)

    def child(c: int) -> dict[str, Any]:
        return Facade(kind, engine, seeded.app_name).work(c, CALLS)

    reports = fork_children(child, CHILDREN)
    parent = Facade(kind, engine, seeded.app_name)
    try:
        assert_clean(reports, parent)
    finally:
        parent.call(parent.store.close)
