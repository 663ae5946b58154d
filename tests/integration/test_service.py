"""The event-log service: every behaviour on {SQLite, PostgreSQL} x {sync, async}."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from tests.conftest import (
    SyncAsAsync,
    engine_maker,
    failing_event_insert,
    pooler_connect_args,
    with_pooler_setting,
)
from tests.integration.test_cursors import HOSTILE

from statekeeper import (
    AsyncSessionService,
    AsyncSqlSession,
    ConflictError,
    SchemaNotReadyError,
    SessionExistsError,
    SessionNotFoundError,
    SessionService,
    SqlSession,
    StateEncodingError,
    migrations,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@pytest.fixture
async def make_service(db_url: str, facade: str, driver: str) -> AsyncIterator[Callable[..., Any]]:
    """Build services (and SqlSession stores) on the test's database, one app per test.

    With a driver other than ``statekeeper``, each runs on a caller's engine
    made with that driver, disposed after the test.
    """
    app = f"svc-{uuid.uuid4().hex[:8]}"
    made: list[Any] = []
    engines: list[Any] = []

    def make(kind: str = "service", **kwargs: Any) -> Any:
        kwargs.setdefault("app_name", app)
        sync_cls, async_cls = {
            "service": (SessionService, AsyncSessionService),
            "store": (SqlSession, AsyncSqlSession),
        }[kind]
        target: Any = db_url
        if driver != "statekeeper":
            parsed = sa.make_url(db_url)
            backend = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
            parsed = parsed.set(drivername=f"{backend}+{driver}")
            args = pooler_connect_args(db_url, driver)
            target = engine_maker(facade, driver)(parsed, connect_args=args)
            engines.append(target)
        else:
            kwargs = with_pooler_setting(kwargs, db_url)
        obj: Any = (
            SyncAsAsync(sync_cls(target, **kwargs))
            if facade == "sync"
            else async_cls(target, **kwargs)
        )
        made.append(obj)
        return obj

    yield make
    for obj in made:
        await _close(obj)
    for engine in engines:
        result = engine.dispose()
        if inspect.isawaitable(result):
            await result


@pytest.fixture
def svc(make_service: Callable[..., Any]) -> Any:
    """A service with default settings."""
    return make_service()


def _count(url: str, table: str, **where: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    clause = " AND ".join(f"{k} = :{k}" for k in where) or "1=1"
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE {clause}"), where
                ).scalar()
            )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- create


async def test_create_routes_state_by_prefix_and_returns_it_merged(svc: Any) -> None:
    record = await svc.create_session(
        "s1",
        user_id="alice",
        state={"topic": "billing", "app:greeting": "hi", "user:lang": "fr", "temp:draft": 1},
        timestamp=1700000000.123456789,
    )
    assert record.session_id == "s1"
    assert record.user_id == "alice"
    assert record.version == 1
    assert record.events == ()
    assert record.state == {"topic": "billing", "app:greeting": "hi", "user:lang": "fr"}
    assert record.update_time == 1700000000.123456789
    assert record.created_at == record.updated_at
    assert record.created_at.tzinfo is not None
    assert record.expires_at is None
    assert await svc.get_session("s1", "alice") == record
    assert await svc.get_app_state() == {"greeting": "hi"}
    assert await svc.get_user_state("alice") == {"lang": "fr"}


async def test_create_generates_a_uuid4_when_no_id_is_given(svc: Any) -> None:
    first = await svc.create_session(user_id="u")
    second = await svc.create_session(None, "u")
    assert uuid.UUID(first.session_id).version == 4
    assert first.session_id != second.session_id
    assert await svc.get_session(first.session_id, "u") is not None


async def test_create_on_an_existing_key_raises_and_writes_nothing(svc: Any) -> None:
    await svc.create_session("s", "u", state={"a": 1, "app:k": 1, "user:k": 1})
    await svc.append_event("s", {"n": 1}, "u")
    with pytest.raises(SessionExistsError, match="'s' of user 'u' already exists"):
        await svc.create_session("s", "u", state={"a": 2, "app:k": 2, "user:k": 2})
    record = await svc.get_session("s", "u")
    assert record.state == {"a": 1, "app:k": 1, "user:k": 1}
    assert record.version == 2
    assert [e.data for e in record.events] == [{"n": 1}]
    # the same id under another user is another session
    assert (await svc.create_session("s", "v")).version == 1


# --------------------------------------------------------------------------- get


async def _log(svc: Any, times: list[float]) -> None:
    await svc.create_session("s", "u", timestamp=0.5)
    for i, stamp in enumerate(times):
        await svc.append_event("s", {"i": i}, "u", timestamp=stamp)


async def test_get_missing_is_none(svc: Any) -> None:
    assert await svc.get_session("nope", "u") is None
    await svc.create_session("s", "u")
    assert await svc.get_session("s", "other-user") is None


@pytest.mark.parametrize(
    ("recent", "after", "expected"),
    [
        (None, None, [0, 1, 2, 3, 4, 5]),
        (0, None, []),
        (2, None, [4, 5]),
        (100, None, [0, 1, 2, 3, 4, 5]),
        (None, 3.0, [2, 3, 4, 5]),  # inclusive, ties in insertion order
        (None, 2.5, [2, 3, 4, 5]),
        (None, 9.0, []),
        (3, 2.0, [3, 4, 5]),  # the last 3 of those at or after
        (10, 4.0, [4, 5]),
        (0, 1.0, []),
    ],
)
async def test_get_recent_and_after_combine(
    svc: Any, recent: int | None, after: float | None, expected: list[int]
) -> None:
    await _log(svc, [1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
    record = await svc.get_session("s", "u", recent=recent, after=after)
    assert [e.data["i"] for e in record.events] == expected
    assert [e.seq for e in record.events] == [i + 1 for i in expected]
    assert record.version == 7


async def test_events_come_back_in_insertion_order_whatever_their_timestamps(svc: Any) -> None:
    await _log(svc, [5.0, 1.0, 3.0])
    record = await svc.get_session("s", "u")
    assert [e.timestamp for e in record.events] == [5.0, 1.0, 3.0]
    assert record.update_time == 3.0


@pytest.mark.parametrize(("name", "value"), [("recent", -1), ("recent", 1.5), ("after", "x")])
async def test_get_refuses_bad_arguments(svc: Any, name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        await svc.get_session("s", "u", **{name: value})


# --------------------------------------------------------------------------- append


async def test_append_routes_the_delta_to_every_scope(svc: Any) -> None:
    await svc.create_session("s1", "alice", state={"keep": 1})
    await svc.create_session("s2", "alice")
    await svc.create_session("s3", "bob")
    version = await svc.append_event(
        "s1",
        {"author": "user", "text": "hi"},
        "alice",
        state_delta={"n": 1, "app:greeting": "hello", "user:lang": "fr", "temp:scratch": [1]},
        expected_version=1,
    )
    assert version == 2
    s1, s2, s3 = (
        await svc.get_session("s1", "alice"),
        await svc.get_session("s2", "alice"),
        await svc.get_session("s3", "bob"),
    )
    assert s1.state == {"keep": 1, "n": 1, "app:greeting": "hello", "user:lang": "fr"}
    assert s2.state == {"app:greeting": "hello", "user:lang": "fr"}
    assert s3.state == {"app:greeting": "hello"}
    assert [e.data for e in s1.events] == [{"author": "user", "text": "hi"}]
    assert s2.events == ()
    assert await svc.get_user_state("bob") == {}


async def test_user_with_an_empty_id_is_not_the_app(svc: Any) -> None:
    await svc.create_session("s", "", state={"app:k": "app", "user:k": "user"})
    assert await svc.get_app_state() == {"k": "app"}
    assert await svc.get_user_state("") == {"k": "user"}
    assert (await svc.get_session("s")).state == {"app:k": "app", "user:k": "user"}


async def test_apps_do_not_share_scoped_state(make_service: Any) -> None:
    one, two = make_service(app_name="one-" + uuid.uuid4().hex), make_service()
    await one.create_session("s", "u", state={"app:k": 1, "user:k": 1})
    await two.create_session("s", "u")
    assert (await two.get_session("s", "u")).state == {}
    assert await two.get_app_state() == {}


async def test_versions_and_update_time_follow_each_append(svc: Any) -> None:
    await svc.create_session("s", "u", timestamp=10.0)
    for i in range(1, 4):
        assert await svc.append_event("s", {"i": i}, "u", timestamp=10.0 + i / 3) == i + 1
    record = await svc.get_session("s", "u")
    assert record.update_time == 10.0 + 3 / 3
    assert record.version == 4


async def test_append_takes_the_events_own_timestamp(svc: Any) -> None:
    await svc.create_session("s", "u")
    await svc.append_event("s", {"timestamp": 1234.5678}, "u")
    await svc.append_event("s", {"timestamp": "not a number"}, "u", timestamp=2000.25)
    record = await svc.get_session("s", "u")
    assert [e.timestamp for e in record.events] == [1234.5678, 2000.25]


async def test_append_to_a_missing_session_raises_and_writes_nothing(svc: Any, db_url: str) -> None:
    with pytest.raises(SessionNotFoundError, match="'nope' of user 'u' does not exist"):
        await svc.append_event("nope", {"a": 1}, "u", state_delta={"app:k": 1, "user:k": 1})
    with pytest.raises(SessionNotFoundError):
        await svc.append_event("nope", {"a": 1}, "u", expected_version=1)
    assert await svc.get_app_state() == {}
    assert await svc.get_user_state("u") == {}
    assert _count(db_url, "statekeeper_events", app_name=svc.app_name) == 0


async def test_stale_expected_version_raises_and_writes_nothing(svc: Any) -> None:
    await svc.create_session("s", "u")
    await svc.append_event("s", {"first": 1}, "u", expected_version=1)
    with pytest.raises(ConflictError) as info:
        await svc.append_event(
            "s",
            {"stale": 1},
            "u",
            state_delta={"x": 1, "app:x": 1, "user:x": 1},
            expected_version=1,
        )
    assert (info.value.expected, info.value.actual) == (1, 2)
    record = await svc.get_session("s", "u")
    assert [e.data for e in record.events] == [{"first": 1}]
    assert record.state == {}
    assert record.version == 2


async def test_unencodable_event_or_delta_writes_nothing(svc: Any) -> None:
    await svc.create_session("s", "u")
    with pytest.raises(StateEncodingError, match=r"event\.score"):
        await svc.append_event("s", {"score": float("nan")}, "u")
    with pytest.raises(StateEncodingError, match="user:bad"):
        await svc.append_event("s", {}, "u", state_delta={"user:bad": {1, 2}})
    with pytest.raises(StateEncodingError):
        await svc.append_event("s", {}, "u", state_delta={"app:": 1})
    with pytest.raises(TypeError, match="event must be a dict"):
        await svc.append_event("s", ["not", "a", "dict"], "u")
    record = await svc.get_session("s", "u")
    assert (record.version, record.events, record.state) == (1, (), {})


async def test_session_state_needing_the_slow_merge_paths(svc: Any) -> None:
    # PostgreSQL's json_each refuses a stored \u0000; SQLite's json_set paths
    # cannot quote '"'; many keys at once.
    await svc.create_session("s", "u", state={"nul": "\x00", "lone": "\ud800"})
    await svc.append_event("s", {}, "u", state_delta={"a": 1, 'say "hi"': 2, "back\\slash": 3})
    many = {f"k{i}": i for i in range(20)}
    await svc.append_event("s", {}, "u", state_delta=many, expected_version=2)
    with pytest.raises(ConflictError):
        await svc.append_event("s", {}, "u", state_delta={"a": 9}, expected_version=2)
    record = await svc.get_session("s", "u")
    assert record.state == {
        "nul": "\x00",
        "lone": "\ud800",
        "a": 1,
        'say "hi"': 2,
        "back\\slash": 3,
        **many,
    }
    assert record.version == 3


# --------------------------------------------------------------------------- concurrency


# --------------------------------------------------------------------------- append_events


async def test_append_events_writes_them_in_order_each_bumping_the_version(svc: Any) -> None:
    await svc.create_session("s", "u", timestamp=10.0)
    events = [{"n": 1, "timestamp": 12.5}, {"n": 2}, {"n": 3, "timestamp": 11.0}]
    assert await svc.append_events("s", events, "u", expected_version=1) == 4
    assert await svc.append_events("s", [{"n": 4, "timestamp": 13.0}], "u") == 5  # one: one append
    record = await svc.get_session("s", "u")
    assert [e.data["n"] for e in record.events] == [1, 2, 3, 4]
    stamps = [e.timestamp for e in record.events]
    assert (stamps[0], stamps[2], stamps[3]) == (12.5, 11.0, 13.0)
    assert stamps[1] > 1e9  # no timestamp of its own: the time of the call
    assert (record.version, record.update_time) == (5, 13.0)
    last = await svc.get_session("s", "u", recent=2)
    assert [e.data["n"] for e in last.events] == [3, 4]


async def test_append_events_to_a_missing_or_moved_session_writes_none(
    svc: Any, db_url: str
) -> None:
    with pytest.raises(SessionNotFoundError, match="'nope' of user 'u' does not exist"):
        await svc.append_events("nope", [{"a": 1}, {"a": 2}], "u")
    assert _count(db_url, "statekeeper_events", app_name=svc.app_name) == 0
    await svc.create_session("s", "u")
    await svc.append_event("s", {"first": 1}, "u")
    with pytest.raises(ConflictError) as info:
        await svc.append_events("s", [{"stale": 1}, {"stale": 2}], "u", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await svc.append_events("s", [{"n": 1}, {"n": 2}], "u", expected_version=2) == 4
    record = await svc.get_session("s", "u")
    assert [e.data for e in record.events] == [{"first": 1}, {"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("events", "error", "match"),
    [
        ([], ValueError, "events is empty"),
        ({"a": 1}, TypeError, "events must be a list of dicts, got dict"),
        ("ab", TypeError, "events must be a list of dicts, got str"),
        ([{"a": 1}, ["x"]], TypeError, r"events\[1\] must be a dict"),
        ([{"a": 1}, {"score": float("nan")}], StateEncodingError, r"events\[1\]\.score"),
    ],
)
async def test_append_events_refuses_a_bad_list_and_writes_none(
    svc: Any, events: Any, error: type[Exception], match: str
) -> None:
    await svc.create_session("s", "u")
    with pytest.raises(error, match=match):
        await svc.append_events("s", events, "u")
    record = await svc.get_session("s", "u")
    assert (record.version, record.events) == (1, ())


async def test_a_failure_inside_append_events_writes_none_of_them(svc: Any) -> None:
    await svc.create_session("s", "u")
    await svc.append_event("s", {"n": 0}, "u")
    with failing_event_insert(svc, 3) as sent, pytest.raises(ConnectionResetError):
        await svc.append_events("s", [{"n": 1}, {"n": 2}, {"n": 3}], "u")
    assert sent == [3]  # two were sent before the failure
    record = await svc.get_session("s", "u")
    assert ([e.data["n"] for e in record.events], record.version) == ([0], 2)
    assert await svc.append_events("s", [{"n": 1}, {"n": 2}], "u") == 4  # the service goes on


async def test_concurrent_append_events_never_interleave(svc: Any, facade: str) -> None:
    await svc.create_session("s", "u")
    calls = [
        ("append_events", ("s", [{"w": w, "i": i} for i in range(5)], "u"), {}) for w in range(4)
    ]
    for _ in range(3):
        results = await _concurrently(svc, facade, calls)
        assert all(isinstance(r, int) for r in results), results
    record = await svc.get_session("s", "u")
    writers = [e.data["w"] for e in record.events]
    blocks = [writers[k : k + 5] for k in range(0, len(writers), 5)]
    assert len(writers) == 60
    assert all(len(set(block)) == 1 for block in blocks), writers
    assert all(
        [e.data["i"] for e in record.events[k : k + 5]] == list(range(5)) for k in range(0, 60, 5)
    )
    assert record.version == 61


async def _concurrently(
    svc: Any, facade: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> list[Any]:
    """Run the calls at once: tasks on the async service, threads on the sync one."""
    if facade == "sync":  # threads: each call on its own connection
        jobs = [asyncio.to_thread(getattr(svc.wrapped, n), *a, **k) for n, a, k in calls]
    else:
        jobs = [getattr(svc, n)(*a, **k) for n, a, k in calls]
    return await asyncio.gather(*jobs, return_exceptions=True)


async def test_concurrent_appends_on_other_sessions_keep_every_scoped_delta(
    svc: Any, facade: str
) -> None:
    sessions = 8
    for i in range(sessions):
        await svc.create_session(f"s{i}", "u")
    calls = [
        (
            "append_event",
            (f"s{i}", {"i": i, "round": r}, "u"),
            {"state_delta": {f"app:a{i}-{r}": r, f"user:u{i}-{r}": r, "app:shared": i, "own": r}},
        )
        for r in range(3)
        for i in range(sessions)
    ]
    results = await _concurrently(svc, facade, calls)
    assert [r for r in results if isinstance(r, BaseException)] == []
    app, user = await svc.get_app_state(), await svc.get_user_state("u")
    assert {k: v for k, v in app.items() if k != "shared"} == {
        f"a{i}-{r}": r for r in range(3) for i in range(sessions)
    }
    assert app["shared"] in range(sessions)
    assert user == {f"u{i}-{r}": r for r in range(3) for i in range(sessions)}
    for i in range(sessions):
        record = await svc.get_session(f"s{i}", "u")
        assert record.version == 4
        assert sorted(e.data["round"] for e in record.events) == [0, 1, 2]
        assert [e.seq for e in record.events] == [1, 2, 3]


async def test_two_appends_from_one_revision_exactly_one_wins(svc: Any, facade: str) -> None:
    await svc.create_session("s", "u")
    for attempt in range(5):
        version = attempt + 1
        calls = [
            (
                "append_event",
                ("s", {"writer": w, "attempt": attempt}, "u"),
                {"expected_version": version},
            )
            for w in range(2)
        ]
        results = await _concurrently(svc, facade, calls)
        assert sorted(type(r).__name__ for r in results) == ["ConflictError", "int"]
        assert version + 1 in results
    record = await svc.get_session("s", "u")
    assert record.version == 6
    assert [e.data["attempt"] for e in record.events] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- delete, list, ttl


async def test_delete_removes_the_events_and_keeps_scoped_state(svc: Any, db_url: str) -> None:
    await svc.create_session("s", "u", state={"app:a": 1, "user:b": 2})
    for i in range(3):
        await svc.append_event("s", {"i": i}, "u")
    assert _count(db_url, "statekeeper_events", app_name=svc.app_name) == 3
    assert await svc.delete_session("s", "u") is True
    assert await svc.delete_session("s", "u") is False
    assert await svc.get_session("s", "u") is None
    assert _count(db_url, "statekeeper_events", app_name=svc.app_name) == 0
    assert await svc.get_app_state() == {"a": 1}
    assert await svc.get_user_state("u") == {"b": 2}
    fresh = await svc.create_session("s", "u")
    assert (await svc.get_session("s", "u")).events == ()
    assert fresh.state == {"app:a": 1, "user:b": 2}


def _sql(url: str, statement: str, **params: Any) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


async def test_leftover_events_of_a_key_never_show_and_are_cleared(svc: Any, db_url: str) -> None:
    app = svc.app_name
    await svc.create_session("s", "u")
    for i in range(3):
        await svc.append_event("s", {"old": i}, "u")
    # A session row gone without its events (as when a delete races an append).
    _sql(db_url, "DELETE FROM statekeeper_sessions WHERE app_name = :a", a=app)
    await svc.create_session("s", "u")
    assert _count(db_url, "statekeeper_events", app_name=app) == 0
    # An event past the session's count is invisible, and the next append takes its place.
    event = "CAST(:e AS json)" if db_url.startswith("postgresql") else ":e"
    _sql(
        db_url,
        "INSERT INTO statekeeper_events (app_name, user_id, session_id, seq, timestamp, event) "
        f"VALUES (:a, 'u', 's', 1, 1.0, {event})",
        a=app,
        e='{"stray":1}',
    )
    assert (await svc.get_session("s", "u")).events == ()
    await svc.append_event("s", {"new": 1}, "u", timestamp=2.0)
    assert [(e.seq, e.timestamp, e.data) for e in (await svc.get_session("s", "u")).events] == [
        (1, 2.0, {"new": 1})
    ]


async def test_list_pages_with_merged_state_newest_or_oldest_first(svc: Any) -> None:
    for i in range(5):
        await svc.create_session(f"s{i}", "u", state={"i": i, "user:u": 1})
        await svc.append_event(f"s{i}", {"e": i}, "u")
    await svc.create_session("other", "v", state={"app:x": 1})
    seen, cursor = [], None
    while True:
        page = await svc.list_sessions("u", limit=2, cursor=cursor)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [r.session_id for r in seen] == ["s4", "s3", "s2", "s1", "s0"]
    assert all(r.events == () for r in seen)
    assert seen[0].state == {"i": 4, "user:u": 1, "app:x": 1}
    assert seen[0].version == 2
    oldest = await svc.list_sessions("u", oldest_first=True, limit=3)
    assert [r.session_id for r in oldest.items] == ["s0", "s1", "s2"]
    rest = await svc.list_sessions("u", oldest_first=True, cursor=oldest.next_cursor)
    assert [r.session_id for r in rest.items] == ["s3", "s4"]
    assert rest.next_cursor is None
    everyone = await svc.list_sessions(oldest_first=True)
    assert [(r.user_id, r.session_id) for r in everyone.items][-1] == ("v", "other")
    assert {r.user_id: r.state for r in everyone.items}["v"] == {"app:x": 1}
    with pytest.raises(ValueError, match="limit"):
        await svc.list_sessions(limit=0)


async def test_hostile_cursors_are_refused_with_the_documented_error(svc: Any) -> None:
    for i in range(3):
        await svc.create_session(f"s{i}", "u", state={"secret": i})
    for name, cursor in HOSTILE.items():
        for user_id, oldest_first in itertools.product(("u", None), (False, True)):
            with pytest.raises(ValueError, match="cursor") as exc:
                await svc.list_sessions(user_id, limit=5, cursor=cursor, oldest_first=oldest_first)
            assert type(exc.value) is ValueError, f"cursor {name}: {exc.value!r}"[:500]
            assert len(str(exc.value)) < 500


async def test_a_cursor_of_another_listing_is_refused(svc: Any) -> None:
    for i in range(3):
        await svc.create_session(f"a{i}", "alice")
        await svc.create_session(f"b{i}", "bob")
    newest = (await svc.list_sessions("alice", limit=1)).next_cursor
    oldest = (await svc.list_sessions("alice", limit=1, oldest_first=True)).next_cursor
    for cursor, user_id, oldest_first in [
        (newest, "bob", False),  # another user's
        (newest, "alice", True),  # the other order's
        (oldest, "alice", False),
        (oldest, None, False),
    ]:
        with pytest.raises(ValueError, match="not a cursor of this listing"):
            await svc.list_sessions(user_id, cursor=cursor, oldest_first=oldest_first)
    rest = await svc.list_sessions("alice", cursor=oldest, oldest_first=True)
    assert [r.session_id for r in rest.items] == ["a1", "a2"]


async def test_ttl_expires_sessions_and_purge_removes_their_events(
    make_service: Any, db_url: str
) -> None:
    short, keep = make_service(ttl=0.001), make_service(ttl=3600)
    await keep.create_session("kept", "u")
    record = await keep.get_session("kept", "u")
    assert record.expires_at is not None
    await keep.create_session("gone", "u", state={"app:a": 1})
    await keep.append_event("gone", {"a": 1}, "u")
    assert await short.get_session("gone", "u") is not None  # a read sets the short expiry
    await asyncio.sleep(0.01)
    assert await short.get_session("gone", "u") is None
    with pytest.raises(SessionNotFoundError):
        await short.append_event("gone", {"a": 2}, "u")
    assert [r.session_id for r in (await short.list_sessions()).items] == ["kept"]
    # An expired key can be created again, with an empty log.
    again = await keep.create_session("gone", "u")
    assert again.version == 1
    assert (await keep.get_session("gone", "u")).events == ()
    await keep.create_session("old", "u")
    await keep.append_event("old", {"a": 1}, "u")
    await short.get_session("old", "u")
    await asyncio.sleep(0.01)
    assert await make_service("store").purge_expired() == 1
    assert _count(db_url, "statekeeper_events", app_name=keep.app_name) == 0
    assert await keep.get_app_state() == {"a": 1}


# --------------------------------------------------------------------------- the stores see them


async def test_sql_session_and_the_service_share_sessions(make_service: Any, db_url: str) -> None:
    svc, store = make_service(), make_service("store")
    await svc.create_session("s", "u", state={"topic": "x", "app:a": 1, "user:b": 2})
    await svc.append_event("s", {"e": 1}, "u", state_delta={"n": 1})
    assert await store.get_state("s", "u") == {"topic": "x", "n": 1}
    assert [i.session_id for i in (await store.list_sessions("u")).items] == ["s"]
    assert await store.merge_state("s", {"m": 1}, "u") == 3
    assert (await svc.get_session("s", "u")).state == {
        "topic": "x",
        "n": 1,
        "m": 1,
        "app:a": 1,
        "user:b": 2,
    }
    # A session SqlSession made reads as one with no events.
    await store.set_state("plain", {"k": 1}, "u")
    plain = await svc.get_session("plain", "u")
    assert (plain.events, plain.version, plain.state) == ((), 1, {"k": 1, "app:a": 1, "user:b": 2})
    assert plain.update_time == plain.updated_at.timestamp()
    assert await svc.append_event("plain", {"e": 1}, "u") == 2
    assert await store.delete_session("s", "u") is True
    assert _count(db_url, "statekeeper_events", app_name=svc.app_name, session_id="s") == 0


async def test_a_closed_service_refuses_calls(make_service: Any) -> None:
    from statekeeper import StoreClosedError

    svc = make_service()
    await svc.create_session("s", "u")
    await svc.close()
    with pytest.raises(StoreClosedError, match=r"SessionService .* is closed"):
        await svc.get_session("s", "u")
    with pytest.raises(StoreClosedError):
        await svc.append_event("s", {}, "u")


async def test_in_memory_sqlite_is_one_database_for_the_services_life(facade: str) -> None:
    cls: Any = SessionService if facade == "sync" else AsyncSessionService
    raw = cls("sqlite:///:memory:", auto_migrate=True)
    service = SyncAsAsync(raw) if facade == "sync" else raw
    try:
        await service.create_session("s", "u", state={"app:a": 1})
        await service.append_event("s", {"e": 1}, "u")
        record = await service.get_session("s", "u")
        assert [e.data for e in record.events] == [{"e": 1}]
        assert record.state == {"app:a": 1}
    finally:
        await _close(service)


# --------------------------------------------------------------------------- schema


async def test_unmigrated_database_raises_or_auto_migrates(empty_url_any: str, facade: str) -> None:
    cls: Any = SessionService if facade == "sync" else AsyncSessionService
    service = cls(empty_url_any)
    wrapped = SyncAsAsync(service) if facade == "sync" else service
    try:
        with pytest.raises(SchemaNotReadyError, match="statekeeper db upgrade --url"):
            await wrapped.create_session("s")
    finally:
        await _close(wrapped)
    assert migrations.current(empty_url_any) is None
    service = cls(empty_url_any, auto_migrate=True)
    wrapped = SyncAsAsync(service) if facade == "sync" else service
    try:
        assert (await wrapped.create_session("s")).version == 1
    finally:
        await _close(wrapped)


async def _close(obj: Any) -> None:
    result = obj.close()
    if inspect.isawaitable(result):
        await result


@pytest.fixture
def empty_url_any(backend: str, request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """An unmigrated database of the backend under test."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_empty_database"))
    return sqlite_url


