"""Every store behaviour, on {SQL on SQLite and PostgreSQL, JSON files, Redis} x {sync, async}."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import pooler_connect_args

from statekeeper import (
    ConflictError,
    SessionNotFoundError,
    StateEncodingError,
    StateModule,
    codec,
)
from statekeeper._sql.schema import sessions as sessions_table
from statekeeper._sql.statements.store import PURGE_BATCH


class Memory(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.content: list[Any] = []
        self.register_state("content")


class Agent(StateModule):
    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.memory = Memory()
        self.register_state("name")


class Plain:
    """A state module that is not a StateModule: only the two methods."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.data)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = dict(state)


# --------------------------------------------------------------------------- save / load


async def test_save_then_load_restores_modules(store: Any) -> None:
    agent = Agent("helper")
    agent.memory.content = [{"role": "user", "text": "hi"}, {"role": "bot", "score": 0.5}]
    tools = Plain()
    tools.data = {"calls": 3}
    await store.save_session_state("s1", user_id="alice", agent=agent, tools=tools)

    agent2, tools2 = Agent(), Plain()
    await store.load_session_state("s1", user_id="alice", agent=agent2, tools=tools2)
    assert agent2.name == "helper"
    assert agent2.memory.content == agent.memory.content
    assert tools2.data == {"calls": 3}


async def test_save_keeps_modules_not_passed(store: Any) -> None:
    a, b = Plain(), Plain()
    a.data, b.data = {"x": 1}, {"y": 2}
    await store.save_session_state("s", a=a, b=b)
    a.data = {"x": 10}
    await store.save_session_state("s", a=a)
    assert await store.get_state("s") == {"a": {"x": 10}, "b": {"y": 2}}


