"""An operator's handle on one statekeeper database: one runner, a core per app.

The ``statekeeper`` command and the importers work on a database as a whole
(every app in it, reads that never refresh an expiry, batched imports)
rather than through one store. A :class:`Database` gives them what a store
has inside (the shared engine, the first-use schema check, autocommit, the
cores that check and encode) without reaching into a store's attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .._rules import now
from .core import ServiceCore, StoreCore
from .ops import imports as import_ops
from .ops import inspect as inspect_ops
from .ops.store import schema_revision
from .runner import Runner

if TYPE_CHECKING:
    from collections.abc import Callable

    import sqlalchemy as sa

    from .._records import SessionPage
    from .ops.store import Op

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    """One statekeeper database as an operator sees it: every app, no store in between."""

    def __init__(
        self, url_or_engine: str | sa.URL | sa.Engine, *, schema: str | None, kind: str
    ) -> None:
        """Take the shared engine for a URL, or the caller's; ``kind`` names it in errors."""
        self.run = Runner(
            url_or_engine, schema=schema, auto_migrate=False, engine_options=None, kind=kind
        )
        self.schema = schema
        self._stores: dict[str, StoreCore] = {}
        self._services: dict[str, ServiceCore] = {}

    @property
    def engine(self) -> sa.Engine:
        """The engine the database is reached on (autocommit, the schema mapped)."""
        return self.run.engine

    def store(self, app_name: str) -> StoreCore:
        """The store core of ``app_name`` (``ValueError`` for an invalid name)."""
        core = self._stores.get(app_name)
        if core is None:
            core = self._stores[app_name] = StoreCore(
                self.run.dialect, app_name=app_name, ttl=None, schema=self.schema
            )
        return core

    def service(self, app_name: str) -> ServiceCore:
        """The event-log service core of ``app_name`` (``ValueError`` for an invalid name)."""
        core = self._services.get(app_name)
        if core is None:
            core = self._services[app_name] = ServiceCore(
                self.run.dialect, app_name=app_name, ttl=None, schema=self.schema
            )
        return core

    def check(self) -> None:
        """Raise :class:`~statekeeper.errors.SchemaNotReadyError` unless the tables are at head."""
        self.run(schema_revision(self.store("").ctx))

    def list_sessions(
        self, app_name: str, user_id: str | None, limit: int, cursor: str | None
    ) -> SessionPage[inspect_ops.ListedSession]:
        """One page of ``sessions ls``: sizes and event counts, no expiry refreshed."""
        return self.run(
            inspect_ops.list_sessions(self.store(app_name).ctx, user_id, limit, cursor, now())
        )

    def read_session(
        self, app_name: str, user_id: str, session_id: str, recent: int | None
    ) -> inspect_ops.SessionView | None:
        """The session ``sessions show`` prints, or ``None``; no expiry refreshed."""
        ctx = self.store(app_name).ctx
        return self.run(inspect_ops.read_session(ctx, user_id, session_id, recent, now()))

    def delete_session(self, app_name: str, user_id: str, session_id: str) -> bool:
        """Delete a session and its events; return whether a live one was there."""
        return self.run(self.store(app_name).delete(user_id, session_id))

    def expired_counts(self, app_name: str | None) -> dict[str, int]:
        """How many sessions have expired, per app (of every app, or of ``app_name``)."""
        return self.run(inspect_ops.expired_counts(self.run.dialect, app_name, now()))

    def purge_expired(self, app_name: str, on_batch: Callable[[int], object]) -> int:
        """Delete the app's expired sessions; ``on_batch`` hears the running count."""
        return self.run(self.store(app_name).purge(on_batch))

    def import_states(
        self,
        app_name: str,
        batch: list[tuple[str, str, dict[str, Any], str]],
        overwrite: bool,
    ) -> list[str]:
        """Write a batch of store sessions; return each one's verdict (``import_ops``)."""
        ctx = self.store(app_name).ctx
        return self.run(import_ops.import_states(ctx, batch, overwrite, now()))

    def __call__(self, op: Op[T]) -> T:
        """Run an operation a core built."""
        return self.run(op)

    def close(self) -> None:
        """Give the engine back (disposed if this was its last user); ``contextlib.closing``."""
        self.run.close()
