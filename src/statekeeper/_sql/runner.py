"""What every SQL store does around its operations: the engine, the first-use check, close.

A store's first call reads the database's revision (one cheap query); at
head, that is all, and later stores on the same engine and schema (a store
per request on a shared engine) skip even that read. Otherwise, with
``auto_migrate=True``, the store upgrades the database under the
process-wide migration lock, on a connection of its own, re-reading the
revision first so a database is migrated once however many stores start
together. After ``close()`` every call raises
:class:`~statekeeper.errors.StoreClosedError`.

An async runner on SQLite holds a sync engine (``engine``; made from a URL,
or a caller's pysqlite ``Engine``): its operations, first-use read and
upgrade run in a worker thread each.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import SchemaNotReadyError, StoreClosedError
from . import engine as _engine
from . import fork as _fork
from .driver import arun, guard_cancellation, in_thread, run, settle
from .ops import store as _ops
from .schema import HEAD_REVISION

__all__ = ["AsyncRunner", "Runner"]

T = TypeVar("T")
E = TypeVar("E", bound="sa.Engine | AsyncEngine")


def _bind(engine: E, schema: str | None, owned: bool) -> E:
    """Return the engine operations run on: autocommit, statekeeper's schema mapped."""
    options: dict[str, Any] = {}
    if not owned:  # a caller's engine: autocommit on our connections only
        options["isolation_level"] = "AUTOCOMMIT"
    if schema is not None:
        options["schema_translate_map"] = {None: schema}
    return cast("E", engine.execution_options(**options)) if options else engine


def _problem(found: str | None, url: str, schema: str | None) -> str | None:
    from . import migrate  # Alembic is imported only when a store first checks

    where = url + (f" (schema {schema})" if schema else "")
    return migrate.not_ready_message(found, where, migrate.upgrade_command(url, schema))


def _should_migrate(found: str | None) -> bool:
    from . import migrate

    return found != HEAD_REVISION and (found is None or found in migrate.known_revisions())


def _sqlite_engine(engine: sa.Engine, kind: str) -> sa.Engine:
    """Return a caller's sync SQLite ``engine`` for an async store, or refuse its pool.

    Each call runs in whichever worker thread is free: a pool that keeps one
    connection per thread (SQLAlchemy's default for ``sqlite://``) would give
    each thread its own, empty, in-memory database, and one that shares a
    single connection among threads would interleave their transactions.
    """
    if isinstance(engine.pool, (sa.pool.SingletonThreadPool, sa.pool.StaticPool)):
        raise ValueError(
            f"{kind} runs each call in a worker thread, and this SQLite engine's "
            f"{type(engine.pool).__name__} gives each thread its own connection (for an "
            "in-memory database, its own database) or one connection to all at once. "
            'Pass the URL instead ("sqlite://" is one in-memory database for the store), '
            "or an engine with a QueuePool"
        )
    return engine


def _take(
    url_or_engine: object,
    engine_options: Any,
    kind: str,
    engine_type: type,
    acquire: Callable[[str | sa.URL, Any], tuple[E, Callable[[], Any]]],
    twin_type: type,
) -> tuple[E, Callable[[], Any] | None]:
    """Return the caller's engine (no release), or the shared one for a URL and its release."""
    if isinstance(url_or_engine, engine_type):
        return cast("E", url_or_engine), None
    if isinstance(url_or_engine, (str, sa.URL)):
        return acquire(url_or_engine, engine_options)
    hint = ""
    if isinstance(url_or_engine, twin_type):
        twin = kind.removeprefix("Async") if kind.startswith("Async") else f"Async{kind}"
        hint = f": that engine is for the twin {twin}"
    raise TypeError(
        f"{kind} needs a database URL or a sqlalchemy {engine_type.__name__}, "
        f"got {type(url_or_engine).__name__}{hint}"
    )


class _Base(Generic[E]):
    """The parts of a runner that do no I/O."""

    def __init__(
        self,
        engine: E,
        release: Callable[[], Any] | None,
        *,
        ctx_dialect: str,
        schema: str | None,
        auto_migrate: bool,
        kind: str,
    ) -> None:
        self.engine: E = _bind(engine, schema, owned=release is not None)
        # Made from a URL: checked on checkout without a round trip, so a call
        # that met a connection the server had just ended is sent again (driver).
        self._resend = release is not None
        self._base_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        _fork.guard(self._base_engine)  # owned or the caller's: no connection crosses a fork
        self.schema = schema
        self.auto_migrate = auto_migrate
        self.url = _engine.safe_url(engine.url)
        self._kind = kind
        self.dialect = ctx_dialect
        self._ctx = _ops.Context(ctx_dialect, "", None)
        self._ready = _engine.found_at_head(self._base_engine, schema)
        self._closed = False
        # A store dropped without close() still gives its share of the engine back.
        self._release = None if release is None else weakref.finalize(self, release)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(
                f"this {self._kind} on {self.url} is closed; create a new one to keep working"
            )

    def _settle(self, found: str | None) -> None:
        """Raise unless revision ``found`` is head; else the runner (and its engine) are ready."""
        message = _problem(found, self.url, self.schema)
        if message is not None:
            raise SchemaNotReadyError(message)
        _engine.record_at_head(self._base_engine, self.schema)
        self._ready = True

    def _upgrade(self, engine: sa.Engine) -> str | None:
        """Upgrade a sync engine's database under the Alembic lock; return its revision then.

        The revision is read again under the lock: another store may have upgraded.
        """
        from . import migrate

        def revision() -> str | None:
            return run(engine, _ops.schema_revision(self._ctx), resend=self._resend)

        with migrate.alembic_lock():
            found = revision()
            if _should_migrate(found):
                migrate.upgrade_unlocked(engine, self.schema)
                found = revision()
        return found

    def _close(self) -> Any:
        """Mark the runner closed; return the engine to dispose, if this was its last user."""
        if self._closed:
            return None
        self._closed = True
        return None if self._release is None else self._release()


