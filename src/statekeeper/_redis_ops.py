"""The Redis stores' operations, written once and free of I/O.

As in ``ops.store`` for SQL, each operation is a generator that yields a
:class:`Cmd` (a client method and its arguments, a registered Lua script, or a
pipeline of commands) and is sent back the reply; ``RedisSession`` and
``AsyncRedisSession`` drive the same generators on redis-py's sync and asyncio
clients.

Keys, under the store's ``key_prefix``::

    statekeeper:s:["app","user","session"]   hash: v, c, u, e and one m:<name> per module
    statekeeper:u:["app","user"]             sorted set: session ids by update time (µs)
    statekeeper:a:["app"]                    sorted set: ["user","session"] by update time

Each module's state is its own hash field, holding the ``codec``'s ASCII JSON:
a merge is an ``HSET`` of the given fields, exact for any value, and the
version check, the write, the expiry and both indexes change in one script.
Redis expires a session's hash itself (``PEXPIREAT``); listing skips index
entries whose hash is gone and ``purge_expired`` removes them. AgentScope 1.x
keys (``{prefix}user_id:{user}:session:{session}:state``, one JSON string)
are read where no statekeeper key exists, and taken over by the first write.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import codec
from ._records import SessionInfo, SessionPage
from ._rules import (
    check_cursor_ids,
    check_limit,
    conflict,
    cursor_error,
    read_cursor,
    ttl_delta,
    validate_id,
)
from .errors import DatabaseUnavailableError, StorageFullError

__all__ = [
    "SCRIPTS",
    "Clients",
    "Cmd",
    "Keys",
    "RedisOp",
    "connect_settings",
    "is_out_of_memory",
    "loop_scope",
    "process_scope",
    "redis_module",
    "storage_full",
    "unavailable",
]

T = TypeVar("T")

_WRITE = """
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'v', 'c', 'u')
local v = tonumber(meta[1] or '0')
if v == 0 and ARGV[8] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  return {'legacy'}
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= v then
  return {'conflict', v}
end
local now = tonumber(ARGV[3])
local created = ARGV[3]
local updated = now
if v > 0 then
  created = meta[2]
  local previous = tonumber(meta[3])
  if previous >= updated then updated = previous + 1 end
  if ARGV[1] == '1' then
    -- A full Redis refuses a script's first write that needs memory, never a
    -- later one: write before the DEL, so a replace is refused whole.
    redis.call('HSET', key, 'v', v + 1)
    redis.call('DEL', key)
  end
end
local stamp = string.format('%.0f', updated)
local fields = {'v', v + 1, 'c', created, 'u', stamp, 'e', ARGV[4]}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', key, unpack(fields))
if ARGV[5] ~= '' then redis.call('PEXPIREAT', key, ARGV[5]) else redis.call('PERSIST', key) end
redis.call('ZADD', KEYS[2], stamp, ARGV[6])
redis.call('ZADD', KEYS[3], stamp, ARGV[7])
return {'ok', v + 1}
"""

_READ = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then
  local legacy = redis.call('GET', KEYS[2])
  if not legacy then return false end
  if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
  return {'legacy', legacy}
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'e', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  for i = 1, #h, 2 do if h[i] == 'e' then h[i + 1] = ARGV[1] end end
end
return {'ok', h}
"""

_ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
local fields = {'v', 1, 'c', ARGV[2], 'u', ARGV[2], 'e', ''}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('DEL', KEYS[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return 1
"""

_DELETE = """
local n = redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return n
"""

SCRIPTS = {"write": _WRITE, "read": _READ, "adopt": _ADOPT, "delete": _DELETE}
"""The Lua scripts, by name; the stores register them once (``EVALSHA`` afterwards)."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Cmd:
    """One round trip: a client method (or ``script:<name>``, or ``pipe``) and its arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None


RedisOp = Generator[Cmd, Any, T]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stamp(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one store (prefix and app) and the arithmetic of its ``ttl``."""

    prefix: str
    app_name: str
    ttl_us: int | None

    def session(self, user_id: str, session_id: str) -> str:
        """The hash of one session."""
        return self.prefix + "statekeeper:s:" + json.dumps([self.app_name, user_id, session_id])

    def user_index(self, user_id: str) -> str:
        """The sorted set of one user's sessions."""
        return self.prefix + "statekeeper:u:" + json.dumps([self.app_name, user_id])

    def app_index(self) -> str:
        """The sorted set of the app's sessions."""
        return self.prefix + "statekeeper:a:" + json.dumps([self.app_name])

    def legacy(self, user_id: str, session_id: str) -> str:
        """AgentScope 1.x's key of the session."""
        return f"{self.prefix}user_id:{user_id}:session:{session_id}:state"

    def all_four(self, user_id: str, session_id: str) -> list[str]:
        """The keys a write or a delete touches."""
        return [
            self.session(user_id, session_id),
            self.user_index(user_id),
            self.app_index(),
            self.legacy(user_id, session_id),
        ]

    def expiry(self, now_us: int) -> tuple[str, str]:
        """The expiry of a session saved or loaded now: µs for the hash, ms for Redis."""
        if self.ttl_us is None:
            return "", ""
        expires = now_us + max(self.ttl_us, 1)
        return str(expires), str(-(-expires // 1000))


def _fields(entries: Mapping[str, str]) -> list[str]:
    out = []
    for name, text in entries.items():
        out += ["m:" + name, text]
    return out


def write(
    keys: Keys,
    user_id: str,
    session_id: str,
    entries: Mapping[str, str],
    replace: bool,
    expected: int | None,
) -> RedisOp[int]:
    """Store the encoded modules (all of the state if ``replace``); return the new version."""
    members = [session_id, json.dumps([user_id, session_id])]
    legacy = "1"
    while True:
        now_us = _now_us()
        args = [
            "1" if replace else "0",
            "" if expected is None else str(expected),
            str(now_us),
            *keys.expiry(now_us),
            *members,
            legacy,
            *_fields(entries),
        ]
        reply = yield Cmd("script:write", (keys.all_four(user_id, session_id), args))
        status = _text(reply[0])
        if status == "ok":
            return int(reply[1])
        if status == "conflict":
            assert expected is not None
            raise conflict(expected, int(reply[1]), session_id)
        yield from _adopt_legacy(keys, user_id, session_id)
        legacy = "0"  # adopted, or written over by someone else meanwhile


def _adopt_legacy(keys: Keys, user_id: str, session_id: str) -> RedisOp[None]:
    """Turn an AgentScope key into a statekeeper hash (version 1), if it is still there."""
    raw = yield Cmd("get", (keys.legacy(user_id, session_id),))
    if raw is None:
        return
    state = json.loads(raw)
    members = [session_id, json.dumps([user_id, session_id])]
    args = [raw, str(_now_us()), *members, *_fields(codec.encode_entries(state))]
    yield Cmd("script:adopt", (keys.all_four(user_id, session_id), args))


def read(keys: Keys, user_id: str, session_id: str) -> RedisOp[dict[str, Any] | None]:
    """Return the decoded state, or ``None``; with a ``ttl``, a load also refreshes it."""
    if keys.ttl_us is None:  # nothing to refresh: a plain HGETALL, the script only if absent
        fields = yield Cmd("hgetall", (keys.session(user_id, session_id),))
        if fields:
            return _decode(fields.items())
    expires_us, expires_ms = keys.expiry(_now_us())
    ttl_ms = "" if keys.ttl_us is None else str(-(-keys.ttl_us // 1000))
    reply = yield Cmd(
        "script:read",
        (
            [keys.session(user_id, session_id), keys.legacy(user_id, session_id)],
            [expires_us, expires_ms, ttl_ms],
        ),
    )
    if reply is None:
        return None
    if _text(reply[0]) == "legacy":
        legacy: dict[str, Any] = json.loads(reply[1])
        return legacy
    flat = reply[1]
    return _decode((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def _decode(fields: Iterable[tuple[bytes | str, bytes | str]]) -> dict[str, Any]:
    entries = {}
    for name, value in fields:
        text = _text(name)
        if text.startswith("m:"):
            entries[text[2:]] = _text(value)
    state: dict[str, Any] = codec.decode(codec.join_entries(entries))
    return state


def exists(keys: Keys, user_id: str, session_id: str) -> RedisOp[bool]:
    """Tell whether the session (or its AgentScope key) exists, without refreshing it."""
    count = yield Cmd(
        "exists", (keys.session(user_id, session_id), keys.legacy(user_id, session_id))
    )
    return int(count) > 0


def delete(keys: Keys, user_id: str, session_id: str) -> RedisOp[bool]:
    """Delete the session (and its AgentScope key); return whether one was there."""
    members = [session_id, json.dumps([user_id, session_id])]
    count = yield Cmd("script:delete", (keys.all_four(user_id, session_id), members))
    return int(count) > 0


#: Index scores are microseconds since the epoch; a cursor's must be one.
_MAX_SCORE = 2**53


def _encode_cursor(score: int, info: SessionInfo) -> str:
    raw = json.dumps([score, info.user_id, info.session_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, user_id: str | None) -> tuple[int, str]:
    """Return the cursor's score and index member, or raise the documented ``ValueError``."""
    fields = read_cursor(cursor)
    if len(fields) != 3:
        raise cursor_error(cursor)
    score, owner, session_id = fields
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= _MAX_SCORE:
        raise cursor_error(cursor)
    check_cursor_ids(cursor, owner, session_id, user_id)
    return score, session_id if user_id is not None else json.dumps([owner, session_id])


def list_sessions(
    keys: Keys, user_id: str | None, limit: int, cursor: str | None
) -> RedisOp[SessionPage]:
    """Return one page of live sessions, newest update first, keyset-paginated on the index."""
    check_limit(limit)
    index = keys.app_index() if user_id is None else keys.user_index(user_id)
    top, after = ("+inf", None) if cursor is None else (None, _decode_cursor(cursor, user_id))
    if after is not None:
        top = str(after[0])
    found: list[tuple[SessionInfo, int, str]] = []
    offset = 0
    batch = limit + 1
    while len(found) <= limit:
        rows = yield Cmd(
            "zrange",
            (index, top, "-inf"),
            {"desc": True, "withscores": True, "byscore": True, "offset": offset, "num": batch},
        )
        offset += len(rows)
        members = []
        for raw, score in rows:
            member = _text(raw)
            if after is not None and int(score) == after[0] and member >= after[1]:
                continue  # on or before the cursor
            members.append((member, int(score)))
        owners = [(user_id, m) if user_id is not None else tuple(json.loads(m)) for m, _ in members]
        metas = yield Cmd(
            "pipe", tuple(("hmget", (keys.session(u, s), "v", "c", "u", "e")) for u, s in owners)
        )
        for (member, score), (uid, sid), meta in zip(members, owners, metas, strict=True):
            if meta[0] is None:
                continue  # expired: its index entry waits for purge_expired
            expires = _text(meta[3])
            info = SessionInfo(
                keys.app_name,
                uid,
                sid,
                int(meta[0]),
                _stamp(int(meta[1])),
                _stamp(int(meta[2])),
                _stamp(int(expires)) if expires else None,
            )
            found.append((info, score, member))
        if len(rows) < batch:
            break
    page = found[:limit]
    next_cursor = _encode_cursor(page[-1][1], page[-1][0]) if len(found) > limit else None
    return SessionPage(tuple(info for info, _, _ in page), next_cursor)


def purge_expired(keys: Keys) -> RedisOp[int]:
    """Drop the index entries of sessions Redis has expired; return how many."""
    index = keys.app_index()
    count = 0
    start = 0
    while True:
        members = yield Cmd("zrange", (index, start, start + 499))
        if not members:
            return count
        owners = [json.loads(_text(m)) for m in members]
        alive = yield Cmd("pipe", tuple(("exists", (keys.session(u, s),)) for u, s in owners))
        gone = [(m, o) for m, o, a in zip(members, owners, alive, strict=True) if not a]
        if gone:
            removals = [("zrem", (index, *(m for m, _ in gone)))]
            removals += [("zrem", (keys.user_index(u), s)) for _, (u, s) in gone]
            yield Cmd("pipe", tuple(removals))
        count += len(gone)
        start += len(members) - len(gone)


# --------------------------------------------------------------------------- settings


def connect_settings(key_prefix: str, app_name: str, ttl: float | dt.timedelta | None) -> Keys:
    """Validate the Redis stores' settings; return their key names and ``ttl`` arithmetic."""
    if not isinstance(key_prefix, str):
        raise ValueError(f"key_prefix must be a str, got {key_prefix!r}")
    validate_id(app_name, "app_name", allow_empty=True)
    delta = ttl_delta(ttl)
    ttl_us = None if delta is None else delta // dt.timedelta(microseconds=1)
    return Keys(key_prefix, app_name, ttl_us)


def redis_module() -> Any:
    """Import redis-py, or say which extra installs it."""
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "the Redis stores need redis-py: pip install 'statekeeper[redis]'"
        ) from exc
    return redis


def unavailable(where: str, exc: Exception) -> DatabaseUnavailableError:
    """Wrap a redis-py connection error."""
    error = DatabaseUnavailableError(
        f"Redis at {where} could not be reached ({exc}); check that it is up and the URL "
        "is right, then retry"
    )
    error.__cause__ = exc
    return error


def is_out_of_memory(exc: Exception) -> bool:
    """Whether a Redis error reply is the refusal of a write at ``maxmemory``."""
    # Redis 7 replies "OOM ..." (redis-py's OutOfMemoryError), also from inside
    # a script; Redis 6 wraps a script's refusal in "ERR Error running script".
    oom = getattr(redis_module().exceptions, "OutOfMemoryError", ())
    return isinstance(exc, oom) or "OOM command not allowed" in str(exc)


def storage_full(where: str, exc: Exception) -> StorageFullError:
    """Wrap Redis's refusal of a write at ``maxmemory``."""
    error = StorageFullError(
        f"Redis at {where} refused the write: it is out of memory ({exc}). Nothing was "
        "written; free memory (delete or expire sessions) or raise maxmemory, then retry"
    )
    error.__cause__ = exc
    return error


# --------------------------------------------------------------------------- clients

#: Where a client may be used: a process id and the event loop (``None``: any thread).
Scope = tuple[int, Any]


def loop_scope() -> Scope:
    """Where an async client may be used: this process and the running event loop."""
    return os.getpid(), asyncio.get_running_loop()


def process_scope() -> Scope:
    """Where a sync client may be used: this process (redis-py's pool is thread-safe)."""
    return os.getpid(), None


def _with_scripts(client: Any) -> tuple[Any, dict[str, Any]]:
    """``client`` and the stores' Lua scripts registered on it (no round trip until used)."""
    return client, {name: client.register_script(src) for name, src in SCRIPTS.items()}


def _live(scope: Scope) -> bool:
    pid, loop = scope
    return pid == os.getpid() and (loop is None or not loop.is_closed())


class Clients:
    """The clients a store runs on: one per scope, made when first needed.

    A store made from a URL (``make`` opens a client) never lets a connection
    cross a fork (the child would talk on its parent's sockets; redis.asyncio's
    pool, unlike redis-py's, would not notice), and an asyncio client's
    connections belong to the event loop that opened them, so an app that runs
    each request in ``asyncio.run`` gets a client per loop. Clients of a scope
    that is gone (another process's, a closed loop's) are dropped when a new
    scope binds, never closed here: their sockets are the parent's, or their
    loop is closed. A store on a caller's client (``given``) uses it in every
    scope and never closes it.
    """

    def __init__(self, make: Callable[[], Any] | None = None, given: Any = None) -> None:
        self._make = make
        self._given = None if make is not None else _with_scripts(given)
        self._fresh = None if make is None else _with_scripts(make())
        self._by_scope: dict[Scope, tuple[Any, dict[str, Any]]] = {}
        self._binding = threading.Lock()  # loops of two threads binding at once
        self._binding_pid = os.getpid()
        first = self._fresh or self._given
        assert first is not None
        self.latest: Any = first[0]  # the newest client, for the stores' ``client`` property

    def here(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        """The client of ``scope`` and its registered scripts."""
        pair = self._given or self._by_scope.get(scope)
        return self._bind(scope) if pair is None else pair

    def _lock(self) -> threading.Lock:
        if self._binding_pid != os.getpid():  # forked while another thread held it, maybe
            self._binding, self._binding_pid = threading.Lock(), os.getpid()
        return self._binding

    def _bind(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        assert self._make is not None
        with self._lock():
            pair = self._by_scope.get(scope)
            if pair is None:
                live = {s: p for s, p in self._by_scope.items() if _live(s)}
                pair, self._fresh = self._fresh or _with_scripts(self._make()), None
                self._by_scope = {**live, scope: pair}
                self.latest = pair[0]
            return pair

    def release(self, scope: Scope) -> list[Any]:
        """Forget the store's own clients; return those to close (``scope``'s, the unused)."""
        with self._lock():
            mine = [p[0] for s, p in self._by_scope.items() if s == scope]
            if self._fresh is not None:
                mine.append(self._fresh[0])
            self._by_scope, self._fresh = {}, None
            return mine
