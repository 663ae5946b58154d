"""Shared fixtures: databases (SQLite file, throwaway PostgreSQL database) and both facades.

PostgreSQL tests use ``STATEKEEPER_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each test run creates its own
database there and drops it at the end. Without a server the tests skip with
the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import inspect
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import AsyncSqlSession, SqlSession, migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

PG_URL = os.environ.get(
    "STATEKEEPER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _admin_engine() -> sa.Engine:
    url = sa.make_url(PG_URL).set(drivername="postgresql+psycopg")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[sa.URL]:
    """The PostgreSQL server's URL, or a skip (a failure under CI) when it is unreachable."""
    try:
        engine = _admin_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {PG_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return sa.make_url(PG_URL).set(drivername="postgresql+psycopg")


def create_pg_database(server: sa.URL) -> tuple[str, Callable[[], None]]:
    """Create a throwaway database; return its URL and a function that drops it."""
    name = f"statekeeper_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def pg_database(pg_server: sa.URL) -> Iterator[str]:
    """A migrated throwaway PostgreSQL database shared by the run (tests isolate by app_name)."""
    url, drop = create_pg_database(pg_server)
    migrations.upgrade(url)
    yield url
    drop()


@pytest.fixture
def pg_empty_database(pg_server: sa.URL) -> Iterator[str]:
    """A throwaway PostgreSQL database without statekeeper's tables, for this test alone."""
    url, drop = create_pg_database(pg_server)
    yield url
    drop()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """The URL of a fresh, unmigrated SQLite file."""
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database under test."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated database of the backend under test."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    migrations.upgrade(url)
    return url


class SyncAsAsync:
    """Wrap a sync store so one ``await``-style test body drives both facades."""

    def __init__(self, store: SqlSession) -> None:
        self.wrapped = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*args, **kwargs)

        return call


@pytest.fixture(params=["sync", "async"])
def facade(request: pytest.FixtureRequest) -> str:
    """Which facade drives the test."""
    return str(request.param)


#: Engines a store may run on: its own (from the URL), or a caller's on each driver.
DRIVERS = {
    ("sqlite", "sync"): ("statekeeper", "pysqlite"),
    ("sqlite", "async"): ("statekeeper", "aiosqlite"),
    ("postgres", "sync"): ("statekeeper", "psycopg", "psycopg2"),
    ("postgres", "async"): ("statekeeper", "psycopg", "asyncpg"),
}


@pytest.fixture(params=sorted({d for drivers in DRIVERS.values() for d in drivers}))
def driver(request: pytest.FixtureRequest) -> str:
    """Whose engine the store runs on: ``statekeeper`` (a URL) or a caller's, by driver."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the driver combinations that exist (pysqlite is not a PostgreSQL driver)."""
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        combo = (params.get("backend"), params.get("facade"))
        if "driver" in params and params["driver"] not in DRIVERS.get(combo, ()):  # type: ignore[arg-type]
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
async def make_store(db_url: str, facade: str, driver: str) -> AsyncIterator[Callable[..., Any]]:
    """Build stores on the test's database; each test gets its own ``app_name`` by default.

    With a driver other than ``statekeeper``, each store runs on a caller's
    engine made with that driver, disposed after the test.
    """
    app = f"app-{uuid.uuid4().hex[:8]}"
    made: list[Any] = []
    engines: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("app_name", app)
        target: Any = db_url
        if driver != "statekeeper":
            parsed = sa.make_url(db_url)
            backend = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
            parsed = parsed.set(drivername=f"{backend}+{driver}")
            target = create_async_engine(parsed) if facade == "async" else sa.create_engine(parsed)
            engines.append(target)
        if facade == "sync":
            store: Any = SyncAsAsync(SqlSession(target, **kwargs))
        else:
            store = AsyncSqlSession(target, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        result = store.close()
        if inspect.isawaitable(result):
            await result
    for engine in engines:
        result = engine.dispose()
        if inspect.isawaitable(result):
            await result


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    """A store with default settings on the test's database."""
    return make_store()
