"""An ADK ``Runner`` keeps its conversation through ``SqlSessionService``, no model involved."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.agents.base_agent import BaseAgent
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import BaseSessionService
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.adk.tools.function_tool import FunctionTool
from google.genai import types

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable
    from pathlib import Path

    from google.adk.agents.invocation_context import InvocationContext
    from google.adk.models.llm_request import LlmRequest

    from statekeeper.adk import SqlSessionService


class CountingAgent(BaseAgent):
    """Answers every message with the number of turns so far, kept in state."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        turns = int(ctx.session.state.get("turns", 0)) + 1
        seen = int(ctx.session.state.get("user:messages", 0)) + 1
        yield Event(
            invocation_id=ctx.invocation_id,
            author=self.name,
            branch=ctx.branch,
            content=types.Content(role="model", parts=[types.Part(text=f"turn {turns}")]),
            actions=EventActions(
                state_delta={"turns": turns, "user:messages": seen, "temp:scratch": "x"}
            ),
        )


async def _say(runner: Runner, session_id: str, text: str) -> list[str]:
    message = types.Content(role="user", parts=[types.Part(text=text)])
    replies = []
    async for event in runner.run_async(user_id="u1", session_id=session_id, new_message=message):
        if event.content and event.content.parts and event.content.parts[0].text:
            replies.append(event.content.parts[0].text)
    return replies


async def test_a_runner_conversation_is_stored_and_resumed(
    make_service: Callable[..., SqlSessionService], app_name: str, flavour: str
) -> None:
    sessions = make_service()
    agent = CountingAgent(name="counter")
    runner = Runner(agent=agent, app_name=app_name, session_service=sessions)
    session = await sessions.create_session(app_name=app_name, user_id="u1")
    assert await _say(runner, session.id, "hello") == ["turn 1"]
    assert await _say(runner, session.id, "again") == ["turn 2"]

    # A new service (a restarted process) sees the whole conversation; an
    # in-memory database lives as long as its service, so it asks the same one.
    later = sessions if flavour == "sqlite-memory" else make_service()
    stored = await later.get_session(app_name=app_name, user_id="u1", session_id=session.id)
    assert stored is not None
    assert [e.author for e in stored.events] == ["user", "counter", "user", "counter"]
    assert stored.events[0].content is not None
    assert stored.events[0].content.parts is not None
    assert stored.events[0].content.parts[0].text == "hello"
    assert stored.state == {"turns": 2, "user:messages": 2}

    # Another session of the same user shares the user: state.
    other = await sessions.create_session(app_name=app_name, user_id="u1")
    assert await _say(runner, other.id, "hi") == ["turn 1"]
    assert await sessions.get_user_state(app_name=app_name, user_id="u1") == {"messages": 3}


async def copy_app(old: Any, new: SqlSessionService, app_name: str) -> int:
    """The recipe of docs/adk.md, "Copying existing sessions"."""
    listed = await old.list_sessions(app_name=app_name)
    for stub in listed.sessions:
        full = await old.get_session(app_name=app_name, user_id=stub.user_id, session_id=stub.id)
        if full is None:
            continue
        copy = await new.create_session(
            app_name=app_name, user_id=full.user_id, session_id=full.id, state=full.state
        )
        for event in full.events:
            await new.append_event(copy, event)
    return len(listed.sessions)


async def test_sessions_copied_from_adks_database_service_read_back_the_same(
    service: SqlSessionService, app_name: str, tmp_path: Path
) -> None:
    old = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
    try:
        runner = Runner(agent=CountingAgent(name="counter"), app_name=app_name, session_service=old)
        for user in ("u1", "u2"):
            session = await old.create_session(
                app_name=app_name, user_id=user, state={"app:plan": "pro", "topic": user}
            )
            message = types.Content(role="user", parts=[types.Part(text="hi")])
            for _ in range(2):
                async for _event in runner.run_async(
                    user_id=user, session_id=session.id, new_message=message
                ):
                    pass
        assert await copy_app(old, service, app_name) == 2
        for stub in (await old.list_sessions(app_name=app_name)).sessions:
            before = await old.get_session(
                app_name=app_name, user_id=stub.user_id, session_id=stub.id
            )
            after = await service.get_session(
                app_name=app_name, user_id=stub.user_id, session_id=stub.id
            )
            assert before is not None
            assert after is not None
            assert after.state == before.state
            assert after.events == before.events
            assert after.last_update_time == pytest.approx(before.last_update_time, abs=1e-6)
    finally:
        await old.close()


def refund(amount: int) -> dict[str, int]:
    """Refund an amount (a tool that asks the user to confirm first)."""
    return {"refunded": amount}


class RefundModel(BaseLlm):
    """Calls ``refund`` for a user's text, says "done" once a tool has answered."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1].parts or []
        if last and last[-1].function_response is None:
            call = types.FunctionCall(name="refund", args={"amount": 5})
            part = types.Part(function_call=call)
        else:
            part = types.Part(text="done")
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


def _label(event: Event) -> str:
    part = event.content.parts[0] if event.content and event.content.parts else None
    if part is not None and part.function_call is not None:
        return f"call {part.function_call.name}"
    if part is not None and part.function_response is not None:
        return f"response {part.function_response.name}"
    return f"text {part.text if part is not None else ''}"


async def _confirmed_refund(sessions: BaseSessionService, app_name: str) -> list[str]:
    """Run ADK's tool-confirmation flow to its end; return the stored events' labels."""
    tool = FunctionTool(refund, require_confirmation=True)
    agent = LlmAgent(name="clerk", model=RefundModel(model="canned"), tools=[tool])
    runner = Runner(agent=agent, app_name=app_name, session_service=sessions)
    session = await sessions.create_session(app_name=app_name, user_id="u1")
    ask = types.Content(role="user", parts=[types.Part(text="refund me")])
    request_id = None
    async for event in runner.run_async(user_id="u1", session_id=session.id, new_message=ask):
        for call in event.get_function_calls():
            if call.name == "adk_request_confirmation":
                request_id = call.id
    yes = types.FunctionResponse(
        name="adk_request_confirmation", id=request_id, response={"confirmed": True}
    )
    answer = types.Content(role="user", parts=[types.Part(function_response=yes)])
    async for _event in runner.run_async(user_id="u1", session_id=session.id, new_message=answer):
        pass
    stored = await sessions.get_session(app_name=app_name, user_id="u1", session_id=session.id)
    assert stored is not None
    return [_label(event) for event in stored.events]


async def test_tool_confirmation_events_come_back_in_append_order_not_timestamp_order(
    service: SqlSessionService, app_name: str, tmp_path: Path
) -> None:
    """What docs/adk.md's "event order" row says, on each side."""
    flow = [
        "text refund me",
        "call refund",
        "call adk_request_confirmation",  # appended before the response below ...
        "response refund",  # ... whose timestamp is a fraction of a millisecond older
        "response adk_request_confirmation",
        "response refund",
        "text done",
    ]
    assert await _confirmed_refund(service, app_name) == flow
    adk = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
    try:
        by_time = [*flow[:2], flow[3], flow[2], *flow[4:]]
        assert await _confirmed_refund(adk, app_name) == by_time
    finally:
        await adk.close()
