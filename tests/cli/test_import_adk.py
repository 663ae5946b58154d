"""``statekeeper import adk-database``: a Google ADK DatabaseSessionService into statekeeper.

The source is written by ADK's own ``DatabaseSessionService`` (once per
backend for the module; a test that corrupts rows gets a copy). After the
import, ``statekeeper.adk.SqlSessionService`` must return every session equal
to what ADK returns for the source: state, events, ``last_update_time``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("google.adk.sessions", reason="the adk extra is not installed here")

import sqlalchemy as sa
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import DatabaseSessionService
from google.genai import types
from tests.cli.conftest import run_cli
from tests.conftest import _admin_engine, create_pg_database

from statekeeper import migrations
from statekeeper._sql import schema as _schema
from statekeeper.adk import SqlSessionService

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

APPS = ("support", "triage")
USERS = ("", "alice", "bob")
T0 = 1_760_000_000.123456
#: Sessions the source holds; each (app, user) pair has one with 0, 2 and 4 events.
KEYS = [(app, user, f"{user or 'anon'}-{n}") for app in APPS for user in USERS for n in range(3)]
#: Non-empty states: each app's, each user's in each app, and carol's in support.
SCOPES = len(APPS) + len(USERS) * len(APPS) + 1


def _event(app: str, n: int, i: int, timestamp: float) -> Event:
    delta: dict[str, Any] = {"turn": i, "app:calls": 10 * n + i, "temp:scratch": "gone"}
    if i % 2:
        delta["user:seen"] = {"n": n, "big": 2**70, "ratio": 0.1}
    text = f"message {i} of {app}: 日本 🚀 \ud83d\ude00"
    return Event(
        author="user" if i % 2 == 0 else app,
        invocation_id=f"inv-{n}-{i // 2}",
        content=types.Content(role="user", parts=[types.Part(text=text)]),
        actions=EventActions(state_delta=delta) if i != 2 else EventActions(),
        timestamp=timestamp,
    )


async def _fill(url: str) -> None:
    """Write the source the way an ADK app does, through ADK's DatabaseSessionService."""
    service = DatabaseSessionService(url)
    try:
        for app in APPS:
            for user in USERS:
                for n in range(3):
                    state: dict[str, Any] = {"topic": f"t{n}", "app:model": f"gemini-{app}"}
                    if user:
                        state["user:lang"] = "fr"
                    session = await service.create_session(
                        app_name=app, user_id=user, session_id=f"{user or 'anon'}-{n}", state=state
                    )
                    stamps = [T0 + 1000 * n + 0.37 * i for i in range(2 * n)]
                    if n == 2:
                        stamps[3] = stamps[2]  # a tie: ADK orders it by event id
                    for i, stamp in enumerate(stamps):
                        await service.append_event(session, _event(app, n, i, stamp))
        # A user whose sessions are all gone keeps their state.
        carol = await service.create_session(
            app_name="support", user_id="carol", state={"user:plan": "pro"}
        )
        await service.delete_session(app_name="support", user_id="carol", session_id=carol.id)
    finally:
        await service.close()