async def test_engine_passed_in_works_and_is_left_open(db_url: str, facade: str) -> None:
    if facade == "sync":
        engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        with SessionService(engine, app_name="own-engine-" + uuid.uuid4().hex) as service:
            service.create_session("s", state={"app:a": 1})
            service.append_event("s", {"e": 1.5})
            assert service.get_session("s").events[0].data == {"e": 1.5}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
    else:
        from sqlalchemy.ext.asyncio import create_async_engine

        url = db_url.replace("postgresql://", "postgresql+psycopg://").replace(
            "sqlite://", "sqlite+aiosqlite://"
        )
        aengine = create_async_engine(url)
        async with AsyncSessionService(aengine, app_name="own-" + uuid.uuid4().hex) as aservice:
            await aservice.create_session("s", state={"app:a": 1})
            await aservice.append_event("s", {"e": 1.5})
            assert (await aservice.get_session("s")).events[0].data == {"e": 1.5}
        await aengine.dispose()


# --------------------------------------------------------------------------- pop_event


async def test_pop_event_removes_the_newest_and_keeps_the_log_right(svc: Any) -> None:
    await _log(svc, [1.0, 2.0, 3.0])
    popped = await svc.pop_event("s", "u")
    assert (popped.seq, popped.timestamp, popped.data) == (3, 3.0, {"i": 2})
    record = await svc.get_session("s", "u")
    assert [e.data["i"] for e in record.events] == [0, 1]
    assert record.version == 5  # create, 3 appends, the pop
    await svc.append_event("s", {"i": 9}, "u", timestamp=4.0)
    assert [(e.seq, e.data["i"]) for e in (await svc.get_session("s", "u")).events] == [
        (1, 0),
        (2, 1),
        (3, 9),
    ]
    assert [(await svc.pop_event("s", "u")).data["i"] for _ in range(3)] == [9, 1, 0]
    assert await svc.pop_event("s", "u") is None
    assert (await svc.get_session("s", "u")).version == 9  # an empty pop writes nothing


