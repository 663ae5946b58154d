"""``statekeeper db distribute`` and ``migrations.distribute``: statekeeper's tables on Citus.

The Citus tests need a Citus coordinator at ``STATEKEEPER_TEST_CITUS_URL``
(Citus is not in the package registries: see CONTRIBUTING.md); without one
they are skipped with that reason. The refusals run everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import CITUS_URL, create_pg_database, make_citus_database
from tests.integration.test_store import Plain

from statekeeper import SessionService, SqlSession, migrations
from statekeeper.errors import SchemaNotReadyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.cli.conftest import Cli

needs_citus = pytest.mark.skipif(
    not CITUS_URL,
    reason="no Citus coordinator: set STATEKEEPER_TEST_CITUS_URL "
    "(e.g. postgresql://postgres@127.0.0.1:9700/test) to run the Citus tests",
)

#: What every table must be once distributed: (Citus table type, distribution column).
LAYOUT = {
    "statekeeper_sessions": ("distributed", "user_id"),
    "statekeeper_events": ("distributed", "user_id"),
    "statekeeper_user_state": ("distributed", "user_id"),
    "statekeeper_app_state": ("reference", "<none>"),
    "statekeeper_alembic_version": ("reference", "<none>"),
}


def citus_layout(url: str) -> dict[str, tuple[str, str]]:
    """What Citus made of each statekeeper table, and whether they share a colocation group."""
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT table_name::text, citus_table_type, distribution_column, "
                    "colocation_id FROM citus_tables WHERE table_name::text LIKE 'statekeeper_%'"
                )
            ).all()
    finally:
        engine.dispose()
    groups = {colocation for _, kind, _, colocation in rows if kind == "distributed"}
    assert len(groups) <= 1, f"distributed tables not co-located: {rows}"
    return {name: (kind, column) for name, kind, column, _ in rows}


@pytest.fixture
def citus_database(pg_server: sa.URL) -> Iterator[str]:
    """A Citus database (every node, the extension) without statekeeper's tables."""
    url, drop = create_pg_database(pg_server, citus=True)
    yield url
    drop()


@pytest.fixture
def plain_pg_database(pg_server: sa.URL) -> Iterator[str]:
    """A database without the citus extension (on the Citus server, when there is one)."""
    url, drop = create_pg_database(pg_server, citus=False)
    yield url
    drop()


def test_refused_without_the_citus_extension(plain_pg_database: str, cli: Any) -> None:
    migrations.upgrade(plain_pg_database)
    with SqlSession(plain_pg_database, app_name="app") as store:
        store.set_state("s", {"n": 1}, "u")
    result: Cli = cli("db", "distribute", "--url", plain_pg_database)
    assert result.code == 3, result
    (line,) = result.stderr.splitlines()
    assert "citus extension" in line
    assert "Traceback" not in result.stderr
    with pytest.raises(SchemaNotReadyError, match="citus extension"):
        migrations.distribute(plain_pg_database)
    with SqlSession(plain_pg_database, app_name="app") as store:  # nothing changed
        assert store.get_state("s", "u") == {"n": 1}


def test_refused_on_sqlite(sqlite_url: str, cli: Any) -> None:
    result = cli("db", "distribute", "--url", sqlite_url)
    assert result.code == 1, result
    assert "PostgreSQL" in result.stderr
    assert "nothing to distribute" in result.stderr
    with pytest.raises(ValueError, match="Citus"):
        migrations.distribute(sqlite_url)


@needs_citus
def test_refused_before_the_tables_exist(citus_database: str, cli: Any) -> None:
    result = cli("db", "distribute", "--url", citus_database)
    assert result.code == 3, result
    assert "no statekeeper tables" in result.stderr
    assert "statekeeper db upgrade --url" in result.stderr


