"""Round trips on PostgreSQL, counted on the wire: one per store call, no ping before it."""

from __future__ import annotations

import inspect
import re
import tempfile
import uuid
from typing import IO, Any

import pytest
import sqlalchemy as sa

from statekeeper import AsyncSessionService, AsyncSqlSession, SessionService, SqlSession

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


async def _call(store: Any, name: str, *args: Any) -> Any:
    result = getattr(store, name)(*args)
    return await result if inspect.isawaitable(result) else result


class _Wire:
    """libpq's protocol trace of the store's one connection: what client and server sent."""

    def __init__(self, engine: sa.Engine, file: IO[bytes]) -> None:
        self.file = file
        self.pgconns: list[Any] = []
        sa.event.listen(engine, "connect", self._trace)

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        pgconn = getattr(dbapi_connection, "driver_connection", dbapi_connection).pgconn
        pgconn.trace(self.file.fileno())
        self.pgconns.append(pgconn)

    def round_trips(self) -> int:
        """Requests the server answered since the last count (each ends with ReadyForQuery)."""
        for pgconn in self.pgconns:
            pgconn.untrace()  # flushes libpq's buffer into the file
        self.file.seek(0)
        text = self.file.read().decode(errors="replace")
        self.file.seek(0)
        self.file.truncate()
        for pgconn in self.pgconns:
            pgconn.trace(self.file.fileno())
        return len(re.findall(r"\bB\t\d+\tReadyForQuery\b", text))


#: Store calls that are one statement on PostgreSQL.
CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("get_state", ("s",)),
    ("set_state", ("s", {"a": 1})),
    ("merge_state", ("s", {"b": 2})),
    ("session_exists", ("s",)),
]


@pytest.mark.parametrize(("pre_ping", "per_call"), [(None, 1), (True, 2)])
async def test_each_call_is_one_round_trip(
    db_url: str, facade: str, pre_ping: bool | None, per_call: int
) -> None:
    psycopg = pytest.importorskip("psycopg")
    if not hasattr(psycopg.pq.PGconn, "trace"):  # the lowest-versions run's psycopg 3.0
        pytest.skip("libpq's protocol trace needs psycopg 3.1 or later")
    # One connection, and options of this test's own: an engine nobody shares.
    # An app's own pool_pre_ping=True is SQLAlchemy's: a SELECT 1 before each call.
    options: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 0,
        "connect_args": {"application_name": f"rtt-{uuid.uuid4().hex[:8]}"},
    }
    if pre_ping is not None:
        options["pool_pre_ping"] = pre_ping
    kind = SqlSession if facade == "sync" else AsyncSqlSession
    store: Any = kind(db_url, app_name=f"rtt-{facade}", engine_options=options)
    engine = getattr(store.engine, "sync_engine", store.engine)
    with tempfile.TemporaryFile() as file:
        wire = _Wire(engine, file)
        await _call(store, "set_state", "s", {"a": 0})  # connects, checks the schema once
        wire.round_trips()
        counted = {}
        for name, args in CALLS:
            for _ in range(3):  # the connection back from the pool, used again
                await _call(store, name, *args)
            counted[name] = wire.round_trips()
        for pgconn in wire.pgconns:
            pgconn.untrace()
    assert counted == {name: 3 * per_call for name, _ in CALLS}
    await _call(store, "close")


#: Service calls, several statements each on PostgreSQL (a transaction, events, scoped keys).
SERVICE_CALLS: list[tuple[str, tuple[Any, ...], int]] = [  # name, arguments, times
    ("create_session", ("t",), 1),
    ("append_event", ("t", {"author": "user", "text": "hi"}), 2),
    ("append_events", ("t", [{"text": "a"}, {"text": "b"}, {"text": "c"}]), 1),
    ("get_session", ("t",), 2),
    ("list_sessions", (), 2),
    ("pop_event", ("t",), 2),
    ("delete_session", ("t",), 1),
]


async def test_a_call_sends_its_statements_and_nothing_else(db_url: str, facade: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    if not hasattr(psycopg.pq.PGconn, "trace"):
        pytest.skip("libpq's protocol trace needs psycopg 3.1 or later")
    options = {
        "pool_size": 1,
        "max_overflow": 0,
        "connect_args": {"application_name": f"rtt-{uuid.uuid4().hex[:8]}"},
    }
    service: Any = (SessionService if facade == "sync" else AsyncSessionService)(
        db_url, app_name=f"rtt-svc-{facade}", engine_options=options
    )
    engine = getattr(service.engine, "sync_engine", service.engine)
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    with tempfile.TemporaryFile() as file:
        wire = _Wire(engine, file)
        await _call(service, "get_app_state")  # connects, checks the schema once
        wire.round_trips()
        sent, answered = {}, {}
        for name, args, times in SERVICE_CALLS:
            statements[0] = 0
            for _ in range(times):
                await _call(service, name, *args)
            sent[name], answered[name] = statements[0], wire.round_trips()
        for pgconn in wire.pgconns:
            pgconn.untrace()
    assert answered == sent
    assert all(sent.values())
    assert sent["append_events"] == 5  # a list of 3: BEGIN, one append each, COMMIT
    await _call(service, "close")
