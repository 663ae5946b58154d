"""``import_throughput.py --adk``: ``statekeeper import adk-database`` on SQLite and PostgreSQL.

The source's tables come from ADK's own ``DatabaseSessionService``; its rows
are written in bulk, as ADK writes them (JSON text on SQLite, ``jsonb`` on
PostgreSQL, naive UTC times), since appending 20 000 events through ADK
would take longer than the import being measured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common
import sqlalchemy as sa
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import DatabaseSessionService
from google.genai import types

from statekeeper import migrations
from statekeeper.adk import SqlSessionService

APPS = ("support", "triage")
USERS = 100
T0 = 1_760_000_000.0


def _naive(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).replace(tzinfo=None)


def _event(i: int, k: int, timestamp: float) -> dict[str, Any]:
    role = "user" if k % 2 == 0 else "model"
    text = f"turn {k} of session {i}: " + "could you check the status of my order? " * 5
    event = Event(
        author="user" if role == "user" else "support_agent",
        invocation_id=f"e-{uuid.uuid4()}",
        content=types.Content(role=role, parts=[types.Part(text=text)]),
        actions=EventActions(state_delta={"turn": k, "user:last_seen": timestamp}),
        timestamp=timestamp,
    )
    document: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    return document


def _fill(sync_url: str, adk_url: str, sessions: int, events: int) -> None:
    """Create ADK's tables with ADK, then write ``sessions`` x ``events`` rows in bulk."""

    async def tables() -> None:
        service = DatabaseSessionService(adk_url)
        await service.prepare_tables()
        await service.close()

    asyncio.run(tables())
    engine = sa.create_engine(sync_url)
    pg = engine.dialect.name == "postgresql"
    js = "CAST(:{} AS JSONB)" if pg else ":{}"
    session_rows, event_rows = [], []
    for i in range(sessions):
        key = {"a": APPS[i % len(APPS)], "u": f"user{i % USERS}", "s": f"session-{i}"}
        stamps = [T0 + i + k * 0.25 for k in range(events)]
        state = {"topic": "billing", "turn": events - 1, "order": {"id": i, "items": [1, 2, 3]}}
        update = stamps[-1] if stamps else T0 + i
        times = {"c": _naive(T0 + i), "t": _naive(update)}
        session_rows.append({**key, **times, "state": json.dumps(state)})
        for k, stamp in enumerate(stamps):
            doc = _event(i, k, stamp)
            row = {"id": doc["id"], "inv": doc["invocation_id"], "t": _naive(stamp)}
            event_rows.append({**key, **row, "data": json.dumps(doc)})
    now, state, data = _naive(time.time()), js.format("state"), js.format("data")
    inserts = {
        "sessions (app_name, user_id, id, state, create_time, update_time) "
        f"VALUES (:a, :u, :s, {state}, :c, :t)": session_rows,
        "events (id, app_name, user_id, session_id, invocation_id, timestamp, event_data) "
        f"VALUES (:id, :a, :u, :s, :inv, :t, {data})": event_rows,
        f"app_states (app_name, state, update_time) VALUES (:a, {state}, :t)": [
            {"a": a, "state": json.dumps({"model": "gemini-2.5-flash"}), "t": now} for a in APPS
        ],
        f"user_states (app_name, user_id, state, update_time) VALUES (:a, :u, {state}, :t)": [
            {"a": app, "u": f"user{u}", "state": json.dumps({"last_seen": T0 + u}), "t": now}
            for app in APPS
            for u in range(USERS)
        ],
    }
    with engine.begin() as conn:
        for into, rows in inserts.items():
            conn.execute(sa.text(f"INSERT INTO {into}"), rows)
    engine.dispose()


def _same_as_adk(adk_url: str, target: str, sessions: int) -> None:
    """A few sessions read through ADK and through statekeeper's adapter are equal."""

    async def check() -> None:
        adk, ours = DatabaseSessionService(adk_url), SqlSessionService(target)
        try:
            for i in (0, sessions // 2, sessions - 1):
                key = {"app_name": APPS[i % len(APPS)], "user_id": f"user{i % USERS}"}
                want = await adk.get_session(**key, session_id=f"session-{i}")
                got = await ours.get_session(**key, session_id=f"session-{i}")
                assert want is not None
                assert got is not None
                assert got.model_dump() == want.model_dump(), i
        finally:
            await adk.close()
            await ours.close()

    asyncio.run(check())


def run_adk(sessions: int, events: int, pg_url: str | None) -> None:
    """Build the sources, import each into a fresh statekeeper database, print sessions/s.

    ``pg_url``: the PostgreSQL server for two throwaway databases, or ``None`` (SQLite only).
    """
    with tempfile.TemporaryDirectory(prefix="statekeeper-adk-import-") as tmp, ExitStack() as stack:
        # (label, source as ADK names it, the same for plain SQL, target)
        runs = [
            (
                "sqlite",
                f"sqlite+aiosqlite:///{tmp}/adk.db",
                f"sqlite:///{tmp}/adk.db",
                f"sqlite:///{Path(tmp) / 'statekeeper.db'}",
            )
        ]
        if pg_url is not None:
            src, dst = (stack.enter_context(_common.postgres_database(pg_url)) for _ in range(2))
            runs.append(
                (
                    "postgresql",
                    _common.libpq_url(src, "postgresql+asyncpg"),
                    _common.libpq_url(src, "postgresql+psycopg"),
                    dst,
                )
            )
        for label, adk_url, sync_url, target in runs:
            t0 = time.perf_counter()
            _fill(sync_url, adk_url, sessions, events)
            print(
                f"{label:10} source: {sessions} ADK sessions x {events} events "
                f"written in {time.perf_counter() - t0:.1f} s"
            )
            migrations.upgrade(target)
            command = ("adk-database", adk_url, "--to", target)
            _common.import_twice(label, sessions, *command, events=events)
            _same_as_adk(adk_url, target, sessions)
