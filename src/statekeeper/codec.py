"""Encode session state as exact JSON text, and decode it again.

Every store writes state through :func:`encode` (or :func:`encode_modules`)
and reads it back through :func:`decode`. The contract:

* Any value that Python's :mod:`json` accepts with ``allow_nan=False``
  round-trips exactly: dicts, lists, strings (``"\\x00"`` and lone
  surrogates included), ints of any size up to Python's int-to-text digit
  limit, floats (``-0.0`` and every bit of precision included), bools and
  ``None``. As with :mod:`json`, tuples come back as lists, dict keys that
  are ``int``, ``float``, ``bool`` or ``None`` come back as their JSON text
  (``1`` as ``"1"``, ``None`` as ``"null"``), subclasses of ``str``,
  ``int``, ``float``, ``dict`` and ``list`` come back as the base type, and
  a high surrogate directly followed by a low one (two code points) comes
  back as the one character the pair encodes: JSON cannot tell them apart.
* The text is compact ASCII (everything else is written as ``\\uXXXX``
  escapes), so it fits a PostgreSQL ``json`` column in any server encoding
  and a SQLite ``TEXT`` column, holds no raw NUL or surrogate, and is as
  cheap as text gets for Python and the drivers to copy.
* NaN, infinities, circular references, values JSON cannot hold (sets,
  bytes, datetimes, arbitrary objects, ...) and containers nested deeper
  than :data:`MAX_DEPTH` raise :class:`~statekeeper.errors.StateEncodingError`
  naming the offending value's path, such as ``agent.memory.content[3].score``.

The common case costs one pass of the standard library's C encoder and, for
states of more than a few kilobytes, one walk over their containers to check
the depth; the state is walked in full only to explain a failure.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any

from statekeeper.errors import StateEncodingError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_DEPTH",
    "check_module_name",
    "decode",
    "encode",
    "encode_entries",
    "encode_modules",
    "join_entries",
]

_MAX_MODULE_NAME_LENGTH = 255

#: The most containers (dicts, lists, tuples) a state may nest inside one
#: another: ``[]`` is nested 1 deep, ``{"a": [1]}`` 2 deep, and a module's
#: state counts from its own top. Deeper states raise
#: :class:`~statekeeper.errors.StateEncodingError`. The limit is the same on
#: every Python version and far below where CPython's C JSON encoder and
#: decoder or SQLite's JSON functions (1000) give up, so whatever is stored
#: can be read back and merged.
MAX_DEPTH = 256

# Below this many characters of JSON, counting the brackets is cheaper than
# walking the containers (it over-counts brackets inside strings: still a
# valid bound).
_COUNT_BRACKETS_BELOW = 4096
_CONTAINERS = (list, tuple, dict)
_SCALARS = frozenset({str, int, float, bool, type(None)})

_ENCODER = json.JSONEncoder(
    ensure_ascii=True,
    allow_nan=False,
    check_circular=True,
    separators=(",", ":"),
)

_SURROGATE = re.compile("[\ud800-\udfff]")

# Python refuses to turn ints with more digits than this into text; below
# roughly this many bits an int is always short enough.
_SAFE_INT_BITS = 13_000


def encode(state: object, *, root: str = "") -> str:
    """Encode a state as compact JSON text that decodes back to an equal value.

    Tuples are written as lists and non-string dict keys as strings, exactly
    as :func:`json.dumps` does; see the module docstring for the full
    round-trip contract.

    Args:
        state: the value to encode, usually a ``state_dict()``.
        root: the path of ``state`` used in error messages, for example the
            module name ``"agent"``. With the default ``""`` the whole state
            is named ``$`` and its parts ``key.sub[3]``.

    Returns:
        ASCII JSON text without insignificant whitespace.

    Raises:
        StateEncodingError: the state holds NaN or an infinity, a value or
            dict key JSON cannot represent, a circular reference, an int too
            long to write as text, or containers nested more than
            :data:`MAX_DEPTH` deep. ``path`` names the offending value (for
            nesting, the first container past the limit).
    """
    return _encode(state, root, MAX_DEPTH)


def _encode(state: object, root: str, max_depth: int) -> str:
    """Encode ``state``, refusing containers nested more than ``max_depth`` deep."""
    try:
        text = _ENCODER.encode(state)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _explain(state, root, max_depth, exc) from exc
    if _deeper_than(state, text, max_depth):
        raise _explain(state, root, max_depth, None)
    return text


def _deeper_than(state: object, text: str, max_depth: int) -> bool:
    """Tell whether ``state`` (encoded as ``text``) nests more than ``max_depth`` containers."""
    if len(text) < _COUNT_BRACKETS_BELOW and text.count("[") + text.count("{") <= max_depth:
        return False  # each container writes one bracket: fewer brackets, less depth
    scalars = _SCALARS
    level: list[Any] = [state] if isinstance(state, _CONTAINERS) else []
    for _ in range(max_depth):
        level = [
            item
            for container in level
            for item in (container.values() if isinstance(container, dict) else container)
            if type(item) not in scalars and isinstance(item, _CONTAINERS)
        ]
        if not level:
            return False
    return True


def encode_modules(modules: Mapping[str, object]) -> str:
    """Encode a mapping of module name to module state as one JSON object.

    Args:
        modules: module name to state, usually ``{name: module.state_dict()}``.

    Returns:
        The JSON text of the whole mapping, as :func:`encode` writes it.

    Raises:
        StateEncodingError: a module name fails :func:`check_module_name`, or
            a state cannot be encoded; ``path`` then starts with the module
            name, as in ``agent.memory[0]``.
    """
    checked = {check_module_name(name): state for name, state in modules.items()}
    return _encode(checked, "", MAX_DEPTH + 1)  # each module's state counts from its own top


def encode_entries(modules: Mapping[str, object]) -> dict[str, str]:
    """Encode each module's state on its own: module name to JSON text.

    :func:`join_entries` turns the result into the text :func:`encode_modules`
    would write; stores that merge inside the database bind the parts.

    Raises:
        StateEncodingError: as :func:`encode_modules`.
    """
    return {
        check_module_name(name): encode(state, root=_render("", (None, name)))
        for name, state in modules.items()
    }


def join_entries(entries: Mapping[str, str]) -> str:
    """Return the JSON object text of already encoded module states."""
    pieces: list[str] = []
    for name, text in entries.items():
        pieces += ["," if pieces else "{", json.dumps(name), ":", text]  # no copy of the texts
    pieces.append("}" if pieces else "{}")
    return "".join(pieces)


def check_module_name(name: object) -> str:
    """Check that ``name`` can be a module name (a top-level key of a state).

    A module name is a non-empty ``str`` of at most 255 characters without
    NUL and without surrogate code points, so that the database can treat it
    as text.

    Args:
        name: the candidate name.

    Returns:
        ``name``, unchanged.

    Raises:
        StateEncodingError: the name is unusable; ``path`` is ``repr(name)``.
    """
    if not isinstance(name, str):
        problem = f"it is of type {_type_name(name)}, not str"
    elif not name:
        problem = "it is empty"
    elif len(name) > _MAX_MODULE_NAME_LENGTH:
        problem = f"it is {len(name)} characters long"
    elif "\x00" in name:
        problem = "it contains a NUL character"
    elif _SURROGATE.search(name):
        problem = "it contains a lone surrogate"
    else:
        return name
    path = _safe_repr(name)
    raise StateEncodingError(
        f"invalid module name {_shorten(path)}: {problem}; module names must be "
        f"non-empty str of at most {_MAX_MODULE_NAME_LENGTH} characters without "
        "NUL or lone surrogates",
        path=path,
    )


def decode(text: str | bytes) -> Any:
    """Decode JSON text, as written by :func:`encode`, back into Python values.

    ``\\u0000`` and lone-surrogate escapes are accepted. The standard
    library's C decoder is used: it reads every integer and float exactly
    (orjson, measured about 30% faster here, turns integers past 64 bits into
    floats). Decoding does not enforce :data:`MAX_DEPTH`: text written by
    another program, deeper than that, is read as far as the interpreter can.

    Args:
        text: the JSON text, as ``str`` or UTF-8 ``bytes``.

    Returns:
        The decoded value: dicts, lists, str, int, float, bool and ``None``.

    Raises:
        ValueError: the text is not valid JSON (a :class:`json.JSONDecodeError`),
            or is nested too deeply for the interpreter to decode.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(
            "cannot decode the JSON text: it is nested too deeply for this Python "
            f"interpreter (statekeeper writes at most {MAX_DEPTH} levels)"
        ) from None


