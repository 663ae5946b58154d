"""A database going away, a store closed, a caller's isolation level: typed errors, nothing lost."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import PG_URL, pooler_connect_args, with_pooler_setting

from statekeeper import (
    AsyncSqlSession,
    DatabaseUnavailableError,
    SqlSession,
    StoreClosedError,
    migrations,
)

CLOSED_PORT = "postgresql://postgres@127.0.0.1:1/nothing"


async def _call(store: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    result = getattr(store, name)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _store(facade: str, target: Any, **kwargs: Any) -> Any:
    if isinstance(target, str):  # behind the run's PgBouncer: with the documented setting
        kwargs = with_pooler_setting(kwargs, target)
    return SqlSession(target, **kwargs) if facade == "sync" else AsyncSqlSession(target, **kwargs)


@pytest.mark.parametrize(
    "target",
    [CLOSED_PORT, "postgresql+psycopg2://postgres@127.0.0.1:1/x", "sqlite:////no/such/dir/x.db"],
)
async def test_an_unreachable_database_raises_one_error_type(facade: str, target: str) -> None:
    if facade == "async" and "psycopg2" in target:
        target = target.replace("psycopg2", "asyncpg")
    own = "+" not in target
    if own:
        store = _store(facade, target)
    else:  # a caller's engine on another driver
        url = sa.make_url(target)
        engine = create_async_engine(url) if facade == "async" else sa.create_engine(url)
        store = _store(facade, engine)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect to the database") as info:
        await _call(store, "get_state", "s")
    assert isinstance(info.value, ConnectionError)
    assert "Check that the server is running" in str(info.value)
    await _call(store, "close")


def test_migrations_on_an_unreachable_database_raise_it_too() -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        migrations.upgrade(CLOSED_PORT)
    with pytest.raises(DatabaseUnavailableError):
        migrations.current(CLOSED_PORT)


def _terminate_other_backends(url: str, *, wait: bool = True) -> int:
    # On the server itself, not through a pooler the store may be behind (its
    # server connections would include this one's).
    server = sa.make_url(PG_URL)
    target = sa.make_url(url).set(
        drivername="postgresql+psycopg", host=server.host, port=server.port
    )
    engine = sa.create_engine(target, poolclass=sa.NullPool)
    # With a timeout, PostgreSQL returns once each backend has exited, not when
    # the signal is sent: the store meets a dead connection every time. Without
    # one it returns at once, and a store's next call may reach a backend that
    # has the signal but has not acted on it yet (nothing on the socket so far).
    terminate = "pg_terminate_backend(pid, 60000)" if wait else "pg_terminate_backend(pid)"
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                f"SELECT count({terminate}) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    engine.dispose()
    return int(killed or 0)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_connections_killed_by_the_server_are_replaced_every_time(
    db_url: str, facade: str
) -> None:
    store = _store(facade, db_url, app_name=f"killed-{facade}")
    await _call(store, "set_state", "s", {"a": 0})
    for n in range(1, 11):
        assert _terminate_other_backends(db_url) >= 1
        assert await _call(store, "merge_state", "s", {"a": n}) == n + 1
        assert await _call(store, "get_state", "s") == {"a": n}
    await _call(store, "close")


async def _fill_pool(store: Any, facade: str, size: int) -> None:
    """Leave ``size`` idle connections in the store's pool (calls that overlap)."""
    if facade == "async":
        await asyncio.gather(*(store.get_state("s") for _ in range(size * 4)))
    else:
        with ThreadPoolExecutor(size) as pool:
            list(pool.map(lambda _: store.get_state("s"), range(size * 4)))


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("first", ["reads", "writes"])
async def test_calls_right_after_terminating_every_connection_all_succeed(
    db_url: str, facade: str, first: str
) -> None:
    # pg_terminate_backend without waiting: the race between the signal and the
    # backend's notice on the socket. Each write lands exactly once.
    store = _store(facade, db_url, app_name=f"race-{facade}-{first}")
    await _call(store, "set_state", "s", {"n": 0})
    failed: list[str] = []
    versions: list[int] = []  # what each write returned: none lost, none applied twice
    for _ in range(5):
        await _fill_pool(store, facade, 5)
        assert _terminate_other_backends(db_url, wait=False) >= 1
        for n in range(30):
            try:
                if (n % 2 == 0) == (first == "writes"):
                    versions.append(await _call(store, "merge_state", "s", {"n": n}))
                else:
                    await _call(store, "get_state", "s")
            except DatabaseUnavailableError as exc:
                failed.append(str(exc))
    assert failed == []
    assert versions == list(range(2, len(versions) + 2))
    assert await _call(store, "set_state", "s", {}) == len(versions) + 2
    await _call(store, "close")


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_connection_lost_mid_use_is_a_typed_error_then_recovers(
    db_url: str, facade: str
) -> None:
    # A caller's engine without pre-ping: the store meets the dead connection.
    url = sa.make_url(db_url).set(drivername="postgresql+psycopg")
    args = pooler_connect_args(url, "psycopg")
    make: Any = create_async_engine if facade == "async" else sa.create_engine
    engine = make(url, connect_args=args)
    store = _store(facade, engine, app_name=f"lost-{facade}")
    await _call(store, "set_state", "s", {"a": 1})
    _terminate_other_backends(db_url)
    if args:  # behind a pooler: its connection to the app lives on, it replaces its own
        assert await _call(store, "get_state", "s") == {"a": 1}
    else:
        with pytest.raises(DatabaseUnavailableError, match="lost the connection"):
            await _call(store, "get_state", "s")
    assert await _call(store, "get_state", "s") == {"a": 1}  # the pool replaced it
    await _call(store, "close")
    await _call(engine, "dispose")


