"""URLs: one URL serves both facades; unsupported databases and missing drivers are explained."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import sqlalchemy as sa

from statekeeper._sql import engine as _engine


@pytest.mark.parametrize(
    ("url", "sync", "async_"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
    ],
)
def test_one_url_gets_the_right_driver(url: str, sync: str, async_: str) -> None:
    assert _engine.normalize_url(url, is_async=False).drivername == sync
    assert _engine.normalize_url(url, is_async=True).drivername == async_
    assert (
        _engine.normalize_url(url, is_async=True).database
        == _engine.normalize_url(url, is_async=False).database
    )


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "oracle://x@y/z"])
def test_unsupported_database(url: str) -> None:
    with pytest.raises(ValueError, match="supports SQLite and PostgreSQL"):
        _engine.normalize_url(url, is_async=False)


def test_malformed_url() -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        _engine.normalize_url("no url at all", is_async=False)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "psycopg" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"pip install 'statekeeper\[postgres\]'"):
        _engine.normalize_url("postgresql://u@h/db", is_async=True)


def test_stores_on_one_url_share_one_engine_until_the_last_closes(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first, release_first = _engine.acquire_sync(url, None)
    second, release_second = _engine.acquire_sync(url, {})
    other, release_other = _engine.acquire_sync(url, {"echo": True})
    assert first is second
    assert other is not first
    assert release_first() is None  # still used by the second store
    assert release_first() is None  # releasing twice changes nothing
    assert release_second() is first  # the last user disposes of it
    third, release_third = _engine.acquire_sync(url, None)
    assert third is not first
    release_third()
    release_other()


def test_each_in_memory_database_is_its_own() -> None:
    first, release_first = _engine.acquire_sync("sqlite://", None)
    second, release_second = _engine.acquire_sync("sqlite:///:memory:", None)
    assert first is not second
    release_first()
    release_second()


@pytest.mark.parametrize(
    "options",
    [{"isolation_level": "SERIALIZABLE"}, {"execution_options": {"isolation_level": None}}],
)
def test_isolation_levels_that_would_lose_writes_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="autocommit"):
        _engine.acquire_sync("sqlite:///unused.db", options)
    with pytest.raises(ValueError, match="autocommit"):
        _engine.acquire_async("sqlite:///unused.db", options)


@pytest.mark.parametrize(
    ("code", "text", "resent"),
    [
        ("57P01", "terminating connection due to administrator command", True),
        ("57P05", "terminating connection due to idle-session timeout", True),
        # psycopg 3.0/3.1 when the socket closed while it read the notice: no SQLSTATE.
        (None, "consuming input failed: terminating connection due to administrator command", True),
        (None, "server closed the connection unexpectedly", False),  # maybe after a commit
        ("57P02", "terminating connection due to administrator command", False),  # crash
    ],
)
def test_only_a_session_ended_before_the_statement_is_resent(
    code: str | None, text: str, resent: bool
) -> None:
    from statekeeper._sql.driver import ended_unrun

    class Ended(Exception):
        sqlstate = code

    exc = sa.exc.OperationalError("SELECT 1", {}, Ended(text), connection_invalidated=True)
    assert ended_unrun(exc) is resent
    assert not ended_unrun(sa.exc.OperationalError("SELECT 1", {}, Ended(text)))  # still open
