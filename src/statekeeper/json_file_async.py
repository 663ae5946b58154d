"""``AsyncJSONSession``: the JSON-file store for async code, its file I/O in worker threads."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._rules import apply_loaded, check_ids, collect_states
from .base import AsyncSessionBase
from .json_file import JSONSession

if TYPE_CHECKING:
    import datetime as dt
    import os

    from ._records import SessionPage

__all__ = ["AsyncJSONSession"]


class AsyncJSONSession(AsyncSessionBase):
    """Keep agent-session state in one JSON file per session under a folder, from async code.

    The same files, guarantees and arguments as :class:`~statekeeper.JSONSession`
    (both can share one folder). Every file operation runs in a worker thread
    (``asyncio.to_thread``), so the event loop never waits on the disk;
    ``state_dict()`` and ``load_state_dict()`` run on the loop's thread.

    Args:
        save_dir: the folder holding the sessions; created if missing.
        app_name: isolates apps sharing one folder (a sub-folder each).
        ttl: seconds or a ``timedelta``; a session neither saved nor loaded for
            that long expires and reads as absent. ``None``: never. With a
            ``ttl``, a load rewrites the session's file to move its expiry.

    Raises:
        ValueError: a setting is invalid.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        *,
        app_name: str = "",
        ttl: float | dt.timedelta | None = None,
    ) -> None:
        self._sync = JSONSession(save_dir, app_name=app_name, ttl=ttl)
        self._app = app_name

    @property
    def save_dir(self) -> str:
        """The absolute path of the folder holding the sessions."""
        return self._sync.save_dir

    async def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        check_ids(user_id, session_id)  # before any state_dict() runs, as the sync twin
        states = collect_states(modules)  # on the loop's thread; the write in a worker
        await asyncio.to_thread(self._sync.merge_state, session_id, states, user_id)

    async def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        state = await self.get_state(session_id, user_id)
        apply_loaded(state, session_id, user_id, self._app, allow_not_exist, modules)

    async def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        return await asyncio.to_thread(self._sync.get_state, session_id, user_id)

    async def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        return await asyncio.to_thread(
            self._sync.set_state, session_id, state, user_id, expected_version=expected_version
        )

    async def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        return await asyncio.to_thread(
            self._sync.merge_state, session_id, modules, user_id, expected_version=expected_version
        )

    async def delete_session(self, session_id: str, user_id: str = "") -> bool:
        return await asyncio.to_thread(self._sync.delete_session, session_id, user_id)

    async def session_exists(self, session_id: str, user_id: str = "") -> bool:
        return await asyncio.to_thread(self._sync.session_exists, session_id, user_id)

    async def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        return await asyncio.to_thread(
            self._sync.list_sessions, user_id, limit=limit, cursor=cursor
        )

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self._sync.purge_expired)

    async def close(self) -> None:
        self._sync.close()
