"""The JSON codec: exact round trips, database-safe text, and error paths."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import re
import sys
import types
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statekeeper.codec import (
    MAX_DEPTH,
    check_module_name,
    decode,
    encode,
    encode_entries,
    encode_modules,
)
from statekeeper.errors import StateEncodingError, StatekeeperError

SURROGATE = re.compile("[\ud800-\udfff]")
SPLIT_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")

# -- strategies ----------------------------------------------------------------

# Every code point, surrogates included, plus characters that matter to JSON
# and to the databases, drawn often enough to meet each other.
characters = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\\", '"', "\u2028", "😀"]),
)
texts = st.text(alphabet=characters, max_size=12)
big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.sampled_from(
        [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(10**19), 10**19, 10**20]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=25,
)


def same(left: Any, right: Any) -> bool:
    """Equal, with the same types, float signs and key order all the way down."""
    return left == right and repr(left) == repr(right)


def has_split_pair(value: Any) -> bool:
    """Whether any string or key holds a high surrogate directly before a low one."""
    if isinstance(value, str):
        return SPLIT_PAIR.search(value) is not None
    if isinstance(value, list):
        return any(has_split_pair(item) for item in value)
    if isinstance(value, dict):
        return any(has_split_pair(key) or has_split_pair(item) for key, item in value.items())
    return False


def assert_database_safe(text: str) -> None:
    text.encode("utf-8")  # raises on raw surrogates
    assert "\x00" not in text
    assert SURROGATE.search(text) is None


# -- round trips ---------------------------------------------------------------


def test_strategy_generates_surrogates_and_nul() -> None:
    from hypothesis import find

    assert SURROGATE.search(find(texts, lambda t: SURROGATE.search(t) is not None))
    assert "\x00" in find(texts, lambda t: "\x00" in t)


@settings(max_examples=200)
@given(json_values)
@example({"a\x00": ["\ud800", "\udfff x", -0.0, 2**64, -(2**63) - 1, 5e-324]})
def test_any_json_value_round_trips_exactly(value: Any) -> None:
    text = encode(value)
    assert text.isascii()
    if has_split_pair(value):
        assert same(decode(text), json.loads(json.dumps(value)))  # joined, as json does
        return
    assert_database_safe(text)
    assert same(decode(text), value)
    assert same(decode(text.encode("utf-8")), value)


@given(json_values)
def test_text_is_what_json_reads(value: Any) -> None:
    if has_split_pair(value):
        return
    assert same(json.loads(encode(value)), value)


def test_text_is_compact_ascii() -> None:
    assert encode({"a": [1, 2.5, None, True], "b": "東京 😀\x00"}) == (
        '{"a":[1,2.5,null,true],"b":"\\u6771\\u4eac \\ud83d\\ude00\\u0000"}'
    )


def test_nul_and_lone_surrogates_are_escaped() -> None:
    text = encode({"s": "a\x00b\ud800c\udfff", "k\udc80": 1})
    assert text == '{"s":"a\\u0000b\\ud800c\\udfff","k\\udc80":1}'
    assert decode(text) == {"s": "a\x00b\ud800c\udfff", "k\udc80": 1}


def test_backslash_before_a_surrogate_stays_a_backslash() -> None:
    value = ["\\\ud800", "\ud800\\ude00"]
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "number",
    [-0.0, 0.1, 5e-324, 1.7976931348623157e308, 1e16, 0.00012345678901234567, 2.5e-7],
)
def test_floats_keep_every_bit(number: float) -> None:
    back = decode(encode([number]))[0]
    assert math.copysign(1.0, back) == math.copysign(1.0, number)
    assert back == number


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, -(10**19), 10**300],
)
def test_big_ints_stay_ints(number: int) -> None:
    assert same(decode(encode({"n": number})), {"n": number})
    assert same(decode(encode(number)), number)


def test_tuples_become_lists_and_keys_become_strings() -> None:
    assert decode(encode((1, ("a",)))) == [1, ["a"]]
    assert decode(encode({1: "a", None: "b", False: "c", 1.5: "d"})) == {
        "1": "a",
        "null": "b",
        "false": "c",
        "1.5": "d",
    }


def test_str_and_int_enums_are_stored_as_their_values() -> None:
    class Color(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert same(decode(encode([Color.RED, Level.HIGH])), ["red", 3])


def test_decode_accepts_bytes_and_raw_surrogates() -> None:
    assert decode(b'{"a":"\\ud800"}') == {"a": "\ud800"}
    assert decode('"\udc80"') == "\udc80"


def test_decode_rejects_invalid_json() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        decode('{"a":')


# -- error paths ---------------------------------------------------------------


def test_nan_deep_in_a_state_names_its_path() -> None:
    state = {"memory": {"content": [{"score": 1.0}, {}, {}, {"text": "x", "score": math.nan}]}}
    with pytest.raises(StateEncodingError) as info:
        encode(state, root="agent")
    assert info.value.path == "agent.memory.content[3].score"
    assert str(info.value) == (
        "cannot store float('nan') at agent.memory.content[3].score: "
        "JSON has no NaN or infinity; store None or a string instead"
    )


def test_encoding_error_is_a_value_error_and_a_statekeeper_error() -> None:
    with pytest.raises(StateEncodingError) as info:
        encode(math.inf)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StatekeeperError)
    assert info.value.path == "$"
    assert "float('inf')" in str(info.value)


@pytest.mark.parametrize(
    ("state", "path"),
    [
        (-math.inf, "$"),
        ([1, [2, -math.inf]], "[1][1]"),
        ({"my key": {"0": math.nan}}, '["my key"]["0"]'),
        ({"a": [{"b": math.nan}]}, "a[0].b"),
    ],
)
def test_paths_without_root(state: object, path: str) -> None:
    with pytest.raises(StateEncodingError) as info:
        encode(state)
    assert info.value.path == path
    assert path in str(info.value)


def test_first_problem_in_encoding_order_is_reported() -> None:
    with pytest.raises(StateEncodingError) as info:
        encode({"a": [1, {"b": 2}], "c": {1, 2}, "d": math.nan})
    assert info.value.path == "c"


class Plain:
    pass


@dataclasses.dataclass
class Point:
    x: int


class Shade(enum.Enum):
    DARK = 1


class Module:
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize(
    ("value", "type_name", "hint"),
    [
        ({1, 2}, "set", "sorted(value)"),
        (frozenset(), "frozenset", "list"),
        (b"x", "bytes", "base64"),
        (bytearray(b"x"), "bytearray", "base64"),
        (datetime.datetime(2025, 1, 1), "datetime.datetime", "isoformat()"),
        (datetime.date(2025, 1, 1), "datetime.date", "isoformat()"),
        (datetime.timedelta(seconds=1), "datetime.timedelta", "total_seconds()"),
        (decimal.Decimal("1.5"), "decimal.Decimal", "str(value)"),
        (uuid.UUID(int=0), "uuid.UUID", "str(value)"),
        (Shade.DARK, "Shade", "value.value"),
        (Point(1), "Point", "dataclasses.asdict"),
        (Module(), "Module", "value.state_dict()"),
        (Plain(), "Plain", "custom_to_json"),
        (1j, "complex", "custom_to_json"),
    ],
)
def test_values_json_cannot_hold_name_their_type_path_and_fix(
    value: object, type_name: str, hint: str
) -> None:
    with pytest.raises(StateEncodingError) as info:
        encode({"memory": [0, {"item": value}]}, root="agent")
    message = str(info.value)
    assert info.value.path == "agent.memory[1].item"
    assert "agent.memory[1].item" in message
    assert type_name in message
    assert hint in message


def test_circular_dict_is_reported() -> None:
    state: dict[str, Any] = {"a": {"b": []}}
    state["a"]["b"].append(state["a"])
    with pytest.raises(StateEncodingError, match="circular reference") as info:
        encode(state, root="agent")
    assert info.value.path == "agent.a.b[0]"
    assert "same object as agent.a" in str(info.value)


def test_circular_list_is_reported() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(StateEncodingError, match="circular reference") as info:
        encode(loop)
    assert info.value.path == "[1]"


def test_shared_but_acyclic_values_are_fine() -> None:
    shared = [1, 2]
    assert decode(encode({"a": shared, "b": shared})) == {"a": [1, 2], "b": [1, 2]}


def test_bad_dict_keys_are_reported() -> None:
    with pytest.raises(StateEncodingError, match="dict key of type tuple") as info:
        encode({"ok": {(1, 2): 3}})
    assert info.value.path == "ok"
    with pytest.raises(StateEncodingError, match=r"dict key float\('nan'\)") as info:
        encode({"a": 1, "b": [{math.nan: 1}]})
    assert info.value.path == "b[0]"


@pytest.mark.skipif(
    not hasattr(sys, "get_int_max_str_digits"), reason="this Python has no int digit limit"
)
def test_int_too_long_for_text_is_reported() -> None:
    with pytest.raises(StateEncodingError, match="digits") as info:
        encode({"n": [10**5000]})
    assert info.value.path == "n[0]"


def test_split_surrogate_pair_comes_back_joined_as_json_does() -> None:
    # Two code points U+D83D U+DE00 and the one character U+1F600 are written
    # alike in JSON; they read back as the character, as with json.loads.
    assert decode(encode({"chunks": ["a\ud83d\ude00b"]})) == {"chunks": ["a😀b"]}
    # Reversed order (low then high) is two lone surrogates and is kept.
    assert decode(encode("\ude00\ud83d")) == "\ude00\ud83d"


# -- nesting depth -----------------------------------------------------------------


def _nested(depth: int, kind: str = "list", leaf: object = 1) -> Any:
    """Return ``depth`` containers of ``kind`` nested inside one another around ``leaf``."""
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else (value,) if kind == "tuple" else [value]
    return value


def _path(depth: int, kind: str) -> str:
    """Return the path of the innermost of ``depth`` nested containers, from the root."""
    return "".join(".k" if kind == "dict" else "[0]" for _ in range(depth - 1))


@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
@pytest.mark.parametrize("padding", [0, 10_000], ids=["small", "large"])
def test_nesting_up_to_max_depth_round_trips(kind: str, padding: int) -> None:
    state = {"pad": "x" * padding, "deep": _nested(MAX_DEPTH - 1, kind)}
    back = decode(encode(state))
    assert back == json.loads(json.dumps(state))  # tuples come back as lists
    assert decode(encode_modules({"agent": state})) == {"agent": back}
    assert decode(encode_entries({"agent": state})["agent"]) == back


@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
@pytest.mark.parametrize("padding", [0, 10_000], ids=["small", "large"])
def test_nesting_past_max_depth_is_an_encoding_error_naming_the_path(
    kind: str, padding: int
) -> None:
    state = {"pad": "x" * padding, "deep": _nested(MAX_DEPTH, kind)}
    expected = "agent.deep" + _path(MAX_DEPTH, kind)  # the first container past the limit
    for encoder in (
        lambda: encode(state, root="agent"),
        lambda: encode_modules({"agent": state}),
        lambda: encode_entries({"agent": state}),
    ):
        with pytest.raises(StateEncodingError) as info:
            encoder()
        assert info.value.path == expected
        assert f"containers are nested more than {MAX_DEPTH} deep there" in str(info.value)
        assert "codec.MAX_DEPTH" in str(info.value)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_much_deeper_nesting_is_the_same_error_on_every_interpreter(depth: int) -> None:
    with pytest.raises(StateEncodingError, match="nested more than") as info:
        encode(_nested(depth), root="agent")
    assert info.value.path == "agent" + _path(MAX_DEPTH + 1, "list")


def test_depth_counts_containers_not_brackets_in_strings() -> None:
    state = {"brackets": "[{" * MAX_DEPTH, "items": [[1], {"a": [2]}] * MAX_DEPTH}
    assert decode(encode(state)) == state


def test_too_deep_error_comes_after_an_earlier_problem() -> None:
    # The first value the encoder would stop at is named, as for every error.
    with pytest.raises(StateEncodingError) as info:
        encode([math.nan, _nested(MAX_DEPTH)])
    assert info.value.path == "[0]"


def test_decode_reads_text_deeper_than_max_depth() -> None:
    text = "[" * (2 * MAX_DEPTH) + "]" * (2 * MAX_DEPTH)
    assert decode(text) == _nested(2 * MAX_DEPTH - 1, leaf=[])


def test_decode_of_text_too_deep_for_the_interpreter_is_a_value_error() -> None:
    depth = 1_000_000  # past what any CPython's C decoder reads
    with pytest.raises(ValueError, match="nested too deeply"):
        decode("[" * depth + "]" * depth)


# -- module names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["agent", "my-agent", "東京", "a.b", "x" * 255])
def test_valid_module_names_pass(name: str) -> None:
    assert check_module_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * 256, "256 characters"),
        ("a\x00b", "NUL"),
        ("a\ud800", "lone surrogate"),
        (3, "int"),
        (None, "NoneType"),
        (b"agent", "bytes"),
    ],
)
def test_invalid_module_names_are_refused(name: object, problem: str) -> None:
    with pytest.raises(StateEncodingError, match=problem) as info:
        check_module_name(name)
    assert info.value.path == repr(name)
    assert "invalid module name" in str(info.value)


def test_encode_modules_writes_one_object() -> None:
    text = encode_modules({"agent": {"name": "Friday"}, "memory": [1]})
    assert text == '{"agent":{"name":"Friday"},"memory":[1]}'
    assert decode(text) == {"agent": {"name": "Friday"}, "memory": [1]}


def test_encode_modules_accepts_any_mapping() -> None:
    proxy = types.MappingProxyType({"agent": {"a": 1}})
    assert decode(encode_modules(proxy)) == {"agent": {"a": 1}}


def test_encode_modules_error_paths_start_with_the_module_name() -> None:
    with pytest.raises(StateEncodingError) as info:
        encode_modules({"toolkit": {}, "agent": {"memory": [math.nan]}})
    assert info.value.path == "agent.memory[0]"
    with pytest.raises(StateEncodingError) as info:
        encode_modules({"my-agent": {"x": {1}}})
    assert info.value.path == '["my-agent"].x'


def test_encode_modules_checks_every_name() -> None:
    with pytest.raises(StateEncodingError, match="empty") as info:
        encode_modules({"agent": {}, "": {}})
    assert info.value.path == "''"
