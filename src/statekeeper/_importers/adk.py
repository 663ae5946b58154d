"""``statekeeper import adk-database``: Google ADK's session tables into the event-log service.

The source is read by ``adk_source``. Each ADK app goes into the
statekeeper app of the same name: an ``app_states`` row becomes the app's
state, a ``user_states`` row that user's state (keys without prefix in
both), so the merged state reads as ADK's; a session keeps its own state,
its events (timestamps exact) and its times, with a version of one per event
more than a create's.

Writes go through the event-log service's import operations
(``ops.imports``, built by ``ServiceCore``): a page of sessions (or of
scoped states) is one transaction. If it fails, each of its items is written
in a transaction of its own, so the one at fault is reported by name and
nothing of it is left half-written. An item already there and equal counts as
unchanged; one there with other contents is skipped unless ``overwrite``.
Every write is read back and compared with the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from .._sql.database import Database
from ..errors import ConflictError
from .adk_source import PAGE, AdkDatabase, AdkScope, AdkSession, Unreadable
from .report import Summary

if TYPE_CHECKING:
    from .._sql.core import ServiceCore
    from .._sql.ops.imports import Verdict, WholeScope, WholeSession
    from .._sql.ops.store import Op

__all__ = ["Outcome", "import_database"]


@dataclass(slots=True)
class Outcome:
    """What an import did to the sessions, and to the app and user states."""

    sessions: Summary = field(default_factory=Summary)
    scopes: Summary = field(default_factory=Summary)

    @property
    def failed(self) -> bool:
        """Whether anything failed."""
        return bool(self.sessions.failed or self.scopes.failed)


_DIFFERS = "it already exists with other contents (pass --overwrite to replace it)"
_READ_BACK = "what was read back differs from the source (written meanwhile?)"
_USER_BATCH = 500
"""Scoped states written per transaction."""

_W = TypeVar("_W", "WholeSession", "WholeScope")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        detail = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        return f"the database refused it: {detail}"
    return str(exc)


class _Target:
    """The statekeeper database, written through each app's event-log service core."""

    def __init__(self, url: str, schema: str | None, dry_run: bool, overwrite: bool) -> None:
        self.run = Database(url, schema=schema, kind="SessionService")
        self.dry_run, self.overwrite = dry_run, overwrite
        try:
            # Now, before the source is read: not at head raises SchemaNotReadyError.
            self.run.check()
        except BaseException:
            self.run.close()
            raise

    def _core(self, app: str) -> ServiceCore:
        return self.run.service(app)

    def sessions(self, app: str, items: list[AdkSession], summary: Summary) -> None:
        """Import a batch of one app's sessions, counting each in ``summary``."""

        def whole(core: ServiceCore, item: AdkSession) -> WholeSession:
            return core.whole_session(
                item.session_id, item.user_id, item.state, item.events, item.times
            )

        def write(core: ServiceCore, batch: list[WholeSession], dry: bool) -> Op[list[Verdict]]:
            return core.import_sessions(batch, self.overwrite, dry)

        self._import(app, [(i.source, i) for i in items], whole, write, summary)

    def scopes(self, app: str, items: list[AdkScope], summary: Summary) -> None:
        """Import a batch of one app's app and user states, counting each in ``summary``."""

        def whole(core: ServiceCore, item: AdkScope) -> WholeScope:
            return core.whole_scope(item.user_id, item.state)

        def write(core: ServiceCore, batch: list[WholeScope], dry: bool) -> Op[list[Verdict]]:
            return core.import_scopes(batch, self.overwrite, dry)

        self._import(app, [(i.source, i) for i in items], whole, write, summary)

    def _import(
        self,
        app: str,
        items: list[tuple[str, Any]],
        whole: Callable[[ServiceCore, Any], _W],
        write: Callable[[ServiceCore, list[_W], bool], Op[list[Verdict]]],
        summary: Summary,
    ) -> None:
        """Check and encode each item, write the batch, read what was written back."""
        try:
            core = self._core(app)
        except ValueError as exc:
            summary.failed.extend((source, str(exc)) for source, _ in items)
            return
        pairs: list[tuple[str, _W]] = []
        for source, item in items:
            try:
                pairs.append((source, whole(core, item)))
            except (ValueError, TypeError) as exc:  # StateEncodingError and bad ids included
                summary.failed.append((source, str(exc)))
        done = self._write(core, write, pairs)
        imported = [(source, w) for source, w, verdict in done if verdict == "imported"]
        wrong: set[str] = set()
        if imported and not self.dry_run:  # the check: what was written, read back
            back = self.run(write(core, [w for _, w in imported], True))
            wrong = {
                source for (source, _), v in zip(imported, back, strict=True) if v != "unchanged"
            }
        for source, _, verdict in done:
            if verdict == "unchanged":
                summary.unchanged += 1
            elif verdict == "differs":
                summary.skipped.append((source, _DIFFERS))
            elif verdict != "imported":
                summary.failed.append((source, verdict))
            elif source in wrong:
                summary.failed.append((source, _READ_BACK))
            else:
                summary.imported += 1

    def _write(
        self,
        core: ServiceCore,
        write: Callable[[ServiceCore, list[_W], bool], Op[list[Verdict]]],
        pairs: list[tuple[str, _W]],
    ) -> list[tuple[str, _W, str]]:
        """Write a batch in one transaction; if it fails, each item in its own, to say which.

        Each result is the item's verdict, or the reason it failed.
        """
        if not pairs:
            return []
        try:
            verdicts = self.run(write(core, [w for _, w in pairs], self.dry_run))
        except (ValueError, ConflictError, sa.exc.DBAPIError) as exc:
            if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
                raise
            if len(pairs) == 1:
                return [(pairs[0][0], pairs[0][1], _reason(exc))]
            return [done for pair in pairs for done in self._write(core, write, [pair])]
        return [(source, w, v) for (source, w), v in zip(pairs, verdicts, strict=True)]

    def close(self) -> None:
        """Release the target's connections."""
        self.run.close()


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive items of one app (or unreadable ones), at most ``size`` at a time."""
    batch: list[Any] = []
    for item in items:
        if batch and (
            len(batch) >= size
            or isinstance(item, Unreadable) != isinstance(batch[0], Unreadable)
            or (not isinstance(item, Unreadable) and item.app_name != batch[0].app_name)
        ):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def import_database(
    source: AdkDatabase,
    to_url: str,
    *,
    schema: str | None = None,
    app: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    started: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
) -> Outcome:
    """Import ``source`` (every app, or only ``app``) into the statekeeper database ``to_url``.

    App and user states go first, then the sessions, a page of them per
    transaction; ``started`` is told the number of sessions, ``progress``
    how many more are done.

    Raises:
        SchemaNotReadyError: ``to_url`` is not migrated (checked before anything is read).
        ValueError: ``app`` has nothing in the source; the message lists its apps.
    """
    target = _Target(to_url, schema, dry_run, overwrite)
    try:
        total = source.count_sessions(app)
        if app is not None and total == 0:
            apps = source.apps()
            if app not in apps:
                listed = ", ".join(repr(a) for a in apps) or "none"
                raise ValueError(f"{source.url} holds no ADK app {app!r} (its apps: {listed})")
        outcome = Outcome()
        scopes = (s for s in source.scopes(app) if isinstance(s, Unreadable) or s.state)
        for batch in _batches(scopes, _USER_BATCH):
            if isinstance(batch[0], Unreadable):
                outcome.scopes.failed.extend((u.source, u.reason) for u in batch)
            else:
                target.scopes(batch[0].app_name, batch, outcome.scopes)
        started(total)
        for batch in _batches(source.sessions(app), PAGE):
            if isinstance(batch[0], Unreadable):
                outcome.sessions.failed.extend((u.source, u.reason) for u in batch)
            else:
                target.sessions(batch[0].app_name, batch, outcome.sessions)
            progress(len(batch))
        return outcome
    finally:
        target.close()