METHODS: list[tuple[str, tuple[Any, ...]]] = [
    ("save_session_state", ("s",)),
    ("load_session_state", ("s",)),
    ("get_state", ("s",)),
    ("set_state", ("s", {})),
    ("merge_state", ("s", {})),
    ("delete_session", ("s",)),
    ("session_exists", ("s",)),
    ("list_sessions", ()),
    ("purge_expired", ()),
]


async def test_a_closed_store_refuses_every_call(db_url: str, facade: str) -> None:
    store = _store(facade, db_url)
    other = _store(facade, db_url)  # shares the engine of the URL
    await _call(store, "set_state", "s", {"a": 1})
    await _call(store, "close")
    await _call(store, "close")  # closing twice is fine
    for name, args in METHODS:
        with pytest.raises(StoreClosedError, match="closed; create a new one"):
            await _call(store, name, *args)
    assert await _call(other, "get_state", "s") == {"a": 1}
    await _call(other, "close")


#: Isolation levels an app may have set on its engine, per database.
LEVELS = {"sqlite": ["SERIALIZABLE"], "postgresql": ["SERIALIZABLE", "REPEATABLE READ"]}


async def test_a_callers_isolation_level_never_loses_a_write(db_url: str, facade: str) -> None:
    url = sa.make_url(db_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite" if facade == "async" else "sqlite")
    else:
        url = url.set(drivername="postgresql+psycopg")
    for level in LEVELS[backend]:
        engine: Any = (
            create_async_engine(url, isolation_level=level)
            if facade == "async"
            else sa.create_engine(url, isolation_level=level)
        )
        app = f"iso-{facade}-{level}"
        store = _store(facade, engine, app_name=app)
        assert await _call(store, "set_state", "s", {"a": 1}) == 1
        assert await _call(store, "merge_state", "s", {"b": 2}) == 2
        # Another connection sees both writes, before the store is closed.
        assert _committed_version(db_url, app) == (2, 0)
        await _call(store, "close")
        await _call(engine, "dispose")


def _committed_version(db_url: str, app: str) -> tuple[int, int]:
    """The version another connection sees, and how many backends sit idle in transaction."""
    engine = sa.create_engine(sa.make_url(db_url), poolclass=sa.NullPool)
    with engine.connect() as conn:
        version = conn.execute(
            sa.text("SELECT version FROM statekeeper_sessions WHERE app_name = :a"), {"a": app}
        ).scalar()
        idle = 0
        if engine.dialect.name == "postgresql":
            idle = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'idle in transaction'"
                )
            ).scalar()
    engine.dispose()
    return int(version or 0), int(idle or 0)
