"""Property tests: arbitrary JSON round-trips exactly through every store and both facades."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekeeper import AsyncSqlSession, SqlSession

# Every code point, lone surrogates and NUL included, but never a high
# surrogate directly before a low one (JSON cannot keep those two apart).
alphabet = (
    st.characters(codec=None)
    | st.integers(0xD800, 0xDFFF).map(chr)  # lone surrogates
    | st.just("\x00")
)


def _no_split_pair(s: str) -> bool:
    return not any(
        "\ud800" <= a <= "\udbff" and "\udc00" <= b <= "\udfff" for a, b in itertools.pairwise(s)
    )


text = st.text(alphabet=alphabet, max_size=12).filter(_no_split_pair)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
module_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10
)
states = st.dictionaries(module_names, values, max_size=3)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(state=states, extra=states)
def test_sync_round_trip(db_url: str, state: dict[str, Any], extra: dict[str, Any]) -> None:
    with SqlSession(db_url, app_name="prop-sync") as store:
        store.set_state("s", state)
        assert store.get_state("s") == state
        store.merge_state("s", extra)
        assert store.get_state("s") == {**state, **extra}


def test_async_round_trip(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    store = AsyncSqlSession(db_url, app_name="prop-async")

    @SETTINGS
    @given(state=states, extra=states)
    def check(state: dict[str, Any], extra: dict[str, Any]) -> None:
        async def body() -> None:
            await store.set_state("s", state)
            assert await store.get_state("s") == state
            await store.merge_state("s", extra)
            assert await store.get_state("s") == {**state, **extra}

        loop.run_until_complete(body())

    try:
        check()
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@pytest.fixture(params=["json", "redis"])
def other_store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A sync JSON-file or Redis store for this test."""
    from statekeeper import JSONSession, RedisSession

    if request.param == "json":
        store: Any = JSONSession(tmp_path / "sessions", app_name="prop")
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisSession(url, key_prefix=request.getfixturevalue("redis_prefix"))
    yield store
    store.close()


@SETTINGS
@given(state=states, extra=states)
def test_file_and_redis_round_trip(
    other_store: Any, state: dict[str, Any], extra: dict[str, Any]
) -> None:
    other_store.set_state("s", state)
    assert other_store.get_state("s") == state
    other_store.merge_state("s", extra)
    assert other_store.get_state("s") == {**state, **extra}
