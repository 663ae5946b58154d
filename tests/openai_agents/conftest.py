"""Fixtures for the OpenAI Agents SDK session: a migrated database of each kind.

``oa_url`` is a migrated SQLite file or the run's PostgreSQL database (tests
isolate by ``app_name`` there); ``make_session`` builds sessions on it and
closes them at the end.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from statekeeper import migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@pytest.fixture(params=["sqlite", "postgres"])
def oa_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated database: a SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'agents.db'}"
        migrations.upgrade(url)
        return url
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def app_name() -> str:
    """An app name of this test alone (the PostgreSQL database is shared by the run)."""
    return f"oa-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_session(oa_url: str, app_name: str) -> AsyncIterator[Callable[..., Any]]:
    """Build ``StatekeeperSession`` objects on the test's database; all closed at the end."""
    from statekeeper.openai_agents import StatekeeperSession

    made: list[StatekeeperSession] = []

    def make(session_id: str = "conv", **options: Any) -> StatekeeperSession:
        options.setdefault("app_name", app_name)
        session = StatekeeperSession(session_id, oa_url, **options)
        made.append(session)
        return session

    yield make
    for session in made:
        await session.close()