# -- encoding helpers ---------------------------------------------------------


def _explain(
    state: object, root: str, max_depth: int, exc: BaseException | None
) -> StateEncodingError:
    """Walk ``state`` to build the error that names what cannot be encoded."""
    error = _find_problem(state, root, max_depth)
    if error is not None:
        return error
    path = root or "$"
    if isinstance(exc, RecursionError):
        return StateEncodingError(
            f"cannot store {path}: it is nested too deeply for JSON; flatten it "
            "or store the deep part as a string",
            path=path,
        )
    return StateEncodingError(f"cannot store {path} as JSON: {exc}", path=path)


# Where a value sits: (parent's location or None for the root, then the dict
# key text or list index). Rendered to text only for the error message, so
# deep states cost linear time.
_Location = tuple[Any, "str | int"]
# What is wrong: (subject with its preposition, reason and remedy), as in
# ("float('nan') at", "JSON has no NaN ...") -> "cannot store float('nan') at P: ...".
_Problem = tuple[str, str]

_VALUE, _KEY, _LEAVE = 0, 1, 2


def _find_problem(state: object, root: str, max_depth: int) -> StateEncodingError | None:
    """Return the error for the first value the JSON encoder would refuse.

    Values are visited in the order the encoder visits them, each dict key
    just before its value, so the error names the value the encoder stopped
    at; a container nested more than ``max_depth`` deep counts as refused.
    The walk uses its own stack, so deep states cannot overflow Python's.
    """
    # (kind, value, location, how many containers enclose the value)
    stack: list[tuple[int, object, _Location | None, int]] = [(_VALUE, state, None, 0)]
    open_containers: dict[int, _Location | None] = {}
    while stack:
        kind, value, location, enclosing = stack.pop()
        problem: _Problem | None
        if kind == _LEAVE:
            del open_containers[id(value)]
            continue
        if kind == _KEY:
            problem = _check_key(value)
        elif value is None or isinstance(value, (str, bool)):
            problem = None
        elif isinstance(value, int):
            problem = _check_int(value, is_key=False)
        elif isinstance(value, float):
            problem = _check_float(value, is_key=False)
        elif isinstance(value, (list, tuple, dict)):
            if id(value) in open_containers:
                path = _render(root, location)
                ancestor = _render(root, open_containers[id(value)])
                return StateEncodingError(
                    f"cannot store {path}: it is the same object as {ancestor}, which "
                    "contains it (a circular reference); JSON holds only trees, so "
                    "store a copy or an id instead",
                    path=path,
                )
            if enclosing >= max_depth:
                path = _render(root, location)
                return StateEncodingError(
                    f"cannot store {_shorten(path)}: containers are nested more than "
                    f"{MAX_DEPTH} deep there, statekeeper's limit (codec.MAX_DEPTH); "
                    "flatten the state or store the deep part as a JSON string",
                    path=path,
                )
            open_containers[id(value)] = location
            stack.append((_LEAVE, value, location, enclosing))
            stack.extend(reversed(_entries(value, location, enclosing + 1)))
            continue
        else:
            problem = (f"a value of type {_type_name(value)} at", _hint(value))
        if problem is not None:
            path = _render(root, location)
            subject, reason = problem
            return StateEncodingError(f"cannot store {subject} {path}: {reason}", path=path)
    return None