async def test_pop_event_of_a_missing_session_or_another_user_is_none(svc: Any) -> None:
    await _log(svc, [1.0])
    assert await svc.pop_event("nope", "u") is None
    assert await svc.pop_event("s", "someone-else") is None
    assert len((await svc.get_session("s", "u")).events) == 1
    with pytest.raises(ValueError, match="session_id"):
        await svc.pop_event("", "u")


async def test_concurrent_pops_take_distinct_events(make_service: Any) -> None:
    services = [make_service() for _ in range(4)]
    await services[0].create_session("s", "u")
    for i in range(24):
        await services[0].append_event("s", {"i": i}, "u")

    async def drain(service: Any) -> list[int]:
        taken = []
        while (event := await service.pop_event("s", "u")) is not None:
            taken.append(event.data["i"])
        return taken

    results = await asyncio.gather(*(drain(s) for s in services))
    assert sorted(i for taken in results for i in taken) == list(range(24))


async def test_appends_racing_the_sessions_creation_lose_nothing(make_service: Any) -> None:
    services = [make_service() for _ in range(6)]

    async def add(service: Any, n: int) -> None:
        try:
            await service.append_event("s", {"n": n}, "u")
        except SessionNotFoundError:
            with contextlib.suppress(SessionExistsError):
                await service.create_session("s", "u")
            await service.append_event("s", {"n": n}, "u")

    await asyncio.gather(*(add(s, n) for n, s in enumerate(services)))
    record = await services[0].get_session("s", "u")
    assert sorted(e.data["n"] for e in record.events) == list(range(6))
