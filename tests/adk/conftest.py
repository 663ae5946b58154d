"""Fixtures for the ADK adapter: one service per database flavour ADK users run.

``adk_url`` is a migrated database of each kind: a SQLite file,
``sqlite:///:memory:`` (migrated by the service itself, since it is one
database per service), PostgreSQL, and PostgreSQL with the tables in a schema.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from statekeeper import migrations
from statekeeper.adk import SqlSessionService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PG_SCHEMA = "adk_sessions"


@pytest.fixture(scope="session")
def pg_schema_database(pg_database: str) -> str:
    """The run's PostgreSQL database with statekeeper's tables also in the schema ``PG_SCHEMA``."""
    engine = sa.create_engine(sa.make_url(pg_database).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{PG_SCHEMA}"'))
    engine.dispose()
    migrations.upgrade(pg_database, schema=PG_SCHEMA)
    return pg_database


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres", "postgres-schema"])
def flavour(request: pytest.FixtureRequest) -> str:
    """The database the service runs on."""
    return str(request.param)


@pytest.fixture
def service_args(flavour: str, request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """``SqlSessionService`` arguments for a migrated database of the flavour under test."""
    if flavour == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'adk.db'}"
        migrations.upgrade(url)
        return {"url_or_engine": url}
    if flavour == "sqlite-memory":
        return {"url_or_engine": "sqlite:///:memory:", "auto_migrate": True}
    if flavour == "postgres":
        return {"url_or_engine": request.getfixturevalue("pg_database")}
    return {"url_or_engine": request.getfixturevalue("pg_schema_database"), "schema": PG_SCHEMA}


@pytest.fixture
def app_name() -> str:
    """An app name of this test alone (the PostgreSQL databases are shared by the run)."""
    return f"app-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_service(service_args: dict[str, Any]) -> AsyncIterator[Callable[..., Any]]:
    """Build services on the test's database; all are closed at the end."""
    made: list[SqlSessionService] = []

    def make(**overrides: Any) -> SqlSessionService:
        args = {**service_args, **overrides}
        service = SqlSessionService(args.pop("url_or_engine"), **args)
        made.append(service)
        return service

    yield make
    for service in made:
        await service.close()


@pytest.fixture
def service(make_service: Callable[..., SqlSessionService]) -> SqlSessionService:
    """A service with default settings on the test's database."""
    return make_service()
