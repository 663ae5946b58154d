"""``SqlSessionService`` setup: migrations, engines, ``:memory:``, TTL, bad settings."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import BaseSessionService
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import migrations
from statekeeper.adk import SqlSessionService
from statekeeper.errors import SchemaNotReadyError

if TYPE_CHECKING:
    from collections.abc import Callable


def test_it_is_an_adk_session_service() -> None:
    assert issubclass(SqlSessionService, BaseSessionService)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A database without statekeeper's tables."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_empty_database"))
    return sqlite_url


async def test_an_unmigrated_database_raises_schema_not_ready_and_creates_nothing(
    empty_url: str,
) -> None:
    async with SqlSessionService(empty_url) as service:
        with pytest.raises(SchemaNotReadyError, match="statekeeper db upgrade"):
            await service.create_session(app_name="a", user_id="u")
    engine = sa.create_engine(sa.make_url(empty_url).set(drivername=_sync_driver(empty_url)))
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


async def test_auto_migrate_creates_the_tables_from_the_migrations(empty_url: str) -> None:
    async with SqlSessionService(empty_url, auto_migrate=True) as service:
        session = await service.create_session(app_name="a", user_id="u", state={"k": 1})
        assert await service.get_session(app_name="a", user_id="u", session_id=session.id)
    assert migrations.current(empty_url) == migrations.head()


def _sync_driver(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql+psycopg"


async def test_memory_database_is_one_database_for_the_service() -> None:
    async with SqlSessionService("sqlite:///:memory:", auto_migrate=True) as service:
        sessions = await asyncio.gather(
            *(service.create_session(app_name=f"app{i % 3}", user_id="u") for i in range(12))
        )
        await asyncio.gather(
            *(
                service.append_event(s, Event(author="user", actions={"state_delta": {"n": i}}))
                for i, s in enumerate(sessions)
            )
        )
        for i, s in enumerate(sessions):
            got = await service.get_session(app_name=s.app_name, user_id="u", session_id=s.id)
            assert got is not None
            assert got.state == {"n": i}
        assert len((await service.list_sessions(app_name="app0")).sessions) == 4
    # Another in-memory service is another database.
    async with SqlSessionService("sqlite:///:memory:", auto_migrate=True) as other:
        assert (await other.list_sessions(app_name="app0")).sessions == []


async def test_a_callers_engine_is_used_and_left_open(sqlite_url: str, tmp_path: Any) -> None:
    migrations.upgrade(sqlite_url)
    engine = create_async_engine(sa.make_url(sqlite_url).set(drivername="sqlite+aiosqlite"))
    try:
        async with SqlSessionService(engine) as service:
            assert service.engine.sync_engine.pool is engine.sync_engine.pool  # the caller's pool
            await service.create_session(app_name="a", user_id="u", session_id="s")
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT session_id FROM statekeeper_sessions"))
            assert rows.scalars().all() == ["s"]
    finally:
        await engine.dispose()


async def test_expired_sessions_read_as_absent_and_refuse_appends(
    make_service: Callable[..., SqlSessionService], app_name: str
) -> None:
    service = make_service(ttl=0.001)
    session = await service.create_session(app_name=app_name, user_id="u")
    await asyncio.sleep(0.01)
    assert await service.get_session(app_name=app_name, user_id="u", session_id=session.id) is None
    assert (await service.list_sessions(app_name=app_name)).sessions == []
    with pytest.raises(SessionNotFoundError):
        await service.append_event(session, Event(author="user"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": "agents"}, "schema"),
        ({"ttl": -1}, "ttl"),
    ],
)
def test_bad_settings_are_refused_up_front(
    sqlite_url: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SqlSessionService(sqlite_url, **kwargs)


def test_an_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        SqlSessionService("mysql://u@h/db")
