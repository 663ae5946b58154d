"""Shared fixtures: the stores under test (SQL on SQLite and PostgreSQL, JSON files, Redis).

PostgreSQL tests use ``STATEKEEPER_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each test run creates its own
database there and drops it at the end. Redis tests use
``STATEKEEPER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) with a
key prefix of their own, deleted afterwards. Without a server the tests skip
with the reason, except under ``CI=true``, where they fail.

With ``STATEKEEPER_TEST_VIA_PGBOUNCER=1`` the stores and services of the
PostgreSQL tests reach their database through a PgBouncer in transaction
mode (the ``pgbouncer`` fixture starts one), with the one setting each driver
needs there (``POOLER_CONNECT_ARGS``); migrations still run on the direct
connection. Without a ``pgbouncer`` binary the tests that need one skip,
except under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import AsyncSqlSession, SqlSession, migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

#: A Citus coordinator (its nodes registered in this database, trust auth): when
#: set, the PostgreSQL tests run on Citus, on tables ``statekeeper db distribute``
#: distributed, and the Citus tests run too.
CITUS_URL = os.environ.get("STATEKEEPER_TEST_CITUS_URL", "")
PG_URL = CITUS_URL or os.environ.get(
    "STATEKEEPER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
VIA_PGBOUNCER = os.environ.get("STATEKEEPER_TEST_VIA_PGBOUNCER", "").lower() in ("1", "true", "yes")

#: The one setting behind a transaction-mode pooler, per engine maker (docs/deploying.md):
#: ``statekeeper`` is a store's own psycopg engine, given it as ``engine_options``.
POOLER_CONNECT_ARGS: dict[str, dict[str, Any]] = {
    "statekeeper": {"prepare_threshold": None},
    "psycopg": {"prepare_threshold": None},
    "asyncpg": {"statement_cache_size": 0},
}


def _admin_engine() -> sa.Engine:
    return _autocommit(sa.make_url(PG_URL).set(drivername="postgresql+psycopg"))


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


def _autocommit(url: sa.URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def make_citus_database(admin: sa.Engine, name: str) -> list[sa.Engine]:
    """Make the new database ``name`` a Citus cluster of its own: every node's database
    gets the extension, and the coordinator's knows the nodes. Returns the workers'
    admin engines (to drop theirs with)."""
    with admin.connect() as conn:
        nodes = conn.execute(
            sa.text("SELECT nodename, nodeport, groupid FROM pg_dist_node ORDER BY groupid")
        ).all()
    coordinator = admin.url.set(database=name)
    workers = [admin.url.set(host=host, port=port) for host, port, group in nodes if group != 0]
    engines = [_autocommit(url) for url in workers]
    for engine in engines:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    for url in [*(url.set(database=name) for url in workers), coordinator]:  # workers first
        engine = _autocommit(url)
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
            if url is coordinator:
                conn.execute(
                    sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                    {"h": url.host, "p": url.port},
                )
                for worker in workers:
                    conn.execute(
                        sa.text("SELECT citus_add_node(:h, :p)"),
                        {"h": worker.host, "p": worker.port},
                    )
        engine.dispose()
    return engines


def create_pg_database(
    server: sa.URL, *, citus: bool = bool(CITUS_URL)
) -> tuple[str, Callable[[], None]]:
    """Create a throwaway database; return its URL and a function that drops it.

    With ``citus`` (on a Citus server), a database on every node with the
    extension, its coordinator knowing its workers; without, a plain one.
    """
    name = f"statekeeper_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    workers = make_citus_database(admin, name) if citus else []

    def drop() -> None:
        for engine in [admin, *workers]:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def pg_direct_database(pg_server: sa.URL) -> Iterator[str]:
    """A migrated throwaway PostgreSQL database shared by the run, on the direct connection."""
    url, drop = create_pg_database(pg_server)
    migrations.upgrade(url)
    if CITUS_URL:
        migrations.distribute(url)
    yield url
    drop()


@pytest.fixture(scope="session")
def pg_database(pg_direct_database: str, request: pytest.FixtureRequest) -> str:
    """A migrated throwaway PostgreSQL database shared by the run (tests isolate by app_name).

    Under ``STATEKEEPER_TEST_VIA_PGBOUNCER=1`` its URL goes through the run's
    PgBouncer (migrated on the direct connection before).
    """
    if VIA_PGBOUNCER:
        return str(request.getfixturevalue("pgbouncer")(pg_direct_database))
    return pg_direct_database


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PGBOUNCER_INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 1000
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


@pytest.fixture(scope="session")
def pgbouncer(pg_server: sa.URL) -> Iterator[Callable[[str], str]]:
    """Start a PgBouncer in transaction mode on a free loopback port; yield URL -> URL through it.

    Few server connections (``default_pool_size = 3``), so clients really
    share them. Skips without a ``pgbouncer`` binary (fails under CI=true).
    """
    binary = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if binary is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if IN_CI:
            pytest.fail(message + " (CI=true: the pooler tests must run)")
        pytest.skip(message)
    folder = tempfile.mkdtemp(prefix="sk-pgbouncer-")
    port = _free_port()
    with open(os.path.join(folder, "pgbouncer.ini"), "w") as ini:
        ini.write(
            _PGBOUNCER_INI.format(
                host=pg_server.host, port=pg_server.port or 5432, listen=port, dir=folder
            )
        )
    with open(os.path.join(folder, "users.txt"), "w") as users:
        users.write(f'"{pg_server.username or "postgres"}" ""\n')
    command = [binary, os.path.join(folder, "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for name in os.listdir(folder):
            shutil.chown(os.path.join(folder, name), "postgres")
        command[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, os.path.join(folder, "pgbouncer.log"))
        yield (
            lambda url: (
                sa.make_url(url)
                .set(host="127.0.0.1", port=port)
                .render_as_string(hide_password=False)
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: str) -> None:
    """Return once the PgBouncer accepts connections on ``port``; fail if it exits first."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                pytest.fail(f"pgbouncer exited with {proc.returncode}: {f.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # no readiness signal to await: poll the port


def pooler_connect_args(url: str | sa.URL, driver: str) -> dict[str, Any]:
    """The ``connect_args`` an engine of ``driver`` on ``url`` needs (none off a pooler).

    A PostgreSQL URL on another port than the server's goes through a PgBouncer
    of this run (stateless: test modules import this file as ``tests.conftest``).
    """
    parsed = sa.make_url(url)
    direct = sa.make_url(PG_URL)
    if parsed.get_backend_name() != "postgresql" or (parsed.host, parsed.port or 5432) == (
        direct.host,
        direct.port or 5432,
    ):
        return {}
    return dict(POOLER_CONNECT_ARGS.get(driver, {}))


def with_pooler_setting(kwargs: dict[str, Any], url: str) -> dict[str, Any]:
    """Add the pooler setting to a URL store's ``engine_options`` when ``url`` goes through one."""
    args = pooler_connect_args(url, "statekeeper")
    if not args:
        return kwargs
    options = dict(kwargs.get("engine_options") or {})
    options["connect_args"] = {**args, **options.get("connect_args", {})}
    return {**kwargs, "engine_options": options}


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


def migrated_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Return a migrated database of ``backend`` (``sqlite`` or ``postgres``)."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated database of the backend under test."""
    return migrated_url(backend, request, tmp_path)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL, or a skip (a failure under CI) when it is unreachable."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        pytest.skip(f"redis-py is not installed: {exc}")
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: Redis tests must run)")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = f"sktest-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


