# generated from redis_async.py by tools/gen_sync.py: edit redis_async.py,
# then run python tools/gen_sync.py
"""``RedisSession``: session state in Redis, from sync code (extra ``statekeeper[redis]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from . import _redis_ops, codec
from ._redis_ops import (
    Clients,
    connect_settings,
    is_out_of_memory,
    process_scope,
    redis_module,
    storage_full,
    unavailable,
)
from ._rules import (
    apply_loaded,
    check_cursor,
    check_expected,
    check_ids,
    collect_states,
    encoded_entries,
)
from .base import SessionBase
from .errors import StoreClosedError

if TYPE_CHECKING:
    import datetime as dt

    from ._records import SessionPage

__all__ = ["RedisSession"]

T = TypeVar("T")


class RedisSession(SessionBase):
    """Keep agent-session state in Redis, from sync code.

    A session is a Redis hash with one field per module (the module's exact
    JSON), so a save merges modules atomically; versions, ``expected_version``,
    the sliding expiry and the listing indexes (one sorted set per user and
    one per app, never ``KEYS``) change in the same Lua script. Sessions an
    AgentScope 1.x ``RedisSession`` wrote under
    ``{key_prefix}user_id:{user_id}:session:{session_id}:state`` are read as
    they are and taken over by the first write, so an app can switch without
    moving its data (such a session is listed once written; the
    ``agentscope-redis`` source of the ``statekeeper import`` command moves
    them all). Needs one Redis server (no Cluster: a script touches several
    keys). The sync and async twins share keys and scripts: both can use one
    database at once.

    Args:
        url_or_client: a Redis URL (``"redis://localhost:6379/0"``) or a
            ``redis.Redis`` client, which is used as it is and not closed by
            :meth:`close`.
        key_prefix: put before every key, as AgentScope's ``key_prefix``.
        app_name: isolates apps sharing one Redis database.
        ttl: seconds or a ``timedelta``; a session neither saved nor loaded for
            that long expires (Redis deletes it) and reads as absent. ``None``: never.

    Raises:
        ValueError: a setting is invalid.
        ImportError: redis-py is missing; the message names the extra.
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        key_prefix: str = "",
        app_name: str = "",
        ttl: float | dt.timedelta | None = None,
    ) -> None:
        redis = redis_module()
        self._keys = connect_settings(key_prefix, app_name, ttl)
        owned = isinstance(url_or_client, str)
        self._where = url_or_client if owned else repr(url_or_client)
        # A URL: clients of the store's own, one per scope; a client: that one.
        self._clients = (
            Clients(lambda: redis.Redis.from_url(url_or_client))
            if owned
            else Clients(given=url_or_client)
        )
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._refused = redis.ResponseError
        self._closed = False

    @property
    def client(self) -> Any:
        """The redis-py client the store runs on (from a URL: the one it made last)."""
        return self._clients.latest

    def _run(self, op: _redis_ops.RedisOp[T]) -> T:
        client, scripts = self._clients.here(process_scope())
        try:
            cmd = next(op)
            while True:
                cmd = op.send(self._execute(client, scripts, cmd))
        except StopIteration as stop:
            result: T = stop.value
            return result
        except self._errors as exc:
            raise unavailable(self._where, exc) from exc
        except self._refused as exc:
            if is_out_of_memory(exc):
                raise storage_full(self._where, exc) from exc
            raise

    @staticmethod
    def _execute(client: Any, scripts: dict[str, Any], cmd: _redis_ops.Cmd) -> Any:
        if cmd.name.startswith("script:"):
            keys, args = cmd.args
            return scripts[cmd.name[7:]](keys=keys, args=args)
        if cmd.name == "pipe":
            pipe = client.pipeline(transaction=False)
            for name, args in cmd.args:
                getattr(pipe, name)(*args)
            return pipe.execute()
        return getattr(client, cmd.name)(*cmd.args, **(cmd.kwargs or {}))

    def _check(self, user_id: str, session_id: str) -> None:
        if self._closed:
            raise StoreClosedError("this RedisSession was closed; create a new one to keep working")
        check_ids(user_id, session_id)

    def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        self._check(user_id, session_id)
        entries = codec.encode_entries(collect_states(modules))
        self._run(_redis_ops.write(self._keys, user_id, session_id, entries, False, None))

    def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        state = self.get_state(session_id, user_id)
        apply_loaded(state, session_id, user_id, self._keys.app_name, allow_not_exist, modules)

    def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        self._check(user_id, session_id)
        return self._run(_redis_ops.read(self._keys, user_id, session_id))

    def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        self._check(user_id, session_id)
        expected = check_expected(expected_version)
        entries = encoded_entries(state, "state")
        return self._run(_redis_ops.write(self._keys, user_id, session_id, entries, True, expected))

    def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        self._check(user_id, session_id)
        expected = check_expected(expected_version)
        entries = encoded_entries(modules, "modules")
        return self._run(
            _redis_ops.write(self._keys, user_id, session_id, entries, False, expected)
        )

    def delete_session(self, session_id: str, user_id: str = "") -> bool:
        self._check(user_id, session_id)
        return self._run(_redis_ops.delete(self._keys, user_id, session_id))

    def session_exists(self, session_id: str, user_id: str = "") -> bool:
        self._check(user_id, session_id)
        return self._run(_redis_ops.exists(self._keys, user_id, session_id))

    def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        self._check(user_id or "", "-")
        cursor = check_cursor(cursor)
        return self._run(_redis_ops.list_sessions(self._keys, user_id, limit, cursor))

    def purge_expired(self) -> int:
        self._check("", "-")
        return self._run(_redis_ops.purge_expired(self._keys))

    def close(self) -> None:
        if not self._closed:
            # This process's and loop's client closes; the others are dropped
            # (a parent's, or of a loop that is closed or not this one); a
            # caller's client is never closed.
            for client in self._clients.release(process_scope()):
                client.close()
        self._closed = True
