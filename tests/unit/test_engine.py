"""URLs: one URL serves both facades; unsupported databases and missing drivers are explained."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from statekeeper import _engine


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


def test_server_engines_pre_ping_and_sqlite_waits_when_busy() -> None:
    pg = _engine.sync_engine("postgresql://u@h/db", None)
    assert pg.pool._pre_ping
    sqlite = _engine.sync_engine("sqlite:///unused.db", {"echo": False})
    assert not sqlite.pool._pre_ping
    pg.dispose()
    sqlite.dispose()