def _entries(
    value: list[Any] | tuple[Any, ...] | dict[Any, Any], location: _Location | None, enclosing: int
) -> list[tuple[int, object, _Location | None, int]]:
    """Return a container's keys and items in encoding order, with locations."""
    entries: list[tuple[int, object, _Location | None, int]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            entries.append((_KEY, key, location, enclosing))
            entries.append((_VALUE, item, (location, _key_text(key)), enclosing))
    else:
        # Like the C encoder, read the items directly, not through __iter__.
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        for index, item in enumerate(items):
            entries.append((_VALUE, item, (location, index), enclosing))
    return entries


def _render(root: str, location: _Location | None) -> str:
    """Return the text of a location, such as ``agent.memory[3]["a b"]``."""
    parts: list[str | int] = []
    while location is not None:
        location, part = location
        parts.append(part)
    path = root
    for part in reversed(parts):
        if isinstance(part, int):
            path = f"{path}[{part}]"
        elif part.isidentifier() and part.isascii():
            path = f"{path}.{part}" if path else part
        else:
            path = f"{path}[{json.dumps(part)}]"
    return path or "$"


def _key_text(key: object) -> str:
    """Return the object key the encoder writes for the dict key ``key``."""
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return float.__repr__(key)
    if isinstance(key, int) and key.bit_length() < _SAFE_INT_BITS:
        return int.__repr__(key)
    return "?"  # the key's own check reports it before its value is reached


def _check_key(key: object) -> _Problem | None:
    """Return what is wrong with a dict key JSON cannot write, else ``None``."""
    if key is None or isinstance(key, (str, bool)):
        return None
    if isinstance(key, int):
        return _check_int(key, is_key=True)
    if isinstance(key, float):
        return _check_float(key, is_key=True)
    return (
        f"a dict key of type {_type_name(key)} in",
        "JSON object keys are strings (str, int, float, bool and None keys are "
        "converted); convert the key to a str",
    )


def _check_int(value: int, *, is_key: bool) -> _Problem | None:
    """Return what is wrong with an int too long to write as text, else ``None``."""
    if value.bit_length() < _SAFE_INT_BITS:
        return None
    try:
        int.__repr__(value)
    except ValueError:
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        return (
            f"{'a dict key' if is_key else 'an int'} with more than {limit} digits "
            f"{'in' if is_key else 'at'}",
            "Python refuses to convert it to text (see sys.set_int_max_str_digits); "
            "store it as a string",
        )
    return None


def _check_float(value: float, *, is_key: bool) -> _Problem | None:
    """Return what is wrong with NaN or an infinity, else ``None``."""
    if math.isfinite(value):
        return None
    literal = "float('nan')" if math.isnan(value) else f"float({str(value)!r})"
    if is_key:
        return (
            f"the dict key {literal} in",
            "JSON has no NaN or infinity; use a str key instead",
        )
    return (f"{literal} at", "JSON has no NaN or infinity; store None or a string instead")


def _hint(value: object) -> str:
    """Say how to turn ``value`` into something JSON can hold."""
    if isinstance(value, (set, frozenset)):
        return "JSON has no sets; store a list instead, e.g. sorted(value)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (
            "JSON has no bytes; store a str instead, e.g. base64.b64encode(value).decode('ascii')"
        )
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        what = "durations" if isinstance(value, datetime.timedelta) else "dates or times"
        fix = "value.total_seconds()" if what == "durations" else "value.isoformat()"
        return f"JSON has no {what}; store {fix} instead"
    if isinstance(value, decimal.Decimal):
        return "store str(value) instead (exact) or float(value)"
    if isinstance(value, uuid.UUID):
        return "store str(value) instead"
    if isinstance(value, enum.Enum):
        return "store value.value (or value.name) instead"
    if dataclasses.is_dataclass(value):
        return "store dataclasses.asdict(value) instead"
    if callable(getattr(value, "state_dict", None)):
        return "it looks like a state module; store value.state_dict() instead"
    return (
        "JSON holds only dict, list, tuple, str, int, float, bool and None; "
        "convert the value in state_dict() or with "
        "register_state(..., custom_to_json=...)"
    )


def _type_name(value: object) -> str:
    """Return the name of ``value``'s type, qualified unless it is a builtin."""
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_repr(value: object) -> str:
    """Return ``repr(value)``, or a placeholder when ``repr`` fails."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{_type_name(value)} object>"


def _shorten(text: str, limit: int = 80) -> str:
    """Cut ``text`` to ``limit`` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