class Runner(_Base[sa.Engine]):
    """Run a sync store's operations on its engine."""

    def __init__(
        self,
        url_or_engine: str | sa.URL | sa.Engine,
        *,
        schema: str | None,
        auto_migrate: bool,
        engine_options: Any,
        kind: str,
    ) -> None:
        """Take the caller's engine, or the shared engine for a URL."""
        engine, release = _take(
            url_or_engine, engine_options, kind, sa.Engine, _engine.acquire_sync, AsyncEngine
        )
        super().__init__(
            engine,
            release,
            ctx_dialect=_engine.check_dialect(engine.dialect.name),
            schema=schema,
            auto_migrate=auto_migrate,
            kind=kind,
        )
        self._lock = _fork.ForkLock()

    def __call__(self, op: _ops.Op[T]) -> T:
        """Run ``op``, checking the schema on first use."""
        self._check_open()
        if not self._ready:
            self._prepare()
        return run(self.engine, op, resend=self._resend)

    def _revision(self) -> str | None:
        return run(self.engine, _ops.schema_revision(self._ctx), resend=self._resend)

    def _prepare(self) -> None:
        with self._lock:
            if self._ready:
                return
            found = self._revision()
            if self.auto_migrate and _should_migrate(found):
                found = self._upgrade(self.engine)
            self._settle(found)

    def close(self) -> None:
        """Refuse further calls; dispose of the engine if this was its last user."""
        engine = self._close()
        if engine is not None:
            engine.dispose()


class AsyncRunner(_Base["AsyncEngine | sa.Engine"]):
    """Run an async store's operations on its engine (SQLite from a URL: in a thread each)."""

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine | sa.Engine,
        *,
        schema: str | None,
        auto_migrate: bool,
        engine_options: Any,
        kind: str,
    ) -> None:
        """Take the caller's engine, or the shared engine for a URL (PostgreSQL: this loop's)."""
        engine: AsyncEngine | sa.Engine
        if isinstance(url_or_engine, sa.Engine) and url_or_engine.dialect.name == "sqlite":
            engine, release = _sqlite_engine(url_or_engine, kind), None
        else:
            engine, release = _take(
                url_or_engine, engine_options, kind, AsyncEngine, _engine.acquire_async, sa.Engine
            )
        super().__init__(
            engine,
            release,
            ctx_dialect=_engine.check_dialect(engine.dialect.name),
            schema=schema,
            auto_migrate=auto_migrate,
            kind=kind,
        )
        self._lock: asyncio.Lock | None = None
        guard_cancellation(self.engine)

    async def __call__(self, op: _ops.Op[T]) -> T:
        """Run ``op``, checking the schema on first use."""
        self._check_open()
        if not self._ready:
            await self._prepare()
        return await arun(self.engine, op, resend=self._resend)

    async def _revision(self) -> str | None:
        return await arun(self.engine, _ops.schema_revision(self._ctx), resend=self._resend)

    async def _prepare(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._ready:
                return
            found = await self._revision()
            if self.auto_migrate and _should_migrate(found):
                from . import migrate

                if isinstance(self.engine, sa.Engine):
                    # The thread takes the lock itself: a cancelled caller cannot
                    # release it while the upgrade still runs.
                    found = await in_thread(self._upgrade, self.engine)
                else:
                    async with migrate.aalembic_lock():
                        found = await self._revision()
                        if _should_migrate(found):
                            await migrate.aupgrade_unlocked(self.engine, self.schema)
                            found = await self._revision()
            self._settle(found)

    async def close(self) -> None:
        """Refuse further calls; dispose of the engine if this was its last user."""
        engine = self._close()
        await settle()  # the operations of cancelled calls end first
        if isinstance(engine, sa.Engine):
            engine.dispose()  # SQLite: closing its pooled files does not wait on anything
        elif engine is not None:
            await engine.dispose()
