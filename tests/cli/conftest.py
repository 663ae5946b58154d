"""Fixtures of the command-line tests: an unmigrated database of each backend."""

from __future__ import annotations

import pytest


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A database of the backend under test without statekeeper's tables, for this test alone."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_empty_database"))
    return sqlite_url