class Source:
    """An ADK database: the URL ADK was given, and a sync URL to tamper with it."""

    def __init__(self, adk_url: str, sync_url: str) -> None:
        self.adk_url, self.sync_url = adk_url, sync_url

    def execute(self, sql: str, **params: Any) -> None:
        """Run a statement on the source, as someone editing it by hand would."""
        engine = sa.create_engine(self.sync_url, poolclass=sa.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
        engine.dispose()


def _pg_urls(url: str) -> tuple[str, str]:
    parsed = sa.make_url(url)
    adk = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    return adk, parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def adk_backend(request: pytest.FixtureRequest) -> str:
    """The database the ADK source and the statekeeper target are on."""
    return str(request.param)


@pytest.fixture(scope="module")
def built(
    adk_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    """The module's ADK source of this backend, written once (tests only read it)."""
    if adk_backend == "sqlite":
        path = tmp_path_factory.mktemp("adk") / "adk.db"
        source = Source(f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}")
        asyncio.run(_fill(source.adk_url))
        yield source
        return
    server = request.getfixturevalue("pg_server")
    # ADK's own database, not statekeeper's: plain PostgreSQL even on a Citus
    # server (the per-test copies use it as a template, which Citus's
    # maintenance daemon on a database with the extension would hold open).
    url, drop = create_pg_database(server, citus=False)
    source = Source(*_pg_urls(url))
    asyncio.run(_fill(source.adk_url))
    yield source
    drop()


@pytest.fixture
def source(built: Source, adk_backend: str, tmp_path: Path) -> Iterator[Source]:
    """A copy of the module's source that this test may change."""
    if adk_backend == "sqlite":
        path = tmp_path / "adk-copy.db"
        shutil.copy(sa.make_url(built.sync_url).database or "", path)
        yield Source(f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}")
        return
    name = f"statekeeper_test_{uuid.uuid4().hex[:12]}"
    original = sa.make_url(built.sync_url).database
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{original}"'))
    yield Source(*_pg_urls(sa.make_url(built.sync_url).set(database=name).render_as_string(False)))
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def target(adk_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated statekeeper database of this test alone."""
    if adk_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'statekeeper.db'}"
        migrations.upgrade(url)
        yield url
        return
    url, drop = create_pg_database(request.getfixturevalue("pg_server"))
    migrations.upgrade(url)
    yield url
    drop()


def _import(source: Source, target: str, *args: str) -> Any:
    return run_cli("import", "adk-database", source.adk_url, "--to", target, *args)


def _snapshot(url: str) -> dict[str, list[Any]]:
    """Every row of statekeeper's tables, in key order."""
    engine = sa.create_engine(
        sa.make_url(url).set(drivername=sa.make_url(url).drivername.split("+")[0]),
        poolclass=sa.NullPool,
    )
    tables = (_schema.sessions, _schema.events, _schema.app_state, _schema.user_state)
    with engine.connect() as conn:
        rows = {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key))]
            for t in tables
        }
    engine.dispose()
    return rows


async def _assert_as_adk_reads(
    source: Source, target: str, keys: list[tuple[str, str, str]]
) -> None:
    """Each session and user state read from statekeeper equals ADK's read of the source."""
    adk = DatabaseSessionService(source.adk_url)
    ours = SqlSessionService(target)
    try:
        for app, user, session_id in keys:
            want = await adk.get_session(app_name=app, user_id=user, session_id=session_id)
            got = await ours.get_session(app_name=app, user_id=user, session_id=session_id)
            assert want is not None
            assert got is not None, (app, user, session_id)
            assert got.model_dump() == want.model_dump(), (app, user, session_id)
        for app in APPS:
            for user in (*USERS, "carol"):
                want_state = await adk.get_user_state(app_name=app, user_id=user)
                assert await ours.get_user_state(app_name=app, user_id=user) == want_state
    finally:
        await adk.close()
        await ours.close()


def _summary(
    imported: int, unchanged: int, skipped: int, failed: int, of: int, verb: str = "imported"
) -> str:
    return f"{verb} {imported}, unchanged {unchanged}, skipped {skipped}, failed {failed} of {of}"


