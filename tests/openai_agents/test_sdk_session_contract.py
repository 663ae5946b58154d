"""The Agents SDK's own session tests, ported to run against ``StatekeeperSession``.

Ported (rewritten, not copied) from openai-agents-python ``tests/memory/test_session.py``,
``tests/memory/test_session_limit.py`` and ``tests/extensions/memory/test_sqlalchemy_session.py``:
the tests that hold for any ``Session``. Each runs on a SQLite file and on PostgreSQL.
The ones that do not apply are listed in docs/openai-agents.md ("Tested against the SDK").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("agents", reason="the openai-agents extra is not installed here")

from agents import Runner
from agents.memory.session_settings import SessionSettings
from oa_fake_model import canned_agent

from statekeeper.openai_agents import StatekeeperSession

if TYPE_CHECKING:
    from collections.abc import Callable

    Make = Callable[..., StatekeeperSession]

CONVERSATION = [
    {"role": "user", "content": "Message 1"},
    {"role": "assistant", "content": "Response 1"},
    {"role": "user", "content": "Message 2"},
    {"role": "assistant", "content": "Response 2"},
    {"role": "user", "content": "Message 3"},
    {"role": "assistant", "content": "Response 3"},
]


def _contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


# ---------------------------------------------------------- direct operations


async def test_add_get_and_clear(make_session: Make) -> None:  # test_sqlite_session_memory_direct
    session = make_session("direct_test")
    await session.add_items([{"role": "user", "content": "Hello"}, CONVERSATION[1]])
    got = await session.get_items()
    assert [(i["role"], i["content"]) for i in got] == [
        ("user", "Hello"),
        ("assistant", "Response 1"),
    ]
    await session.clear_session()
    assert await session.get_items() == []


async def test_pop_item_newest_first_then_none(make_session: Make) -> None:
    # test_sqlite_session_memory_pop_item, test_pop_from_empty_session
    session = make_session("pop_test")
    assert await session.pop_item() is None
    items = CONVERSATION[:3]
    await session.add_items(items)
    assert await session.pop_item() == items[2]
    assert _contents(await session.get_items()) == ["Message 1", "Response 1"]
    assert await session.pop_item() == items[1]
    assert await session.pop_item() == items[0]
    assert await session.pop_item() is None
    assert await session.get_items() == []


async def test_pop_touches_only_its_session(make_session: Make) -> None:
    # test_session_memory_pop_different_sessions
    one, two = make_session("session_1"), make_session("session_2")
    await one.add_items([{"role": "user", "content": "Session 1 message"}])
    await two.add_items(
        [
            {"role": "user", "content": "Session 2 message 1"},
            {"role": "user", "content": "Session 2 message 2"},
        ]
    )
    assert (await two.pop_item() or {}).get("content") == "Session 2 message 2"
    assert _contents(await one.get_items()) == ["Session 1 message"]
    assert _contents(await two.get_items()) == ["Session 2 message 1"]


async def test_get_items_with_limit(make_session: Make) -> None:
    # test_sqlite_session_get_items_with_limit, test_get_items_with_limit,
    # test_get_items_limit_returns_fewer_when_history_exhausted
    session = make_session("count_test")
    await session.add_items(CONVERSATION)
    assert _contents(await session.get_items()) == _contents(CONVERSATION)
    assert _contents(await session.get_items(limit=2)) == ["Message 3", "Response 3"]
    assert _contents(await session.get_items(limit=4)) == _contents(CONVERSATION[2:])
    assert _contents(await session.get_items(limit=10)) == _contents(CONVERSATION)
    assert await session.get_items(limit=0) == []


async def test_add_empty_items_list(make_session: Make) -> None:  # test_add_empty_items_list
    session = make_session("empty")
    await session.add_items([])
    assert await session.get_items() == []
    # Nothing was written: no statekeeper session exists for it.
    assert not (await session.list_sessions()).items


async def test_unicode_content(make_session: Make) -> None:  # test_sqlite_session_unicode_content
    session = make_session("unicode")
    items = [
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "😊👍"},
        {"role": "user", "content": "Привет"},
    ]
    await session.add_items(items)
    assert await session.get_items() == items


async def test_special_characters_and_sql_injection(make_session: Make) -> None:
    # test_sqlite_session_special_characters_and_sql_injection
    session = make_session("'; DROP TABLE statekeeper_events; --")
    items = [
        {"role": "user", "content": "O'Reilly"},
        {"role": "assistant", "content": "DROP TABLE sessions;"},
        {"role": "user", "content": '"SELECT * FROM users WHERE name = "admin";"'},
        {"role": "assistant", "content": "Robert'); DROP TABLE students;--"},
        {"role": "user", "content": "Normal message"},
    ]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await make_session("other").get_items() == []


async def test_concurrent_access(make_session: Make) -> None:
    # test_sqlite_session_concurrent_access
    session = make_session("concurrent")
    await asyncio.gather(
        *(session.add_items([{"role": "user", "content": f"Message {i}"}]) for i in range(10))
    )
    assert sorted(_contents(await session.get_items())) == sorted(f"Message {i}" for i in range(10))


async def test_same_instant_items_keep_their_order(make_session: Make) -> None:
    # test_get_items_same_timestamp_consistent_order, test_get_items_orders_by_id_for_ties,
    # test_pop_item_same_timestamp_returns_latest
    session = make_session("ties")
    items = [{"role": "user", "content": f"m{i}", "created_at": 1.0} for i in range(20)]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.pop_item() == items[-1]


async def test_session_isolation(make_session: Make) -> None:  # test_session_isolation
    one, two = make_session("session_1"), make_session("session_2")
    await one.add_items([{"role": "user", "content": "I like cats."}])
    await two.add_items([{"role": "user", "content": "I like dogs."}])
    assert _contents(await one.get_items()) == ["I like cats."]
    assert _contents(await two.get_items()) == ["I like dogs."]


# ---------------------------------------------------------- session settings


async def test_session_settings_default(make_session: Make) -> None:
    session = make_session()
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None


async def test_session_settings_constructor_and_dictionary(make_session: Make) -> None:
    assert make_session(session_settings=SessionSettings(limit=5)).session_settings.limit == 5
    from_dict = make_session(session_settings={"limit": 3}).session_settings
    assert isinstance(from_dict, SessionSettings)
    assert from_dict.limit == 3


async def test_get_items_uses_session_settings_limit(make_session: Make) -> None:
    session = make_session(session_settings=SessionSettings(limit=3))
    await session.add_items([{"role": "user", "content": f"Message {i}"} for i in range(5)])
    assert _contents(await session.get_items()) == ["Message 2", "Message 3", "Message 4"]


async def test_explicit_limit_overrides_session_settings(make_session: Make) -> None:
    session = make_session(session_settings=SessionSettings(limit=5))
    await session.add_items([{"role": "user", "content": f"Message {i}"} for i in range(10)])
    assert _contents(await session.get_items(limit=2)) == ["Message 8", "Message 9"]


# ---------------------------------------------------------- with a Runner


async def test_runner_keeps_the_conversation(make_session: Make) -> None:
    # test_session_memory_basic_functionality_parametrized, test_runner_integration ("run")
    agent, model = canned_agent()
    session = make_session("runner")
    first = await Runner.run(agent, "Hi", session=session)
    assert first.final_output == "seen 1 items: Hi"
    second = await Runner.run(agent, "Again", session=session)
    # The model got the first turn's input and reply back from the session.
    assert second.final_output == "seen 3 items: Again"
    assert _contents(model.inputs[1][:1]) == ["Hi"]
    assert len(await session.get_items()) == 4


async def test_runner_sessions_do_not_mix(make_session: Make) -> None:
    # test_session_memory_different_sessions_parametrized
    agent, _ = canned_agent()
    one, two = make_session("a"), make_session("b")
    await Runner.run(agent, "to a", session=one)
    result = await Runner.run(agent, "to b", session=two)
    assert result.final_output == "seen 1 items: to b"


@pytest.mark.parametrize("limit", [0, 2, 100, None])
async def test_runner_session_limit(make_session: Make, limit: int | None) -> None:
    # test_session_limit_parameter / _zero / _none_gets_all_history / _larger_than_history
    agent, model = canned_agent()
    session = make_session("limited", session_settings=SessionSettings(limit=limit))
    await Runner.run(agent, "one", session=session)
    await Runner.run(agent, "two", session=session)
    await Runner.run(agent, "three", session=session)
    history = len(model.inputs[2]) - 1  # the new input is the last item
    assert history == (4 if limit is None else min(limit, 4))
