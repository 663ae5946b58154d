"""What ``statekeeper import`` reads (AgentScope 1.x folders and Redis keys) and how it writes.

A source yields :class:`Item` records, each able to load its state on its own,
so one unreadable file is reported by name and the rest go on.
:func:`import_items` writes them into a store: a session is created only if
absent (``expected_version=0``); one already holding the same state counts as
unchanged, so running an import twice changes nothing; one holding another
state is left alone unless ``overwrite``. Every written state is read back
and compared with the source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..base import SessionBase
from ..errors import ConflictError, StatekeeperError

__all__ = [
    "Item",
    "Summary",
    "read_folder",
    "read_redis",
    "import_items",
    "differs",
    "iter_errors",
]


@dataclass(frozen=True, slots=True)
class Item:
    """One session of a source: where it comes from, its ids, and how to load its state."""

    source: str
    user_id: str
    session_id: str
    load: Callable[[], Any]


@dataclass(slots=True)
class Summary:
    """What an import did: counts, and the reason of every session not imported."""

    imported: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many sessions the source held."""
        return self.imported + self.unchanged + len(self.skipped) + len(self.failed)


def read_folder(folder: str, *, split_user: bool) -> list[Item]:
    """List the sessions of an AgentScope ``JSONSession`` folder (``*.json`` files).

    AgentScope names a file ``{session_id}.json``, or ``{user_id}_{session_id}.json``
    for a user: a name cannot tell the two apart, so with ``split_user`` the
    stem is split at its first ``_``, and otherwise it is the session id of
    the default user ``""``.
    """
    if not os.path.isdir(folder):
        raise ValueError(f"{folder!r} is not a folder; pass the JSONSession's save_dir")
    items = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(".json") or not os.path.isfile(path):
            continue
        stem = name[: -len(".json")]
        user, session = stem.split("_", 1) if split_user and "_" in stem else ("", stem)
        items.append(Item(path, user, session, _json_loader(path)))
    return items


def _json_loader(path: str) -> Callable[[], Any]:
    def load() -> Any:
        with open(path, encoding="utf-8", errors="surrogatepass") as file:
            return json.load(file)

    return load


def read_redis(client: Any, key_prefix: str) -> list[Item]:
    """List the sessions an AgentScope 1.x ``RedisSession`` keeps under ``key_prefix``.

    Keys are ``{key_prefix}user_id:{user_id}:session:{session_id}:state``;
    they are found with ``SCAN`` (an import is a one-off walk of the keyspace).
    """
    head, tail = f"{key_prefix}user_id:", ":state"
    items = []
    for raw in client.scan_iter(match=_glob_escape(head) + "*" + _glob_escape(tail), count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        user, sep, session = key[len(head) : -len(tail)].partition(":session:")
        if sep:
            items.append(Item(key, user, session, _redis_loader(client, key)))
    items.sort(key=lambda i: i.source)
    return items


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redis_loader(client: Any, key: str) -> Callable[[], Any]:
    def load() -> Any:
        raw = client.get(key)
        if raw is None:
            raise ValueError("the key disappeared during the import")
        return json.loads(raw)

    return load


def import_items(
    items: list[Item],
    store: SessionBase,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Write every item into ``store``; return what happened to each.

    Into a :class:`~statekeeper.SqlSession` sessions are written in batches
    (``_import_sql``); into other stores, and in a dry run, one by one.
    """
    from .._import_sql import BATCH, write_batch
    from ..sql import SqlSession

    summary = Summary()
    sql = store if isinstance(store, SqlSession) and not dry_run else None
    batch: list[tuple[Item, dict[str, Any]]] = []
    written = []
    pending = 0
    if sql is not None:
        sql.session_exists("-")  # the store's first call checks the schema is ready
    for item in items:
        pending += 1
        try:
            state = item.load()
            if not isinstance(state, dict):
                raise ValueError(f"the state is a JSON {type(state).__name__}, not an object")
            if sql is not None:
                batch.append((item, state))
            elif _import_one(item, state, store, summary, dry_run, overwrite):
                written.append((item, state))
        except (OSError, ValueError, StatekeeperError) as exc:
            summary.failed.append((item.source, _reason(exc)))
        if sql is None or len(batch) >= BATCH:
            if sql is not None:
                write_batch(sql, batch, summary, overwrite)
                batch = []
            progress(pending)
            pending = 0
    if sql is not None and batch:
        write_batch(sql, batch, summary, overwrite)
    if pending:
        progress(pending)
    for item, state in written:  # the check: every written state, read back
        if store.get_state(item.session_id, item.user_id) != state:
            summary.imported -= 1
            summary.failed.append((item.source, "the state read back differs from the source"))
    return summary


def _import_one(
    item: Item,
    state: dict[str, Any],
    store: SessionBase,
    summary: Summary,
    dry_run: bool,
    overwrite: bool,
) -> bool:
    """Import one session; return whether it was written."""
    if dry_run:
        from .. import codec

        codec.encode_modules(state)  # would it encode? (raises StateEncodingError)
        stored = store.get_state(item.session_id, item.user_id)
        if stored is None:
            summary.imported += 1
        elif stored == state:
            summary.unchanged += 1
        elif overwrite:
            summary.imported += 1
        else:
            summary.skipped.append((item.source, differs(item)))
        return False
    try:
        store.set_state(item.session_id, state, item.user_id, expected_version=0)
        summary.imported += 1
        return True
    except ConflictError:
        pass
    if store.get_state(item.session_id, item.user_id) == state:
        summary.unchanged += 1
        return False
    if overwrite:
        store.set_state(item.session_id, state, item.user_id)
        summary.imported += 1
        return True
    summary.skipped.append((item.source, differs(item)))
    return False


def differs(item: Item) -> str:
    """The reason a session that exists with another state was skipped."""
    return (
        f"session {item.session_id!r} of user {item.user_id!r} already exists with another "
        "state (pass --overwrite to replace it)"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: {exc}"
    return str(exc)


def iter_errors(summary: Summary) -> Iterator[str]:
    """Yield one line per session skipped or failed."""
    for source, reason in summary.skipped:
        yield f"skipped {source}: {reason}"
    for source, reason in summary.failed:
        yield f"failed {source}: {reason}"