async def test_imports_every_app_as_adk_reads_it_and_a_second_run_changes_nothing(
    built: Source, target: str
) -> None:
    dry = _import(built, target, "--dry-run")
    assert dry.code == 0, dry
    scopes = _summary(SCOPES, 0, 0, 0, SCOPES, verb="would import")
    assert f"app and user states: {scopes}\n" in dry.stdout
    sessions = _summary(len(KEYS), 0, 0, 0, len(KEYS), verb="would import")
    assert sessions + " sessions" in dry.stdout
    assert dry.stdout.rstrip().endswith("(dry run: nothing written)")
    assert all(rows == [] for rows in _snapshot(target).values())

    result = _import(built, target)
    assert result.code == 0, result
    assert f"app and user states: {_summary(SCOPES, 0, 0, 0, SCOPES)}\n" in result.stdout
    assert _summary(len(KEYS), 0, 0, 0, len(KEYS)) + " sessions in " in result.stdout
    assert result.stderr == ""
    await _assert_as_adk_reads(built, target, KEYS)
    ours = SqlSessionService(target)
    try:
        session = await ours.get_session(app_name="triage", user_id="bob", session_id="bob-2")
        assert session is not None
        assert len(session.events) == 4
        assert session.state["app:calls"] == 23  # the deltas, routed by prefix
        assert session.state["user:seen"] == {"n": 2, "big": 2**70, "ratio": 0.1}
        assert "temp:scratch" not in session.state
        app_state = await ours.get_app_state(app_name="support")
        assert app_state == {"model": "gemini-support", "calls": 23}
    finally:
        await ours.close()

    before = _snapshot(target)
    again = _import(built, target)
    assert again.code == 0, again
    assert f"app and user states: {_summary(0, SCOPES, 0, 0, SCOPES)}\n" in again.stdout
    assert _summary(0, len(KEYS), 0, 0, len(KEYS)) + " sessions" in again.stdout
    assert _snapshot(target) == before  # not a row rewritten, not a version bumped


async def test_bad_rows_are_reported_by_name_and_the_rest_is_imported(
    source: Source, target: str, adk_backend: str
) -> None:
    sqlite = adk_backend == "sqlite"
    source.execute(
        "UPDATE events SET event_data = "
        + ("'{\"author\": '" if sqlite else "NULL")
        + " WHERE app_name = 'support' AND user_id = 'alice' AND session_id = 'alice-2'"
        " AND invocation_id = 'inv-2-1'"
    )
    state = "'{\"score\": NaN}'" if sqlite else "'[1, 2]'::jsonb"
    source.execute(
        f"UPDATE sessions SET state = {state} WHERE app_name = 'triage' AND id = 'anon-1'"
    )
    result = _import(source, target)
    assert result.code == 1, result
    event_problem = "not valid JSON" if sqlite else "its event_data is NULL"
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("failed app 'support', user 'alice', session 'alice-2': event '")
        and event_problem in line
        for line in lines
    ), result
    state_problem = "score" if sqlite else "its state is a JSON array, not an object"
    assert any(
        line.startswith("failed app 'triage', user '', session 'anon-1': ")
        and state_problem in line
        for line in lines
    ), result
    assert _summary(len(KEYS) - 2, 0, 0, 2, len(KEYS)) + " sessions" in result.stdout
    bad = [("support", "alice", "alice-2"), ("triage", "", "anon-1")]
    await _assert_as_adk_reads(source, target, [k for k in KEYS if k not in bad])
    ours = SqlSessionService(target)
    try:
        for app, user, session_id in bad:  # nothing half-written
            assert await ours.get_session(app_name=app, user_id=user, session_id=session_id) is None
    finally:
        await ours.close()


async def test_app_filters_and_a_session_changed_since_is_skipped_unless_overwrite(
    built: Source, target: str
) -> None:
    only = _import(built, target, "--app", "triage")
    assert only.code == 0, only
    assert _summary(9, 0, 0, 0, 9) + " sessions" in only.stdout
    assert {row[0] for row in _snapshot(target)["statekeeper_sessions"]} == {"triage"}
    every = _import(built, target)
    assert _summary(9, 9, 0, 0, len(KEYS)) + " sessions" in every.stdout

    ours = SqlSessionService(target)
    try:
        session = await ours.get_session(app_name="support", user_id="bob", session_id="bob-1")
        assert session is not None
        await ours.append_event(session, Event(author="user", invocation_id="later"))
    finally:
        await ours.close()
    result = _import(built, target)
    assert result.code == 0, result  # skipped is not failed
    assert (
        "skipped app 'support', user 'bob', session 'bob-1': it already exists with other "
        "contents (pass --overwrite to replace it)"
    ) in result.stdout
    assert _summary(0, len(KEYS) - 1, 1, 0, len(KEYS)) in result.stdout
    replaced = _import(built, target, "--overwrite")
    assert _summary(1, len(KEYS) - 1, 0, 0, len(KEYS)) in replaced.stdout
    await _assert_as_adk_reads(built, target, KEYS)


