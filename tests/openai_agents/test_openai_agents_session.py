"""``StatekeeperSession`` beyond the SDK's own tests: processes, concurrency, items, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("agents", reason="the openai-agents extra is not installed here")

from agents import Runner
from click.testing import CliRunner
from oa_fake_model import canned_agent
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from tests.conftest import failing_event_insert

from statekeeper import AsyncSessionService
from statekeeper.cli import main as cli
from statekeeper.errors import StateEncodingError
from statekeeper.openai_agents import StatekeeperSession

if TYPE_CHECKING:
    from collections.abc import Callable

    Make = Callable[..., StatekeeperSession]

HERE = Path(__file__).parent


def _turn(url: str, app: str, session_id: str, text: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(HERE / "oa_turn.py"), url, app, "alice", session_id, text],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.slow
async def test_a_runner_conversation_resumes_in_a_new_process(
    make_session: Make, oa_url: str, app_name: str
) -> None:
    agent, _ = canned_agent()
    session = make_session("support-1", user_id="alice")
    first = await Runner.run(agent, "My order is late", session=session)
    assert first.final_output == "seen 1 items: My order is late"
    # Another process opens the same conversation and sees both items.
    assert _turn(oa_url, app_name, "support-1", "Any news?") == [
        "seen 3 items: Any news?",
        "4",
    ]
    items = await session.get_items()
    assert [i.get("content") for i in items if i.get("role") == "user"] == [
        "My order is late",
        "Any news?",
    ]


async def test_eight_writers_lose_no_item(make_session: Make) -> None:
    sessions = [make_session("busy", user_id="alice") for _ in range(8)]

    async def write(n: int, session: StatekeeperSession) -> None:
        for i in range(10):
            await session.add_items([{"role": "user", "content": f"{n}-{i}"}])

    await asyncio.gather(*(write(n, s) for n, s in enumerate(sessions)))
    got = [i["content"] for i in await sessions[0].get_items()]
    assert sorted(got) == sorted(f"{n}-{i}" for n in range(8) for i in range(10))
    for n in range(8):  # each writer's items keep their order
        assert [g for g in got if g.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(10)]


async def test_a_turns_items_land_whole_and_never_interleave(make_session: Make) -> None:
    sessions = [make_session("turns", user_id="alice") for _ in range(6)]

    async def turn(n: int, session: StatekeeperSession) -> None:
        for t in range(3):  # a user message, a tool call, the reply: one add_items
            await session.add_items([{"turn": f"{n}-{t}", "part": p} for p in range(3)])

    await asyncio.gather(*(turn(n, s) for n, s in enumerate(sessions)))
    got = await sessions[0].get_items()
    assert len(got) == 6 * 3 * 3
    for k in range(0, len(got), 3):  # each turn's three items together, in order
        assert [i["part"] for i in got[k : k + 3]] == [0, 1, 2]
        assert len({i["turn"] for i in got[k : k + 3]}) == 1


async def test_a_failure_mid_turn_writes_none_of_its_items(make_session: Make) -> None:
    session = make_session("lost")
    await session.add_items([{"n": 0}])
    with failing_event_insert(session.service, 2), pytest.raises(ConnectionResetError):
        await session.add_items([{"n": 1}, {"n": 2}, {"n": 3}])
    assert await session.get_items() == [{"n": 0}]
    await session.add_items([{"n": 1}, {"n": 2}])  # the next turn goes in
    assert await session.get_items() == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_concurrent_pops_never_return_the_same_item(make_session: Make) -> None:
    await make_session("pops").add_items([{"n": i} for i in range(40)])
    poppers = [make_session("pops") for _ in range(8)]

    async def pop_all(session: StatekeeperSession) -> list[int]:
        taken = []
        while (item := await session.pop_item()) is not None:
            taken.append(item["n"])
        return taken

    results = await asyncio.gather(*(pop_all(s) for s in poppers))
    popped = [n for taken in results for n in taken]
    assert sorted(popped) == list(range(40))  # each exactly once
    assert await poppers[0].get_items() == []


async def test_pops_and_appends_together_lose_nothing(make_session: Make) -> None:
    writer, popper = make_session("mixed"), make_session("mixed")
    await writer.add_items([{"n": -1}])

    async def write() -> None:
        for i in range(30):
            await writer.add_items([{"n": i}])

    async def pop() -> list[int]:
        return [item["n"] for _ in range(15) if (item := await popper.pop_item()) is not None]

    _, popped = await asyncio.gather(write(), pop())
    left = [item["n"] for item in await writer.get_items()]
    assert sorted(popped + left) == list(range(-1, 30))


async def test_items_round_trip_exactly(make_session: Make) -> None:
    session = make_session("exact")
    call = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q": "\\u00e9"}',
        "id": "fc_1",
    }
    odd = {"role": "user", "content": "nul \u0000 and \ud800 lone", "n": 2**70, "f": -0.0}
    message = ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text="hi", annotations=[])],
    )
    await session.add_items([call, odd, message])  # type: ignore[list-item]
    got = await session.get_items()
    assert got[:2] == [call, odd]
    assert json.dumps(got[1]["f"]) == "-0.0"
    assert got[2] == message.model_dump(exclude_unset=True)


async def test_a_bad_item_writes_nothing(make_session: Make) -> None:
    session = make_session("bad")
    with pytest.raises(StateEncodingError, match=r"items\[1\]") as info:
        await session.add_items([{"n": 1}, {"role": "user", "content": float("nan")}])
    assert info.value.path == "items[1].content"
    assert "events[" not in str(info.value)
    with pytest.raises(TypeError, match="dict or a pydantic model"):
        await session.add_items([object()])  # type: ignore[list-item]
    assert await session.get_items() == []


async def test_clear_then_add_starts_a_new_conversation(make_session: Make) -> None:
    session = make_session("again")
    await session.add_items([{"n": 1}, {"n": 2}])
    await session.clear_session()
    assert await session.pop_item() is None
    await session.add_items([{"n": 3}])
    assert await session.get_items() == [{"n": 3}]


async def test_users_and_apps_are_separate(make_session: Make, app_name: str) -> None:
    alice = make_session("same-id", user_id="alice")
    bob = make_session("same-id", user_id="bob")
    other_app = make_session("same-id", user_id="alice", app_name=app_name + "-other")
    await alice.add_items([{"who": "alice"}])
    assert await bob.get_items() == []
    assert await other_app.get_items() == []
    assert await bob.pop_item() is None
    await bob.clear_session()
    assert await alice.get_items() == [{"who": "alice"}]


async def test_listing_a_users_conversations_newest_first(make_session: Make) -> None:
    for name in ("c1", "c2", "c3"):
        await make_session(name, user_id="alice").add_items([{"in": name}])
    await make_session("other", user_id="bob").add_items([{"in": "bob"}])
    await make_session("c1", user_id="alice").add_items([{"in": "c1 again"}])
    listing = make_session("c1", user_id="alice")
    first = await listing.list_sessions(limit=2)
    assert [r.session_id for r in first.items] == ["c1", "c3"]
    assert first.next_cursor is not None
    rest = await listing.list_sessions(limit=2, cursor=first.next_cursor)
    assert [r.session_id for r in rest.items] == ["c2"]
    assert rest.next_cursor is None


async def test_many_sessions_share_one_service(oa_url: str, app_name: str) -> None:
    async with AsyncSessionService(oa_url, app_name=app_name) as service:
        one = StatekeeperSession("one", service, user_id="u")
        two = StatekeeperSession("two", service, user_id="u")
        await one.add_items([{"n": 1}])
        await two.add_items([{"n": 2}])
        await one.close()  # leaves the service open
        assert await two.get_items() == [{"n": 2}]
        record = await service.get_session("one", "u")
        assert record is not None
        assert [e.data for e in record.events] == [{"n": 1}]
        with pytest.raises(TypeError, match="app_name"):
            StatekeeperSession("three", service, app_name="x")


async def test_a_ttl_gives_the_conversation_an_expiry(make_session: Make) -> None:
    session = make_session("brief", ttl=3600)
    await session.add_items([{"n": 1}])
    record = await session.service.get_session("brief")
    assert record is not None
    assert record.expires_at is not None
    assert 3500 < (record.expires_at - record.updated_at).total_seconds() < 3700


def test_the_cli_shows_the_conversations(make_session: Make, oa_url: str, app_name: str) -> None:
    async def write() -> None:
        await make_session("cli-conv", user_id="alice").add_items(
            [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
        )

    asyncio.run(write())
    common = ["--url", oa_url, "--app", app_name, "--user", "alice", "--json"]
    listed = CliRunner().invoke(cli, ["sessions", "ls", *common])
    assert listed.exit_code == 0, listed.output
    assert [s["session_id"] for s in json.loads(listed.output)["sessions"]] == ["cli-conv"]
    shown = CliRunner().invoke(cli, ["sessions", "show", "cli-conv", *common])
    assert shown.exit_code == 0, shown.output
    events = json.loads(shown.output)["events"]
    assert [e["data"] for e in events] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
    ]


def test_import_statekeeper_does_not_import_agents() -> None:
    code = "import sys, statekeeper, statekeeper.service; print('agents' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_openai_agents_py_imports_the_sdk() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "statekeeper"
    importing = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"^\s*(from agents[. ]|import agents\b)", path.read_text(), re.M)
    )
    assert importing == ["openai_agents.py"]


def test_ids_are_checked_when_the_session_is_made(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="session_id"):
        StatekeeperSession("", f"sqlite:///{tmp_path / 'x.db'}")
