"""``statekeeper.adk.SqlSessionService`` keeps ADK's session-service contract on every database."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.genai import types

from statekeeper import AsyncSessionService
from statekeeper.adk import SqlSessionService, StaleSessionError
from statekeeper.errors import StateEncodingError, StoreClosedError

if TYPE_CHECKING:
    from collections.abc import Callable

USER = "alice"


def _event(timestamp: float | None = None, **delta: Any) -> Event:
    kwargs: dict[str, Any] = {"invocation_id": "inv", "author": "user"}
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    if delta:
        kwargs["actions"] = EventActions(state_delta=delta)
    return Event(**kwargs)


# ------------------------------------------------------------------ create_session


async def test_create_without_id_generates_a_uuid4(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    assert uuid.UUID(session.id).version == 4
    assert (session.app_name, session.user_id, session.events) == (app_name, USER, [])
    other = await service.create_session(app_name=app_name, user_id=USER, session_id="")
    assert uuid.UUID(other.id).version == 4
    assert other.id != session.id


async def test_create_routes_state_by_prefix_and_returns_it_merged(
    service: SqlSessionService, app_name: str
) -> None:
    state = {"topic": "billing", "app:greeting": "hi", "user:lang": "fr", "temp:scratch": 1}
    session = await service.create_session(
        app_name=app_name, user_id=USER, session_id="s1", state=state
    )
    assert session.state == {"topic": "billing", "app:greeting": "hi", "user:lang": "fr"}
    assert await service.get_app_state(app_name=app_name) == {"greeting": "hi"}
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {"lang": "fr"}
    # Another user's new session sees the app's state, not alice's nor her session's.
    bob = await service.create_session(app_name=app_name, user_id="bob")
    assert bob.state == {"app:greeting": "hi"}


async def test_get_after_create_equals_the_created_session(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(
        app_name=app_name, user_id=USER, state={"k": [1, {"x": None}], "user:u": 2}
    )
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got == session


async def test_create_with_an_existing_id_raises_already_exists_and_keeps_the_first(
    service: SqlSessionService, app_name: str
) -> None:
    await service.create_session(app_name=app_name, user_id=USER, session_id="s1", state={"a": 1})
    with pytest.raises(AlreadyExistsError, match="s1"):
        await service.create_session(
            app_name=app_name, user_id=USER, session_id="s1", state={"a": 2, "app:x": 1}
        )
    got = await service.get_session(app_name=app_name, user_id=USER, session_id="s1")
    assert got is not None
    assert got.state == {"a": 1}
    # The same id for another user, or in another app, is another session.
    await service.create_session(app_name=app_name, user_id="bob", session_id="s1")
    await service.create_session(app_name=app_name + "-other", user_id=USER, session_id="s1")


async def test_create_with_nan_in_the_state_raises_and_writes_nothing(
    service: SqlSessionService, app_name: str
) -> None:
    state = {"ok": 1, "user:score": [1.0, float("nan")]}
    with pytest.raises(StateEncodingError, match="NaN or infinity") as info:
        await service.create_session(app_name=app_name, user_id=USER, session_id="s1", state=state)
    assert info.value.path == "user:score[1]"
    assert await service.get_session(app_name=app_name, user_id=USER, session_id="s1") is None
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {}


# ------------------------------------------------------------------ get_session


async def test_get_of_a_missing_session_is_none(service: SqlSessionService, app_name: str) -> None:
    assert await service.get_session(app_name=app_name, user_id=USER, session_id="nope") is None


@pytest.fixture
async def five_events(service: SqlSessionService, app_name: str) -> Session:
    """A session with events stamped 1.0 .. 5.0."""
    session = await service.create_session(app_name=app_name, user_id=USER, session_id="five")
    for i in range(1, 6):
        await service.append_event(session, _event(timestamp=float(i)))
    return session


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, [1, 2, 3, 4, 5]),
        (GetSessionConfig(), [1, 2, 3, 4, 5]),
        (GetSessionConfig(num_recent_events=0), []),
        (GetSessionConfig(num_recent_events=3), [3, 4, 5]),
        (GetSessionConfig(num_recent_events=50), [1, 2, 3, 4, 5]),
        (GetSessionConfig(after_timestamp=4.0), [4, 5]),
        (GetSessionConfig(after_timestamp=3.5), [4, 5]),
        (GetSessionConfig(after_timestamp=0), [1, 2, 3, 4, 5]),
        (GetSessionConfig(after_timestamp=50.0), []),
        (GetSessionConfig(num_recent_events=3, after_timestamp=4.0), [4, 5]),
        (GetSessionConfig(num_recent_events=1, after_timestamp=2.0), [5]),
        (GetSessionConfig(num_recent_events=0, after_timestamp=2.0), []),
    ],
)
async def test_get_session_config_selects_events(
    service: SqlSessionService,
    app_name: str,
    five_events: Session,
    config: GetSessionConfig | None,
    expected: list[int],
) -> None:
    got = await service.get_session(
        app_name=app_name, user_id=USER, session_id="five", config=config
    )
    assert got is not None
    assert [event.timestamp for event in got.events] == expected
    assert got.last_update_time == 5.0


async def test_events_with_equal_timestamps_come_back_in_append_order(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    for name in ["c", "a", "b", "d"]:
        await service.append_event(session, Event(invocation_id=name, author="user", timestamp=7.0))
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got is not None
    assert [e.invocation_id for e in got.events] == ["c", "a", "b", "d"]
    last = await service.get_session(
        app_name=app_name,
        user_id=USER,
        session_id=session.id,
        config=GetSessionConfig(num_recent_events=2, after_timestamp=7.0),
    )
    assert last is not None
    assert [e.invocation_id for e in last.events] == ["b", "d"]


# ------------------------------------------------------------------ append_event


async def test_append_updates_the_callers_session_and_storage_alike(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(
        app_name=app_name, user_id=USER, state={"n": 0, "user:seen": 0}
    )
    first = _event(timestamp=1_800_000_000.123456, n=1, **{"app:hits": 1})
    returned = await service.append_event(session, first)
    assert returned is first
    assert session.events == [first]
    assert session.state == {"n": 1, "user:seen": 0, "app:hits": 1}
    assert session.last_update_time == 1_800_000_000.123456
    second = _event(timestamp=1_800_000_001.5, **{"user:seen": 1})
    await service.append_event(session, second)
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got == session
    assert got is not None
    assert got.last_update_time == 1_800_000_001.5


async def test_a_rich_event_round_trips_whole(service: SqlSessionService, app_name: str) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    event = Event(
        invocation_id="invocation",
        author="model",
        branch="root.sub",
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="nul \u0000 and a lone \ud800 surrogate"),
                types.Part.from_bytes(data=b"\x00\xffpng", mime_type="image/png"),
                types.Part(function_call=types.FunctionCall(name="f", args={"x": [1, 2.5]})),
            ],
        ),
        turn_complete=True,
        actions=EventActions(
            artifact_delta={"file": 0},
            transfer_to_agent="agent",
            escalate=True,
            state_delta={"k": {"deep": [True, None, "\u0000"]}},
        ),
        long_running_tool_ids={"tool1", "tool2"},
        error_code="code",
        error_message="message",
        interrupted=True,
        grounding_metadata=types.GroundingMetadata(
            web_search_queries=["query"],
            search_entry_point=types.SearchEntryPoint(sdk_blob=b"blob"),
        ),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1, candidates_token_count=1, total_token_count=2
        ),
        custom_metadata={"custom": {"nested": 1}},
        timestamp=1_700_000_000.123,
    )
    original = event.model_copy(deep=True)
    await service.append_event(session, event)
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got is not None
    assert got.events == [original]
    assert got == session
    assert got.state["k"] == {"deep": [True, None, "\u0000"]}


async def test_events_another_writer_stored_read_back_as_adk_validates_them(
    service: SqlSessionService, app_name: str, service_args: dict[str, Any]
) -> None:
    # Texts this adapter does not write itself: camelCase keys, bytes in the
    # standard base64 alphabet, a 2**80 int; the second with a lone surrogate
    # escape, which pydantic's JSON parser refuses.
    session = await service.create_session(app_name=app_name, user_id=USER)
    documents: list[dict[str, Any]] = [
        {
            "id": "e1",
            "author": "model",
            "invocationId": "inv",
            "timestamp": 1_700_000_000.5,
            "content": {
                "role": "model",
                "parts": [{"inlineData": {"data": "+/8A", "mimeType": "image/png"}}],
            },
            "customMetadata": {"big": 2**80},
        },
        {
            "id": "e2",
            "author": "user",
            "timestamp": 1_700_000_001.0,
            "content": {"parts": [{"text": "a \ud800 b"}]},
        },
    ]
    writer = AsyncSessionService(
        service.engine, app_name=app_name, schema=service_args.get("schema")
    )
    for document in documents:
        await writer.append_event(session.id, document, USER)
    await writer.close()
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got is not None
    assert got.events == [Event.model_validate(document) for document in documents]
    first, second = got.events
    assert first.content is not None
    assert first.content.parts is not None
    assert first.content.parts[0].inline_data is not None
    assert first.content.parts[0].inline_data.data == b"\xfb\xff\x00"
    assert first.custom_metadata == {"big": 2**80}
    assert second.content is not None
    assert second.content.parts is not None
    assert second.content.parts[0].text == "a \ud800 b"


async def test_partial_events_are_returned_untouched_and_not_stored(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    before = session.model_copy(deep=True)
    event = Event(author="model", partial=True, actions=EventActions(state_delta={"k": 1}))
    assert await service.append_event(session, event) is event
    assert event.actions.state_delta == {"k": 1}
    assert session == before
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got == before


async def test_temp_keys_stay_on_the_session_only(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    event = _event(**{"temp:out": "draft", "kept": 1})
    await service.append_event(session, event)
    assert event.actions.state_delta == {"kept": 1}
    assert session.state == {"temp:out": "draft", "kept": 1}
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got is not None
    assert got.state == {"kept": 1}
    assert got.events[0].actions.state_delta == {"kept": 1}


def _with_args(**args: Any) -> Event:
    call = types.FunctionCall(name="search", args=args)
    return Event(
        author="model", content=types.Content(role="model", parts=[types.Part(function_call=call)])
    )


@pytest.mark.parametrize(
    ("make_event", "path"),
    [
        pytest.param(
            lambda: _event(x=float("nan")), "event.actions.state_delta.x", id="state_delta nan"
        ),
        pytest.param(
            # a callable beside it takes ADK's fallback dump, which must keep the NaN too
            lambda: _event(fn=print, **{"user:x": float("-inf")}),
            'event.actions.state_delta["user:x"]',
            id="state_delta -inf beside a callable",
        ),
        pytest.param(
            lambda: Event(author="model", custom_metadata={"run": {"scores": [0.5, float("inf")]}}),
            "event.custom_metadata.run.scores[1]",
            id="custom_metadata nested inf",
        ),
        pytest.param(
            lambda: _with_args(query="q", limits={"max": float("nan")}),
            "event.content.parts[0].function_call.args.limits.max",
            id="function_call args nested nan",
        ),
        pytest.param(
            lambda: Event(author="a", actions=EventActions(agent_state={"p": float("nan")})),
            "event.actions.agent_state.p",
            id="agent_state nan",
        ),
        pytest.param(
            lambda: Event(author="model", avg_logprobs=float("inf")),
            "event.avg_logprobs",
            id="typed float field inf",
        ),
    ],
)
async def test_nan_and_infinities_in_an_event_raise_and_nothing_is_written(
    service: SqlSessionService,
    app_name: str,
    make_event: Callable[[], Event],
    path: str,
) -> None:
    session = await service.create_session(
        app_name=app_name, user_id=USER, state={"n": 0, "user:u": 0, "app:a": 0}
    )
    await service.append_event(session, _event(n=1))
    before = session.model_copy(deep=True)
    with pytest.raises(StateEncodingError, match="NaN or infinity") as info:
        await service.append_event(session, make_event())
    assert info.value.path == path
    assert session == before
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got == before
    assert got is not None
    assert got.state == {"n": 1, "user:u": 0, "app:a": 0}
    assert [event.id for event in got.events] == [before.events[0].id]
    # The next append goes through on the same session object: it is not stale.
    await service.append_event(session, _event(n=2))


_WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("delta", "stored"),
    [
        pytest.param(
            {"when": _WHEN, "raw": b"\xff\x00", "tags": {"a"}, "wait": dt.timedelta(seconds=90)},
            {"when": "2026-01-02T03:04:05Z", "raw": "_wA=", "tags": ["a"], "wait": "PT1M30S"},
            id="pydantic converts",
        ),
        pytest.param(
            {"fn": print, "when": _WHEN, "fine": 0.5},
            {"fn": repr(print), "when": "2026-01-02T03:04:05Z", "fine": 0.5},
            id="ADK's fallback for a callable",
        ),
    ],
)
async def test_values_json_cannot_hold_are_stored_as_adks_dump_writes_them(
    service: SqlSessionService, app_name: str, delta: dict[str, Any], stored: dict[str, Any]
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    await service.append_event(session, _event(**delta))
    got = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert got is not None
    assert got.events[0].actions.state_delta == stored
    assert got.state == stored


@pytest.mark.parametrize("how", ["never created", "deleted"])
async def test_append_to_a_missing_session_raises_not_found_and_writes_nothing(
    service: SqlSessionService, app_name: str, how: str
) -> None:
    if how == "deleted":
        session = await service.create_session(app_name=app_name, user_id=USER)
        await service.delete_session(app_name=app_name, user_id=USER, session_id=session.id)
    else:
        session = Session(id="ghost", app_name=app_name, user_id=USER)
    with pytest.raises(SessionNotFoundError, match=session.id) as info:
        await service.append_event(session, _event(**{"user:x": 1, "app:y": 2}))
    assert isinstance(info.value, ValueError)
    assert await service.get_session(app_name=app_name, user_id=USER, session_id=session.id) is None
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {}
    assert await service.get_app_state(app_name=app_name) == {}
    assert session.events == []


async def test_a_stale_session_object_is_refused_and_nothing_is_written(
    service: SqlSessionService, app_name: str
) -> None:
    original = await service.create_session(app_name=app_name, user_id=USER)
    await service.append_event(original, _event(timestamp=10.0, a=1))
    fresh = await service.get_session(app_name=app_name, user_id=USER, session_id=original.id)
    assert fresh is not None
    await service.append_event(fresh, _event(timestamp=11.0, b=2))
    # Consecutive appends through one object never go stale.
    await service.append_event(fresh, _event(timestamp=12.0, c=3))
    late = _event(timestamp=13.0, d=4, **{"user:z": 1})
    with pytest.raises(ValueError, match="modified in storage") as info:
        await service.append_event(original, late)
    assert isinstance(info.value, StaleSessionError)
    assert len(original.events) == 1
    assert "d" not in original.state
    stored = await service.get_session(app_name=app_name, user_id=USER, session_id=original.id)
    assert stored == fresh
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {}


async def test_of_two_copies_of_one_revision_exactly_one_append_wins(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id=USER)
    for i in range(5):
        latest = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
        assert latest is not None
        copies = [latest.model_copy(deep=True), copy.deepcopy(latest)]
        results = await asyncio.gather(
            *(service.append_event(c, _event(**{f"k{i}": n})) for n, c in enumerate(copies)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], StaleSessionError)
        assert "modified in storage" in str(errors[0])
    final = await service.get_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert final is not None
    assert len(final.events) == 5
    assert sorted(final.state) == [f"k{i}" for i in range(5)]


async def test_a_session_built_by_hand_appends_while_current_and_not_once_stale(
    service: SqlSessionService, app_name: str
) -> None:
    created = await service.create_session(app_name=app_name, user_id=USER, session_id="hand")
    await service.append_event(created, _event(timestamp=created.last_update_time + 1, a=1))
    by_hand = Session(
        id="hand",
        app_name=app_name,
        user_id=USER,
        state=dict(created.state),
        events=list(created.events),
        last_update_time=created.last_update_time - 0.0001,  # a rounded copy
    )
    await service.append_event(by_hand, _event(timestamp=created.last_update_time + 2, b=2))
    behind = Session(id="hand", app_name=app_name, user_id=USER, last_update_time=1.0)
    with pytest.raises(StaleSessionError, match="modified in storage"):
        await service.append_event(behind, _event(timestamp=5.0, c=3))
    got = await service.get_session(app_name=app_name, user_id=USER, session_id="hand")
    assert got is not None
    assert got.state == {"a": 1, "b": 2}


async def test_scoped_deltas_of_concurrent_appends_on_other_sessions_all_survive(
    service: SqlSessionService, app_name: str
) -> None:
    sessions = [await service.create_session(app_name=app_name, user_id=USER) for _ in range(8)]
    await asyncio.gather(
        *(
            service.append_event(s, _event(**{f"user:u{i}": i, f"app:a{i}": i}))
            for i, s in enumerate(sessions)
        )
    )
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {
        f"u{i}": i for i in range(8)
    }
    assert await service.get_app_state(app_name=app_name) == {f"a{i}": i for i in range(8)}


# ------------------------------------------------------------------ list / delete / user state


async def test_list_sessions_oldest_update_first_with_merged_state_and_no_events(
    service: SqlSessionService, app_name: str
) -> None:
    a = await service.create_session(
        app_name=app_name, user_id=USER, session_id="a", state={"n": 1}
    )
    b = await service.create_session(app_name=app_name, user_id=USER, session_id="b")
    await service.create_session(app_name=app_name, user_id="bob", session_id="c")
    await service.append_event(b, _event(timestamp=b.last_update_time + 100, **{"user:u": 1}))
    await service.append_event(a, _event(timestamp=b.last_update_time + 200, **{"app:x": 2}))

    mine = await service.list_sessions(app_name=app_name, user_id=USER)
    assert isinstance(mine, ListSessionsResponse)
    assert [s.id for s in mine.sessions] == ["b", "a"]
    assert mine.sessions[1].state == {"n": 1, "user:u": 1, "app:x": 2}
    assert all(s.events == [] for s in mine.sessions)

    everyone = await service.list_sessions(app_name=app_name)
    assert [(s.user_id, s.id) for s in everyone.sessions] == [
        ("bob", "c"),
        (USER, "b"),
        (USER, "a"),
    ]
    assert everyone.sessions[0].state == {"app:x": 2}
    assert (await service.list_sessions(app_name=app_name, user_id="nobody")).sessions == []


async def test_list_sessions_pages_on_request(service: SqlSessionService, app_name: str) -> None:
    for i in range(5):
        await service.create_session(app_name=app_name, user_id=USER, session_id=f"s{i}")
    seen: list[str] = []
    token = None
    while True:
        page = await service.list_sessions(
            app_name=app_name, user_id=USER, page_size=2, page_token=token
        )
        assert len(page.sessions) <= 2
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if token is None:
            break
    assert seen == [f"s{i}" for i in range(5)]
    assert (await service.list_sessions(app_name=app_name, user_id=USER)).next_page_token is None


async def test_delete_removes_the_session_and_its_events_never_scoped_state(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(
        app_name=app_name, user_id=USER, state={"app:a": 1, "user:u": 2}
    )
    await service.append_event(session, _event(k=1))
    await service.delete_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert await service.get_session(app_name=app_name, user_id=USER, session_id=session.id) is None
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {"u": 2}
    assert await service.get_app_state(app_name=app_name) == {"a": 1}
    # Recreating the id starts an empty log.
    again = await service.create_session(app_name=app_name, user_id=USER, session_id=session.id)
    assert again.events == []
    assert again.state == {"app:a": 1, "user:u": 2}


async def test_delete_of_a_missing_session_does_nothing(
    service: SqlSessionService, app_name: str
) -> None:
    await service.create_session(app_name=app_name, user_id=USER, session_id="keep")
    await service.delete_session(app_name=app_name, user_id=USER, session_id="nope")
    await service.delete_session(app_name=app_name, user_id="bob", session_id="keep")
    assert await service.get_session(app_name=app_name, user_id=USER, session_id="keep")


async def test_user_state_is_per_user_and_per_app(
    service: SqlSessionService, app_name: str
) -> None:
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {}
    session = await service.create_session(app_name=app_name, user_id=USER)
    await service.append_event(session, _event(**{"user:profile": {"name": "Alice"}, "s": 1}))
    await service.append_event(session, _event(**{"user:counter": 2}))
    assert await service.get_user_state(app_name=app_name, user_id=USER) == {
        "profile": {"name": "Alice"},
        "counter": 2,
    }
    assert await service.get_user_state(app_name=app_name, user_id="bob") == {}
    assert await service.get_user_state(app_name=app_name + "-other", user_id=USER) == {}


async def test_user_id_empty_string_and_app_state_do_not_collide(
    service: SqlSessionService, app_name: str
) -> None:
    session = await service.create_session(app_name=app_name, user_id="")
    await service.append_event(session, _event(**{"user:who": "nobody", "app:what": "app"}))
    assert await service.get_user_state(app_name=app_name, user_id="") == {"who": "nobody"}
    assert await service.get_app_state(app_name=app_name) == {"what": "app"}
    got = await service.get_session(app_name=app_name, user_id="", session_id=session.id)
    assert got is not None
    assert got.state == {"user:who": "nobody", "app:what": "app"}


# ------------------------------------------------------------------ apps, engines, lifecycle


async def test_apps_sharing_one_service_are_isolated(
    service: SqlSessionService, app_name: str
) -> None:
    one = await service.create_session(
        app_name=app_name, user_id=USER, session_id="s", state={"app:k": 1, "v": "one"}
    )
    two = await service.create_session(
        app_name=app_name + "-2", user_id=USER, session_id="s", state={"v": "two"}
    )
    assert one.state == {"app:k": 1, "v": "one"}
    assert two.state == {"v": "two"}
    listed = await service.list_sessions(app_name=app_name + "-2")
    assert [(s.app_name, s.state) for s in listed.sessions] == [(app_name + "-2", {"v": "two"})]


async def test_close_and_async_with(make_service: Callable[..., SqlSessionService]) -> None:
    async with make_service() as service:
        session = await service.create_session(app_name="lifecycle", user_id=USER)
        assert await service.get_session(app_name="lifecycle", user_id=USER, session_id=session.id)
    await service.close()  # a second close does nothing
    for app in ("lifecycle", "never-used"):
        with pytest.raises(StoreClosedError, match="closed"):
            await service.get_session(app_name=app, user_id=USER, session_id="s")
