"""``AsyncSqlSession``: the async SQL store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from ._sql.core import StoreCore
from ._sql.runner import AsyncRunner
from .base import AsyncSessionBase

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    import sqlalchemy as sa

    from ._records import SessionPage

__all__ = ["AsyncSqlSession"]

T = TypeVar("T")


class AsyncSqlSession(AsyncSessionBase):
    """Keep agent-session state in SQLite or PostgreSQL, from async code.

    Args:
        url_or_engine: a database URL (``"sqlite:///sessions.db"``,
            ``"postgresql://user@host/db"``, a ``sqlalchemy.URL``) or an existing
            ``AsyncEngine``, which is used as it is and not disposed by :meth:`close`.
            Async stores and services also take a SQLite ``sqlalchemy.Engine``
            (pysqlite; not one of ``SingletonThreadPool`` or ``StaticPool``) and
            run each call whole in a worker thread, as they do on a SQLite URL.
        app_name: isolates apps sharing one database, like a key prefix.
        ttl: seconds or a ``timedelta``; a session neither saved nor loaded for
            that long expires and reads as absent. ``None``: never.
        schema: PostgreSQL schema holding the tables.
        auto_migrate: upgrade the database to the code's schema on first use,
            instead of raising :class:`~statekeeper.errors.SchemaNotReadyError`.
        engine_options: extra ``create_engine`` arguments (pool size, echo, ...)
            for the engine made from a URL; stores on the same URL and options
            share that engine. ``isolation_level`` is refused: the store runs in
            autocommit. Ignored for an AsyncEngine.

    Raises:
        ValueError: a setting is invalid or the database is not supported.
        TypeError: ``url_or_engine`` is neither a URL nor an engine of this twin's kind.
        ImportError: the database driver is missing; the message names the extra.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine | sa.Engine,
        *,
        app_name: str = "",
        ttl: float | dt.timedelta | None = None,
        schema: str | None = None,
        auto_migrate: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._run = AsyncRunner(
            url_or_engine,
            schema=schema,
            auto_migrate=auto_migrate,
            engine_options=engine_options,
            kind="AsyncSqlSession",
        )
        self._core = StoreCore(self._run.dialect, app_name=app_name, ttl=ttl, schema=schema)

    @property
    def engine(self) -> AsyncEngine | sa.Engine:
        """The engine the store's statements run on (its connections in autocommit).

        The engine given, or the one made from the URL. Async stores and services
        on SQLite from a URL run on a sync ``sqlalchemy.Engine`` (pysqlite), each
        call whole in one worker thread on a connection of its pool: listen for
        its events on it, as on any ``Engine`` (on an async engine, on its
        ``sync_engine``).
        """
        return self._run.engine

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
        await self._run.close()
