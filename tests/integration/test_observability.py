"""SQL tracing sees statekeeper: engine events, echo, logging, OpenTelemetry see every statement."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import create_async_engine

from statekeeper import AsyncSessionService, AsyncSqlSession, SessionService, SqlSession

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
    listened = getattr(store.engine, "sync_engine", store.engine)
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


# --------------------------------------------------------------------------- OpenTelemetry

SECRET = "s3cr3t-card-4242"  # a state value that must reach no span


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry's SQLAlchemy instrumentation on every engine made from now on, as an app
    sets it up at start (the global ``instrument()``), its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # skip_dep_check: the instrumentation declares SQLAlchemy < 2.1 and refuses 2.1 without it.
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        yield exporter
    finally:
        SQLAlchemyInstrumentor().uninstrument()


def _statement_spans(exporter: InMemorySpanExporter) -> list[str]:
    return [
        str(span.attributes["db.statement"])
        for span in exporter.get_finished_spans()
        if span.attributes and "db.statement" in span.attributes
    ]


def _assert_no_secret(exporter: InMemorySpanExporter) -> None:
    for span in exporter.get_finished_spans():
        texts = [span.name, *(f"{k}={v}" for k, v in (span.attributes or {}).items())]
        texts += [str(event.attributes) for event in span.events]
        leaked = [t for t in texts if SECRET in t]
        assert not leaked, (span.name, leaked)


def _listen(store: Any, facade: str) -> list[str]:
    seen: list[str] = []
    target = getattr(store.engine, "sync_engine", store.engine)
    sa.event.listen(target, "before_cursor_execute", lambda c, cur, sql, *a: seen.append(sql))
    return seen


async def _trace_calls(
    store: Any, facade: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], exporter: Any
) -> None:
    seen = _listen(store, facade)
    for name, args, kwargs in calls:
        before_seen, before_spans = len(seen), len(_statement_spans(exporter))
        await _call(store, name, *args, **kwargs)
        ran, traced = seen[before_seen:], _statement_spans(exporter)[before_spans:]
        assert ran, f"{name} ran no statement"
        assert traced == ran, f"{name}: {len(ran)} statements ran, {len(traced)} spans"
    await _call(store, "close")
    _assert_no_secret(exporter)


STORE_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("set_state", ("s", {"card": SECRET}), {}),
    ("merge_state", ("s", {"note": {"pin": SECRET}}), {}),
    ("get_state", ("s",), {}),
    ("list_sessions", (), {}),
    ("delete_session", ("s",), {}),
]

SERVICE_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("create_session", (), {"session_id": "s", "state": {"card": SECRET}}),
    (
        "append_event",
        ("s", {"text": f"my card is {SECRET}"}),
        {"state_delta": {"user:card": SECRET, "app:last": SECRET}},
    ),
    ("get_session", ("s",), {}),
    ("list_sessions", (), {}),
    ("delete_session", ("s",), {}),
]


async def test_one_span_per_statement_of_a_store_and_no_state_in_spans(
    db_url: str, facade: str, spans: InMemorySpanExporter
) -> None:
    cls = SqlSession if facade == "sync" else AsyncSqlSession
    await _trace_calls(cls(db_url, app_name=f"otel-{facade}"), facade, STORE_CALLS, spans)
    assert any("?" in s or "%(" in s for s in _statement_spans(spans))  # parameterized


async def test_one_span_per_statement_of_the_service_and_no_state_in_spans(
    db_url: str, facade: str, spans: InMemorySpanExporter
) -> None:
    cls = SessionService if facade == "sync" else AsyncSessionService
    await _trace_calls(cls(db_url, app_name=f"otel-svc-{facade}"), facade, SERVICE_CALLS, spans)


async def test_instrumenting_a_stores_engine_traces_every_store_on_its_url(
    db_url: str, facade: str
) -> None:
    """The other recipe: ``instrument(engine=store.engine)`` once the first store exists."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cls = SqlSession if facade == "sync" else AsyncSqlSession
    first, second = cls(db_url, app_name="otel-a"), cls(db_url, app_name="otel-b")
    engine = getattr(first.engine, "sync_engine", first.engine)
    SQLAlchemyInstrumentor().instrument(
        engine=engine, tracer_provider=provider, skip_dep_check=True
    )
    try:
        await _trace_calls(second, facade, STORE_CALLS, exporter)  # shares first's engine
        await _call(first, "close")
    finally:
        SQLAlchemyInstrumentor().uninstrument()