def _hand_made(path: Path, events: str) -> str:
    """A SQLite database with ADK's four tables, empty, the events table as given."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for ddl in (
            "CREATE TABLE sessions (app_name, user_id, id, state, create_time, update_time)",
            f"CREATE TABLE events ({events})",
            "CREATE TABLE app_states (app_name, state, update_time)",
            "CREATE TABLE user_states (app_name, user_id, state, update_time)",
        ):
            conn.execute(sa.text(ddl))
    engine.dispose()
    return url


def test_what_cannot_be_imported_is_a_clear_error(tmp_path: Path) -> None:
    to = f"sqlite:///{tmp_path / 'statekeeper.db'}"
    migrations.upgrade(to)
    missing = run_cli("import", "adk-database", f"sqlite:///{tmp_path}/none.db", "--to", to)
    assert missing.code == 4  # unreachable, as for a PostgreSQL source that is down
    assert "the ADK database: could not reach the database" in missing.stderr
    assert f"the SQLite file {tmp_path / 'none.db'} does not exist" in missing.stderr
    assert not (tmp_path / "none.db").exists()  # the source is never created

    not_adk = run_cli("import", "adk-database", to, "--to", to)
    assert not_adk.code == 1
    assert "holds no ADK DatabaseSessionService tables" in not_adk.stderr

    v0 = _hand_made(tmp_path / "v0.db", "id, app_name, user_id, session_id, actions, timestamp")
    legacy = run_cli("import", "adk-database", v0, "--to", to)
    assert legacy.code == 1
    assert "schema version 0" in legacy.stderr
    assert "adk migrate session" in legacy.stderr  # what to run

    v1 = _hand_made(
        tmp_path / "v1.db",
        "id, app_name, user_id, session_id, invocation_id, timestamp, event_data",
    )
    unknown = run_cli("import", "adk-database", v1, "--to", to, "--app", "nope")
    assert unknown.code == 1
    assert "holds no ADK app 'nope' (its apps: none)" in unknown.stderr

    down = "postgresql+asyncpg://adk:secret@127.0.0.1:1/adk"
    unreachable = run_cli("import", "adk-database", down, "--to", to)
    assert unreachable.code == 4, unreachable
    assert "the ADK database: cannot connect to the database postgresql" in unreachable.stderr
    assert "secret" not in unreachable.stderr

    unmigrated = run_cli("import", "adk-database", v1, "--to", f"sqlite:///{tmp_path / 'new.db'}")
    assert unmigrated.code == 3, unmigrated  # not migrated
    assert "statekeeper db upgrade" in unmigrated.stderr
    for result in (missing, not_adk, legacy, unknown, unreachable, unmigrated):
        assert "Traceback" not in result.stderr


async def test_a_batch_that_fails_is_written_session_by_session(
    built: Source, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statekeeper._importers import adk as _import_adk
    from statekeeper._importers import adk_source as _adk_source
    from statekeeper._sql.ops import imports as _ops_import
    from statekeeper.errors import ConflictError

    original = _ops_import.import_sessions

    def racing(ctx: Any, batch: list[Any], *args: Any) -> Any:
        if not args[1] and any(w.session_id == "bob-1" for w in batch):  # not a dry run
            raise ConflictError("bob-1 was written meanwhile", expected=0, actual=None)
        return original(ctx, batch, *args)

    monkeypatch.setattr(_ops_import, "import_sessions", racing)
    source = _adk_source.AdkDatabase(built.adk_url)
    try:
        outcome = _import_adk.import_database(source, target)
    finally:
        source.close()
    failed = {name for name, _ in outcome.sessions.failed}
    assert failed == {_adk_source.session_name(app, "bob", "bob-1") for app in APPS}
    assert {reason for _, reason in outcome.sessions.failed} == {"bob-1 was written meanwhile"}
    assert outcome.sessions.imported == len(KEYS) - 2
    others = [k for k in KEYS if k[2] != "bob-1"]
    await _assert_as_adk_reads(built, target, others)
    assert {row[2] for row in _snapshot(target)["statekeeper_sessions"]} == {k[2] for k in others}