async def test_load_missing_module_logs_warning_and_leaves_it(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = Plain()
    a.data = {"x": 1}
    await store.save_session_state("s", a=a)
    b = Plain()
    b.data = {"untouched": True}
    with caplog.at_level(logging.WARNING, logger="statekeeper"):
        await store.load_session_state("s", a=Plain(), b=b)
    assert b.data == {"untouched": True}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'b'" in warnings[0].getMessage()


async def test_load_absent_session(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = Plain()
    p.data = {"kept": 1}
    with caplog.at_level(logging.INFO, logger="statekeeper"):
        await store.load_session_state("nope", user_id="alice", p=p)  # allowed by default
    assert p.data == {"kept": 1}
    # Logged at INFO, as AgentScope's sessions do, naming the session and user.
    (record,) = [r for r in caplog.records if r.name == "statekeeper"]
    assert record.levelno == logging.INFO
    assert "'nope'" in record.getMessage()
    assert "'alice'" in record.getMessage()
    with pytest.raises(SessionNotFoundError, match="nope") as info:
        await store.load_session_state("nope", allow_not_exist=False, p=p)
    assert isinstance(info.value, ValueError)


async def test_save_rejects_objects_without_state_dict(store: Any) -> None:
    with pytest.raises(TypeError, match="state_dict"):
        await store.save_session_state("s", thing=object())
    assert await store.session_exists("s") is False


# ------------------------------------------------------------------ get/set/merge, versions


async def test_versions_count_every_write(store: Any) -> None:
    assert await store.set_state("s", {"a": 1}) == 1
    assert await store.merge_state("s", {"b": 2}) == 2
    p = Plain()
    await store.save_session_state("s", p=p)
    assert await store.set_state("s", {"c": 3}) == 4
    assert await store.get_state("s") == {"c": 3}


async def test_set_replaces_and_merge_keeps(store: Any) -> None:
    await store.set_state("s", {"a": 1, "b": {"deep": [1, 2]}})
    await store.merge_state("s", {"b": {"new": True}, "c": None})
    assert await store.get_state("s") == {"a": 1, "b": {"new": True}, "c": None}
    await store.set_state("s", {"z": 0})
    assert await store.get_state("s") == {"z": 0}


async def test_merge_creates_and_handles_empty(store: Any) -> None:
    assert await store.merge_state("s", {}) == 1
    assert await store.get_state("s") == {}
    await store.merge_state("s", {"a": 1})
    await store.merge_state("s", {})
    assert await store.get_state("s") == {"a": 1}


async def test_any_mapping_is_a_state_and_other_values_are_refused(store: Any) -> None:
    from types import MappingProxyType

    assert await store.set_state("s", MappingProxyType({"a": 1})) == 1
    assert await store.merge_state("s", MappingProxyType({"b": 2})) == 2
    assert await store.get_state("s") == {"a": 1, "b": 2}
    with pytest.raises(TypeError, match="dict"):
        await store.set_state("s", [("a", 1)])
    with pytest.raises(TypeError, match="dict"):
        await store.merge_state("s", "ab")
    assert await store.get_state("s") == {"a": 1, "b": 2}


async def test_get_state_absent_is_none(store: Any) -> None:
    assert await store.get_state("missing") is None


async def test_expected_version_compare_and_swap(store: Any) -> None:
    assert await store.set_state("s", {"a": 1}, expected_version=0) == 1
    with pytest.raises(ConflictError) as info:
        await store.set_state("s", {"a": 2}, expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert await store.set_state("s", {"a": 2}, expected_version=1) == 2
    with pytest.raises(ConflictError, match="version 2"):
        await store.merge_state("s", {"b": 1}, expected_version=1)
    assert await store.merge_state("s", {"b": 1}, expected_version=2) == 3
    assert await store.get_state("s") == {"a": 2, "b": 1}


async def test_conflict_writes_nothing(store: Any) -> None:
    await store.set_state("s", {"a": 1})
    for call in (
        store.set_state("s", {"a": "lost"}, expected_version=7),
        store.merge_state("s", {"a": "lost"}, expected_version=7),
        store.set_state("s", {"a": "lost"}, expected_version=0),
        store.merge_state("s", {"a": "lost"}, expected_version=0),
    ):
        with pytest.raises(ConflictError):
            await call
    assert await store.get_state("s") == {"a": 1}
    assert (await store.list_sessions()).items[0].version == 1


async def test_expected_version_on_absent_session(store: Any) -> None:
    with pytest.raises(ConflictError, match="does not exist") as info:
        await store.set_state("s", {"a": 1}, expected_version=3)
    assert info.value.actual == 0
    with pytest.raises(ConflictError):
        await store.merge_state("s", {"a": 1}, expected_version=1)
    assert await store.session_exists("s") is False
    assert await store.merge_state("s", {"a": 1}, expected_version=0) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
async def test_expected_version_must_be_an_int(store: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        await store.set_state("s", {"a": 1}, expected_version=bad)


# --------------------------------------------------------------------------- JSON fidelity


TRICKY = {
    "nul": "a\x00b",
    "surrogates": ["\ud800", "x\udfffy", "\udc00\udbff", "\ud800x\udc00"],
    "unicode": "日本語 🚀 é",
    "escapes": '"\\/\b\f\n\r\t\x01\x1f',
    "numbers": [0, -0.0, 1.5e300, 5e-324, 2**70, -(2**63), 0.1 + 0.2],
    "nested": {"": {"a.b": [None, True, False, [], {}]}},
    "\x00key\ud800": "nested keys may hold anything",
}


async def test_exact_round_trip_of_tricky_values(store: Any) -> None:
    await store.set_state("s", {"m": TRICKY})
    assert await store.get_state("s") == {"m": TRICKY}
    await store.merge_state("s", {"other": TRICKY["surrogates"]})
    assert await store.get_state("s") == {"m": TRICKY, "other": TRICKY["surrogates"]}
    got = await store.get_state("s")
    assert str(got["m"]["numbers"][1]) == "-0.0"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (float("nan"), "agent.memory.content[1].score"),
        (float("inf"), "agent.memory.content[1].score"),
        ({1, 2}, "agent.memory.content[1].score"),
        (b"bytes", "agent.memory.content[1].score"),
        (dt.datetime(2026, 1, 1), "agent.memory.content[1].score"),
    ],
)
async def test_unencodable_state_names_path_and_writes_nothing(
    store: Any, value: Any, path: str
) -> None:
    await store.set_state("s", {"agent": {"ok": True}})
    agent = Agent()
    agent.memory.content = [{"score": 1}, {"score": value}]
    with pytest.raises(StateEncodingError) as info:
        await store.save_session_state("s", agent=agent)
    assert info.value.path == path
    assert path in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(StateEncodingError):
        await store.merge_state("s", {"agent": {"x": value}})
    with pytest.raises(StateEncodingError):
        await store.set_state("s2", {"agent": {"x": value}})
    assert await store.get_state("s") == {"agent": {"ok": True}}
    assert await store.session_exists("s2") is False


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def test_states_nested_up_to_max_depth_are_stored_and_merged(store: Any) -> None:
    deep = _nested(codec.MAX_DEPTH)
    await store.set_state("s", {"a": deep})
    await store.merge_state("s", {"b": deep})  # the one-statement merge
    many = {f"m{i}": deep for i in range(9)}  # more modules than one statement merges
    await store.merge_state("s", many)
    assert await store.get_state("s") == {"a": deep, "b": deep, **many}

    too_deep = [deep]
    with pytest.raises(StateEncodingError, match="nested more than") as info:
        await store.merge_state("s", {"a": too_deep})
    assert info.value.path == "a" + "[0]" * codec.MAX_DEPTH
    with pytest.raises(StateEncodingError, match="nested more than"):
        await store.set_state("s", {"a": too_deep})
    assert (await store.get_state("s"))["a"] == deep


async def test_a_split_surrogate_pair_comes_back_joined(store: Any) -> None:
    # JSON writes U+DBFF U+DC00 (two code points) as the escape pair of U+10FC00;
    # it reads back as that one character, as with json.loads.
    await store.set_state("s", {"m": {"k": ["ok", "\udbff\udc00"]}})
    assert await store.get_state("s") == {"m": {"k": ["ok", "\U0010fc00"]}}


@pytest.mark.parametrize("name", ["", "a\x00b", "\ud800", 5])
async def test_module_names_must_be_plain_text(store: Any, name: Any) -> None:
    with pytest.raises(StateEncodingError):
        await store.merge_state("s", {name: 1})
    assert await store.session_exists("s") is False


# --------------------------------------------------------------------------- ids and isolation


@pytest.mark.parametrize(
    ("session_id", "user_id", "match"),
    [
        ("", "u", "session_id must not be empty"),
        ("x" * 256, "u", "256 characters"),
        ("s", "u" * 256, "user_id is 256"),
        ("s\x00", "u", "NUL"),
        ("s", "\ud800", "surrogate"),
        (None, "u", "session_id must be a str"),
        ("s", 7, "user_id must be a str"),
    ],
)
async def test_invalid_ids_raise_value_error(
    store: Any, session_id: Any, user_id: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        await store.set_state(session_id, {"a": 1}, user_id=user_id)
    with pytest.raises(ValueError, match=match):
        await store.get_state(session_id, user_id=user_id)


async def test_longest_ids_and_odd_characters_work(store: Any) -> None:
    sid, uid = "s" * 255, "../../etc/passwd'; DROP TABLE x; --"
    await store.set_state(sid, {"a": 1}, user_id=uid)
    assert await store.get_state(sid, user_id=uid) == {"a": 1}


async def test_users_and_apps_are_isolated(make_store: Any) -> None:
    one, other_app = make_store(app_name="one"), make_store(app_name="two")
    await one.set_state("s", {"who": "alice"}, user_id="alice")
    await one.set_state("s", {"who": "bob"}, user_id="bob")
    await other_app.set_state("s", {"who": "app two"}, user_id="alice")

    assert await one.get_state("s", user_id="alice") == {"who": "alice"}
    assert await one.get_state("s", user_id="bob") == {"who": "bob"}
    assert await one.get_state("s") is None
    assert await other_app.get_state("s", user_id="alice") == {"who": "app two"}
    assert {i.user_id for i in (await one.list_sessions()).items} == {"alice", "bob"}
    assert [i.app_name for i in (await other_app.list_sessions()).items] == ["two"]

    assert await one.delete_session("s", user_id="alice") is True
    assert await other_app.get_state("s", user_id="alice") == {"who": "app two"}
    assert await one.get_state("s", user_id="bob") == {"who": "bob"}
    await one.delete_session("s", user_id="bob")
    await other_app.delete_session("s", user_id="alice")


# --------------------------------------------------------------------------- delete / exists


async def test_delete_and_exists(store: Any) -> None:
    assert await store.session_exists("s") is False
    assert await store.delete_session("s") is False
    await store.set_state("s", {"a": 1})
    assert await store.session_exists("s") is True
    assert await store.delete_session("s") is True
    assert await store.session_exists("s") is False
    assert await store.get_state("s") is None
    assert await store.set_state("s", {"a": 1}) == 1  # a new session starts over


# --------------------------------------------------------------------------- ttl


async def test_ttl_expired_sessions_read_as_absent(make_store: Any) -> None:
    writer = make_store(ttl=dt.timedelta(hours=1))
    await writer.set_state("s", {"a": 1})
    info = (await writer.list_sessions()).items[0]
    assert info.expires_at is not None
    assert dt.timedelta(minutes=59) < info.expires_at - info.updated_at <= dt.timedelta(hours=1)

    # Expire a session for real: a tiny ttl, then wait it out.
    short = make_store(ttl=0.001)
    await short.set_state("gone", {"a": 1})
    await asyncio.sleep(0.01)
    assert await short.get_state("gone") is None
    assert await short.session_exists("gone") is False
    assert await short.delete_session("gone") is False
    assert [i.session_id for i in (await short.list_sessions()).items] == ["s"]
    with pytest.raises(SessionNotFoundError):
        await short.load_session_state("gone", allow_not_exist=False)


async def test_ttl_write_onto_expired_session_starts_over(make_store: Any) -> None:
    short, longer = make_store(ttl=0.001), make_store(ttl=60)
    await short.set_state("s", {"old": 1})
    await short.set_state("s", {"old": 2})
    await asyncio.sleep(0.01)
    assert await longer.merge_state("s", {"new": 1}) == 1  # the expired state is gone
    assert await longer.get_state("s") == {"new": 1}
    await short.set_state("t", {"a": 1})
    await asyncio.sleep(0.01)
    assert await longer.set_state("t", {"a": 2}, expected_version=0) == 1


async def test_ttl_slides_on_save_and_load(make_store: Any) -> None:
    store = make_store(ttl=dt.timedelta(seconds=30))
    await store.set_state("s", {"a": {"x": 1}})
    first = (await store.list_sessions()).items[0].expires_at
    await asyncio.sleep(0.01)
    await store.get_state("s")
    after_load = (await store.list_sessions()).items[0]
    assert after_load.expires_at > first
    assert after_load.version == 1  # a load refreshes the expiry, it is not a write
    await asyncio.sleep(0.01)
    await store.load_session_state("s", a=Plain())
    after_second_load = (await store.list_sessions()).items[0].expires_at
    assert after_second_load > after_load.expires_at
    await asyncio.sleep(0.01)
    assert await store.session_exists("s")
    assert (await store.list_sessions()).items[0].expires_at == after_second_load


async def test_purge_expired_deletes_and_counts(make_store: Any) -> None:
    short = make_store(ttl=0.001)
    keep = make_store(ttl=3600)
    forever = make_store()
    for i in range(3):
        await short.set_state(f"old{i}", {"i": i})
    await keep.set_state("fresh", {"a": 1})
    await forever.set_state("forever", {"a": 1})
    await asyncio.sleep(0.01)
    assert await short.purge_expired() == 3
    assert await short.purge_expired() == 0
    assert sorted(i.session_id for i in (await forever.list_sessions()).items) == [
        "forever",
        "fresh",
    ]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("driver", ["statekeeper"])
async def test_purge_expired_counts_across_batches(make_store: Any) -> None:
    store = make_store(ttl=3600)
    url = store.engine.url  # the store's own database, through a sync driver
    sync = "sqlite+pysqlite" if url.get_backend_name() == "sqlite" else "postgresql+psycopg"
    db_url = url.set(drivername=sync)
    await store.set_state("live", {"a": 1})
    app = (await store.list_sessions()).items[0].app_name
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    count = PURGE_BATCH * 2 + 17
    args = pooler_connect_args(db_url, "psycopg")  # an executemany prepares
    engine = sa.create_engine(db_url, poolclass=sa.NullPool, connect_args=args)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(sessions_table),
                [
                    {
                        "app_name": app,
                        "user_id": "u",
                        "session_id": f"old{i}",
                        "state": {},
                        "version": 1,
                        "created_at": past,
                        "updated_at": past,
                        "expires_at": past,
                    }
                    for i in range(count)
                ],
            )
    finally:
        engine.dispose()
    assert await store.purge_expired() == count
    assert await store.purge_expired() == 0
    assert [i.session_id for i in (await store.list_sessions()).items] == ["live"]


@pytest.mark.parametrize("ttl", [0, -5, "10", dt.timedelta(0)])
async def test_bad_ttl_is_refused(make_store: Any, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        make_store(ttl=ttl)


# --------------------------------------------------------------------------- listing


async def test_list_sessions_newest_first_with_pages(store: Any) -> None:
    for i in range(7):
        await store.set_state(f"s{i}", {"i": i}, user_id="alice")
    await store.set_state("b", {}, user_id="bob")
    await store.set_state("s2", {"touched": True}, user_id="alice")  # now the newest

    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_sessions("alice", limit=3, cursor=cursor)
        assert len(page.items) <= 3
        seen += [i.session_id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["s2", "s6", "s5", "s4", "s3", "s1", "s0"]
    everyone = await store.list_sessions(limit=100)
    assert [i.session_id for i in everyone.items][:2] == ["s2", "b"]
    assert everyone.next_cursor is None
    info = everyone.items[0]
    assert info.user_id == "alice"
    assert info.version == 2
    assert info.created_at < info.updated_at
    assert info.updated_at.tzinfo is not None
    assert info.updated_at.utcoffset() == dt.timedelta(0)
    assert not hasattr(info, "state")


async def test_list_pages_are_stable_while_sessions_are_added(store: Any) -> None:
    for i in range(6):
        await store.set_state(f"s{i}", {})
    page = await store.list_sessions(limit=2)
    seen = [i.session_id for i in page.items]
    while page.next_cursor:
        await store.set_state(f"new{len(seen)}", {})  # newer than anything listed
        page = await store.list_sessions(limit=2, cursor=page.next_cursor)
        seen += [i.session_id for i in page.items]
    assert seen == ["s5", "s4", "s3", "s2", "s1", "s0"]


async def test_list_sessions_bad_arguments(store: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.list_sessions(limit=0)
    with pytest.raises(ValueError, match="cursor"):
        await store.list_sessions(cursor="not-a-cursor")


# --------------------------------------------------------------------------- lifecycle


async def test_context_manager_closes(db_url: str, facade: str) -> None:
    from statekeeper import AsyncSqlSession, SqlSession

    if facade == "sync":
        with SqlSession(db_url) as s:
            s.set_state("x", {"a": 1})
            assert s.get_state("x") == {"a": 1}
    else:
        async with AsyncSqlSession(db_url) as a:
            await a.set_state("x", {"a": 1})
            assert await a.get_state("x") == {"a": 1}


async def test_calls_after_close_raise_store_closed(make_store: Any) -> None:
    from statekeeper import StoreClosedError

    store = make_store()
    await store.set_state("s", {"a": 1})
    await store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        await store.get_state("s")
    with pytest.raises(StoreClosedError):
        await store.set_state("s", {"a": 2})
    with pytest.raises(StoreClosedError):
        await store.list_sessions()
    await store.close()  # closing twice is harmless