STORE_KINDS = ["sqlite", "postgres", "json", "redis"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under test: SQL on SQLite or PostgreSQL, JSON files, or Redis."""
    return str(request.param)


def store_factory(
    store_kind: str,
    facade: str,
    request: pytest.FixtureRequest,
    tmp_path: Any,
    driver: str = "statekeeper",
    engines: list[Any] | None = None,
) -> Callable[..., Any]:
    """Return a function building stores of ``store_kind`` with ``facade``, sharing one place."""
    from statekeeper import AsyncJSONSession, AsyncRedisSession, JSONSession, RedisSession

    if store_kind in ("sqlite", "postgres"):
        url = migrated_url(store_kind, request, tmp_path)
        kinds: tuple[Any, Any] = (SqlSession, AsyncSqlSession)
        where: Any = url
        extra: dict[str, Any] = {}
        if driver != "statekeeper":
            parsed = sa.make_url(url)
            backend = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
            parsed = parsed.set(drivername=f"{backend}+{driver}")
            args = pooler_connect_args(url, driver)
            where = engine_maker(facade, driver)(parsed, connect_args=args)
            if engines is not None:
                engines.append(where)
    elif store_kind == "json":
        kinds, where, extra = (JSONSession, AsyncJSONSession), tmp_path / "sessions", {}
    else:
        kinds, where = (RedisSession, AsyncRedisSession), request.getfixturevalue("redis_url")
        extra = {"key_prefix": request.getfixturevalue("redis_prefix")}

    def build(**kwargs: Any) -> Any:
        kwargs = {**extra, **kwargs}
        if isinstance(where, str):
            kwargs = with_pooler_setting(kwargs, where)
        if facade == "sync":
            return SyncAsAsync(kinds[0](where, **kwargs))
        return kinds[1](where, **kwargs)

    return build


def engine_maker(facade: str, driver: str) -> Callable[..., Any]:
    """How a caller makes its engine: async for the async facade, but a pysqlite Engine."""
    return create_async_engine if facade == "async" and driver != "pysqlite" else sa.create_engine


@contextlib.contextmanager
def failing_event_insert(store: Any, nth: int) -> Iterator[list[int]]:
    """Make the ``nth`` event INSERT a store sends fail, as a lost connection would.

    Yields the count of event INSERTs sent so far. Statements before the
    failing one reach the database, so a write that is not one transaction
    shows what it left.
    """
    engine = getattr(store.engine, "sync_engine", store.engine)
    sent = [0]

    def fail(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "INSERT INTO statekeeper_events" in statement:
            sent[0] += 1
            if sent[0] == nth:
                raise ConnectionResetError("the connection went away mid-write")

    sa.event.listen(engine, "before_cursor_execute", fail)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail)


class SyncAsAsync:
    """Wrap a sync store so one ``await``-style test body drives both facades."""

    def __init__(self, store: Any) -> None:
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
    ("sqlite", "async"): ("statekeeper", "aiosqlite", "pysqlite"),  # pysqlite: in a thread
    ("postgres", "sync"): ("statekeeper", "psycopg", "psycopg2"),
    ("postgres", "async"): ("statekeeper", "psycopg", "asyncpg"),
    ("json", "sync"): ("statekeeper",),
    ("json", "async"): ("statekeeper",),
    ("redis", "sync"): ("statekeeper",),
    ("redis", "async"): ("statekeeper",),
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
        combo = (params.get("backend", params.get("store_kind")), params.get("facade"))
        if "driver" in params and params["driver"] not in DRIVERS.get(combo, ()):  # type: ignore[arg-type]
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
async def make_store(
    store_kind: str, facade: str, driver: str, request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Build stores of the kind under test; each test gets its own ``app_name`` by default.

    With a driver other than ``statekeeper`` (SQL kinds only), each store runs
    on a caller's engine made with that driver, disposed after the test.
    """
    app = f"app-{uuid.uuid4().hex[:8]}"
    engines: list[Any] = []
    build = store_factory(store_kind, facade, request, tmp_path, driver, engines)
    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("app_name", app)
        store = build(**kwargs)
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
