"""Hostile ``list_sessions`` cursors: the documented ``ValueError`` on every store kind.

A cursor often arrives from an HTTP query parameter, so anything may be in
it. Whatever it holds, every store and service raises a plain ``ValueError``
naming the cursor (never a driver error, never a ``UnicodeEncodeError``
with the driver's message) and lists nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

STAMP = "2026-01-01T00:00:00+00:00"


def _b64(raw: bytes | str) -> str:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _cursor(fields: Any) -> str:
    return _b64(json.dumps(fields))  # json.dumps escapes NUL and lone surrogates


def _both_shapes(owner: Any, session_id: Any) -> dict[str, str]:
    """The ids in a SQL/JSON-shaped cursor and in a Redis-shaped one."""
    return {"sql": _cursor([STAMP, owner, session_id]), "redis": _cursor([1, owner, session_id])}


HOSTILE: dict[str, str] = {
    "empty": "",
    "nul": "\x00",
    "lone surrogate": "\ud800",
    "non-ascii": "éé漢字",
    "not base64": "!!!***",
    "huge": "A" * 1_000_000,
    "garbage bytes": _b64(b"\xff\xfe\x00{["),
    "json object": _cursor({STAMP: 1, "u": 2, "s": 3}),
    "json string": _cursor("x"),
    "json number": _cursor(3),
    "json null": _cursor(None),
    "deep nesting": _b64("[" * 20_000),
    "too few fields": _cursor([STAMP, "u"]),
    "too many fields": _cursor([STAMP, "u", "s", "x", "y"]),
    "naive stamp": _cursor(["2026-01-01T00:00:00", "u", "s"]),
    "overflowing stamp": _cursor(["0001-01-01T00:00:00+05:00", "u", "s"]),
    "stamp not a str": _cursor([[1], "u", "s"]),
    "score too big": _cursor([2**64, "u", "s"]),
    "negative score": _cursor([-1, "u", "s"]),
    "score a bool": _cursor([True, "u", "s"]),
}
for _shape, _value in _both_shapes("\x00", "s").items():
    HOSTILE[f"NUL in user_id ({_shape})"] = _value
for _shape, _value in _both_shapes("u", "s\x00").items():
    HOSTILE[f"NUL in session_id ({_shape})"] = _value
for _shape, _value in _both_shapes("\ud800", "s").items():
    HOSTILE[f"lone surrogate in user_id ({_shape})"] = _value
for _shape, _value in _both_shapes("u", "\udfff").items():
    HOSTILE[f"lone surrogate in session_id ({_shape})"] = _value
for _shape, _value in _both_shapes("u", "").items():
    HOSTILE[f"empty session_id ({_shape})"] = _value
for _shape, _value in _both_shapes("u" * 256, "s").items():
    HOSTILE[f"user_id too long ({_shape})"] = _value
for _shape, _value in _both_shapes(7, "s").items():
    HOSTILE[f"user_id not a str ({_shape})"] = _value


def _assert_refused(exc: pytest.ExceptionInfo[ValueError]) -> None:
    assert type(exc.value) is ValueError, repr(exc.value)  # not a driver's, nor a Unicode error
    message = str(exc.value)
    assert "cursor" in message
    assert len(message) < 500  # a megabyte cursor is not echoed whole


async def _listings(store: Any, cursor: Any) -> None:
    """Every listing a caller can make: one user's, every user's."""
    for user_id in ("u", None):
        with pytest.raises(ValueError, match="cursor") as exc:
            await store.list_sessions(user_id, limit=5, cursor=cursor)
        _assert_refused(exc)


async def test_hostile_cursors_are_refused_with_the_documented_error(make_store: Any) -> None:
    store = make_store()
    for i in range(3):
        await store.set_state(f"s{i}", {"secret": i}, user_id="u")
    for name, cursor in HOSTILE.items():
        try:
            await _listings(store, cursor)
        except BaseException as exc:
            raise AssertionError(f"cursor {name}: {exc!r}"[:500]) from None


@pytest.mark.parametrize("cursor", [123, b"abc", ["x"], 1.5], ids=["int", "bytes", "list", "float"])
async def test_a_cursor_that_is_not_a_str_is_a_value_error(make_store: Any, cursor: Any) -> None:
    store = make_store()
    await store.set_state("s", {}, user_id="u")
    with pytest.raises(ValueError, match="cursor must be a str or None") as exc:
        await store.list_sessions("u", cursor=cursor)
    _assert_refused(exc)


async def test_another_users_cursor_is_not_a_cursor_of_this_listing(make_store: Any) -> None:
    store = make_store()
    for i in range(3):
        await store.set_state(f"a{i}", {"owner": "alice"}, user_id="alice")
        await store.set_state(f"b{i}", {"owner": "bob"}, user_id="bob")
    alices = (await store.list_sessions("alice", limit=1)).next_cursor
    assert alices is not None
    with pytest.raises(ValueError, match="not a cursor of this listing"):
        await store.list_sessions("bob", limit=5, cursor=alices)
    # The listing it came from goes on, and so does every user's.
    rest = await store.list_sessions("alice", limit=5, cursor=alices)
    assert [i.session_id for i in rest.items] == ["a1", "a0"]
    everyone = await store.list_sessions(None, limit=5, cursor=alices)
    assert {i.user_id for i in everyone.items} <= {"alice", "bob"}


async def test_a_page_walk_still_sees_every_session_once(make_store: Any) -> None:
    store = make_store()
    for i in range(5):
        await store.set_state(f"s{i}", {}, user_id=f"user-é-{i % 2}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_sessions(limit=2, cursor=cursor)
        seen += [i.session_id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"]
