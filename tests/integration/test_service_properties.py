"""Property tests: events, deltas and timestamps round-trip exactly through the service."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from tests.integration.test_properties import SETTINGS, module_names, values

from statekeeper import AsyncSessionService, SessionService

events = st.dictionaries(st.text(max_size=8), values, max_size=4)
stamps = st.floats(allow_nan=False, allow_infinity=False)
# A key that is a prefix alone ("app:") names nothing and is refused; see test_service.py.
deltas = st.dictionaries(
    st.sampled_from(["", "app:", "user:", "temp:"])
    .flatmap(lambda prefix: module_names.map(lambda name: prefix + name))
    .filter(lambda key: key not in ("app:", "user:", "temp:")),
    values,
    max_size=4,
)


def _expected_state(before: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    return {**before, **{k: v for k, v in delta.items() if not k.startswith("temp:")}}


@SETTINGS
@given(event=events, stamp=stamps, delta=deltas)
def test_sync_event_round_trip(
    db_url: str, event: dict[str, Any], stamp: float, delta: dict[str, Any]
) -> None:
    with SessionService(db_url, app_name=f"prop-{uuid.uuid4().hex}") as svc:
        created = svc.create_session("s", "u", timestamp=stamp)
        assert created.update_time == stamp
        assert svc.append_event("s", event, "u", state_delta=delta, timestamp=stamp) == 2
        record = svc.get_session("s", "u")
        assert record is not None
        assert [(e.seq, e.timestamp, e.data) for e in record.events] == [(1, stamp, event)]
        assert record.update_time == stamp
        assert record.state == _expected_state({}, delta)
        assert svc.get_session("s", "u", after=stamp) == record


def test_sync_events_appended_together_round_trip(db_url: str) -> None:
    with SessionService(db_url, app_name=f"prop-{uuid.uuid4().hex}") as svc:

        @SETTINGS
        @given(batch=st.lists(events, min_size=1, max_size=5))
        def check(batch: list[dict[str, Any]]) -> None:
            session_id = uuid.uuid4().hex
            svc.create_session(session_id, "u")
            assert svc.append_events(session_id, batch, "u") == 1 + len(batch)
            record = svc.get_session(session_id, "u")
            assert record is not None
            assert [(e.seq, e.data) for e in record.events] == list(enumerate(batch, start=1))

        check()


def test_async_event_round_trip(db_url: str) -> None:
    loop = asyncio.new_event_loop()

    @SETTINGS
    @given(event=events, stamp=stamps, delta=deltas)
    def check(event: dict[str, Any], stamp: float, delta: dict[str, Any]) -> None:
        async def body() -> None:
            async with AsyncSessionService(db_url, app_name=f"prop-{uuid.uuid4().hex}") as svc:
                await svc.create_session("s", "u", state=delta, timestamp=stamp)
                await svc.append_event("s", event, "u", timestamp=stamp)
                record = await svc.get_session("s", "u", recent=1)
                assert record is not None
                assert [(e.timestamp, e.data) for e in record.events] == [(stamp, event)]
                assert record.state == _expected_state({}, delta)

        loop.run_until_complete(body())

    try:
        check()
    finally:
        loop.close()
