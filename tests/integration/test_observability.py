"""SQL tracing sees statekeeper: engine events, echo and logging see every statement."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import AsyncSqlSession, SqlSession

CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("set_state", ("s", {"a": 1}), {}),
    ("merge_state", ("s", {"b": 2}), {}),
    ("merge_state", ("s", {"c": 3}), {"expected_version": 2}),
    ("get_state", ("s",), {}),
    ("session_exists", ("s",), {}),
    ("list_sessions", (), {}),
    ("purge_expired", (), {}),
    ("delete_session", ("s",), {}),
]


async def _call(store: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    result = getattr(store, name)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _engine(db_url: str, facade: str, **options: Any) -> Any:
    url = sa.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite" if facade == "async" else "sqlite")
    else:
        url = url.set(drivername="postgresql+psycopg")
    if facade == "async":
        return create_async_engine(url, **options)
    return sa.create_engine(url, **options)


@pytest.mark.parametrize("whose", ["statekeeper", "caller"])
async def test_before_cursor_execute_sees_every_statement(
    db_url: str, facade: str, whose: str
) -> None:
    engine = _engine(db_url, facade) if whose == "caller" else None
    target = engine if engine is not None else db_url
    app = f"traced-{facade}-{whose}"
    store: Any = (
        SqlSession(target, app_name=app)
        if facade == "sync"
        else AsyncSqlSession(target, app_name=app)
    )
    seen: list[str] = []
    listened = store.engine.sync_engine if facade == "async" else store.engine
    sa.event.listen(listened, "before_cursor_execute", lambda c, cur, sql, *a: seen.append(sql))
    for name, args, kwargs in CALLS:
        before = len(seen)
        await _call(store, name, *args, **kwargs)
        traced = seen[before:]
        assert traced, f"{name} ran no statement a listener saw"
        assert any("statekeeper_sessions" in sql for sql in traced), (name, traced)
    await _call(store, "close")
    if engine is not None:
        await _call(engine, "dispose")


def test_echo_logs_the_statements(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="sqlalchemy.engine"),
        SqlSession(db_url, app_name="echoed", engine_options={"echo": True}) as store,
    ):
        store.set_state("s", {"a": 1})
        store.get_state("s")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy"))
    assert "INSERT INTO statekeeper_sessions" in logged
    assert "FROM statekeeper_sessions" in logged
