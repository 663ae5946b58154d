"""``AsyncSqlSession``: the async SQL store."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from . import _engine
from ._drivers import arun
from ._store import StoreCore
from .base import AsyncSessionBase

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    import sqlalchemy as sa

    from ._ops import Op
    from ._records import SessionPage

__all__ = ["AsyncSqlSession"]

T = TypeVar("T")


class AsyncSqlSession(AsyncSessionBase):
    """Keep agent-session state in SQLite or PostgreSQL, from async code.

    Args:
        url_or_engine: a database URL (``"sqlite:///sessions.db"``,
            ``"postgresql://user@host/db"``, a ``sqlalchemy.URL``) or an existing
            ``AsyncEngine``, which is used as it is and not disposed by :meth:`close`.
        app_name: isolates apps sharing one database, like a key prefix.
        ttl: seconds or a ``timedelta``; a session neither saved nor loaded for
            that long expires and reads as absent. ``None``: never.
        schema: PostgreSQL schema holding the tables.
        auto_migrate: upgrade the database to the code's schema on first use,
            instead of raising :class:`~statekeeper.errors.SchemaNotReadyError`.
        engine_options: extra ``create_engine`` arguments (ignored for an AsyncEngine).

    Raises:
        ValueError: a setting is invalid or the database is not supported.
        ImportError: the database driver is missing; the message names the extra.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine,
        *,
        app_name: str = "",
        ttl: float | dt.timedelta | None = None,
        schema: str | None = None,
        auto_migrate: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._owned_engine: AsyncEngine | None = None
        if isinstance(url_or_engine, AsyncEngine):
            engine = url_or_engine
        else:
            engine = self._owned_engine = _engine.async_engine(url_or_engine, engine_options)
        self._core = StoreCore(
            engine,
            owned=self._owned_engine is not None,
            app_name=app_name,
            ttl=ttl,
            schema=schema,
            auto_migrate=auto_migrate,
        )
        self._engine = self._core.bind(engine)
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store runs on."""
        return self._engine

    async def _run(self, op: Op[T]) -> T:
        if not self._ready:
            await self._prepare()
        return await arun(self._engine, op, self._core.compiler)

    async def _prepare(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            if self._core.auto_migrate:
                from .migrations import aupgrade

                await aupgrade(self._engine, schema=self._core.schema)
            await arun(self._engine, self._core.check_schema(), self._core.compiler)
            self._ready = True

    async def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        await self._run(self._core.save(user_id, session_id, modules))

    async def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        state = await self._run(self._core.get(user_id, session_id))
        self._core.apply_loaded(state, session_id, user_id, allow_not_exist, modules)

    async def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        return await self._run(self._core.get(user_id, session_id))

    async def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        return await self._run(self._core.set(user_id, session_id, state, expected_version))

    async def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        return await self._run(self._core.merge(user_id, session_id, modules, expected_version))

    async def delete_session(self, session_id: str, user_id: str = "") -> bool:
        return await self._run(self._core.delete(user_id, session_id))

    async def session_exists(self, session_id: str, user_id: str = "") -> bool:
        return await self._run(self._core.exists(user_id, session_id))

    async def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        return await self._run(self._core.list(user_id, limit, cursor))

    async def purge_expired(self) -> int:
        return await self._run(self._core.purge())

    async def close(self) -> None:
        if self._owned_engine is not None:
            await self._owned_engine.dispose()