@needs_citus
def test_distribute_moves_existing_sessions_and_is_idempotent(
    citus_database: str, cli: Callable[..., Cli]
) -> None:
    migrations.upgrade(citus_database)
    with SqlSession(citus_database, app_name="app") as store:
        for user in range(20):
            store.set_state("s", {"user": user}, f"user-{user}")
    with SessionService(citus_database, app_name="app") as service:
        service.create_session("s", "u", state={"app:mode": "x", "user:name": "Ada", "k": 1})
        service.append_event("s", {"id": "e1"}, "u", state_delta={"k": 2})
    first = cli("db", "distribute", "--url", citus_database)
    assert first.code == 0, first
    for table, (kind, _) in LAYOUT.items():
        word = "distributed" if kind == "distributed" else "reference table"
        assert any(table in line and word in line for line in first.stdout.splitlines()), first
    assert citus_layout(citus_database) == LAYOUT

    with SqlSession(citus_database, app_name="app") as store:  # the rows moved to the shards
        assert [store.get_state("s", f"user-{u}") for u in range(20)] == [
            {"user": u} for u in range(20)
        ]
    with SessionService(citus_database, app_name="app") as service:
        got = service.get_session("s", "u")
        assert got is not None
        assert got.state == {"app:mode": "x", "user:name": "Ada", "k": 2}
        assert [event.data for event in got.events] == [{"id": "e1"}]

    again = cli("db", "distribute", "--url", citus_database)
    assert again.code == 0, again
    assert "already distributed; nothing to do" in again.stdout
    assert migrations.distribute(citus_database) == []


@needs_citus
def test_later_revisions_distribute_the_tables_they_create(citus_database: str) -> None:
    migrations.upgrade(citus_database, "0001")
    assert migrations.distribute(citus_database) == [
        "distributed statekeeper_sessions on user_id",
        "made statekeeper_alembic_version a reference table (a copy on every node)",
    ]
    migrations.upgrade(citus_database)  # 0001 -> head, on distributed tables
    assert citus_layout(citus_database) == LAYOUT
    assert migrations.distribute(citus_database) == []
    with SessionService(citus_database, app_name="app") as service:
        service.create_session("s", "u", state={"app:a": 1})
        service.append_event("s", {"id": "e1"}, "u", state_delta={"user:b": 2})
        got = service.get_session("s", "u")
        assert got is not None
        assert got.state == {"app:a": 1, "user:b": 2}


@needs_citus
def test_refuses_a_table_distributed_another_way(citus_database: str) -> None:
    migrations.upgrade(citus_database)
    engine = sa.create_engine(sa.make_url(citus_database).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(
            sa.text("SELECT create_distributed_table('statekeeper_sessions', 'session_id')")
        )
    engine.dispose()
    with pytest.raises(SchemaNotReadyError, match=r"distributed on session_id.*undistribute_table"):
        migrations.distribute(citus_database)
    assert citus_layout(citus_database) == {"statekeeper_sessions": ("distributed", "session_id")}


@needs_citus
async def test_adistribute(citus_database: str) -> None:
    migrations.upgrade(citus_database)
    engine = create_async_engine(sa.make_url(citus_database).set(drivername="postgresql+psycopg"))
    try:
        done = await migrations.adistribute(engine)
        assert len(done) == len(LAYOUT)
        assert await migrations.adistribute(engine) == []
    finally:
        await engine.dispose()
    assert citus_layout(citus_database) == LAYOUT


@needs_citus
def test_a_database_upgraded_before_citus_was_installed(pg_server: sa.URL) -> None:
    url, drop = create_pg_database(pg_server, citus=False)
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    workers: list[sa.Engine] = []
    try:
        migrations.upgrade(url)  # the merge function lands on this node alone
        with SqlSession(url, app_name="app") as store:
            store.set_state("s", {"a": 1}, "u")
        workers = make_citus_database(admin, sa.make_url(url).database or "")
        done = migrations.distribute(url)
        assert "created statekeeper_merge_json() on every node" in done
        assert citus_layout(url) == LAYOUT
        with SqlSession(url, app_name="app") as store:  # merges run on the workers
            store.merge_state("s", {"b": 2}, "u")
            store.save_session_state("t", "v", agent=Plain())
            assert store.get_state("s", "u") == {"a": 1, "b": 2}
        assert migrations.distribute(url) == []
    finally:
        drop()
        for engine in workers:
            with engine.connect() as conn:
                conn.execute(
                    sa.text(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
                )
            engine.dispose()
        admin.dispose()
