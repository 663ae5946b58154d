"""What ``statekeeper import`` reads (AgentScope 1.x folders and Redis keys) and how it writes.

A source yields :class:`Item` records, each able to load its state on its own,
so one unreadable file is reported by name and the rest go on.
:func:`import_items` writes them into an app of a database, a batch of
sessions in a few statements: a session is created only if absent; one
already holding the same state counts as unchanged, so running an import
twice changes nothing; one holding another state is left alone unless
``overwrite``. Every written state is read back and compared with the source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import codec
from .._rules import check_ids
from .._sql.database import Database
from ..errors import StatekeeperError
from .report import Summary

__all__ = ["BATCH", "Item", "differs", "import_items", "read_folder", "read_redis"]

BATCH = 500
"""Sessions per batch."""


@dataclass(frozen=True, slots=True)
class Item:
    """One session of a source: where it comes from, its ids, and how to load its state."""

    source: str
    user_id: str
    session_id: str
    load: Callable[[], Any]


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
    database: Database,
    app_name: str,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Write every item into the app ``app_name`` of ``database``; return what happened to each.

    Sessions are written :data:`BATCH` at a time (``Database.import_states``);
    a dry run reads each one and writes nothing.
    """
    summary = Summary()
    core = database.store(app_name)  # an invalid app name fails before anything is read
    if not dry_run:
        database.check()  # and so does a database that is not at head
    batch: list[tuple[Item, dict[str, Any]]] = []
    pending = 0
    for item in items:
        pending += 1
        try:
            state = item.load()
            if not isinstance(state, dict):
                raise ValueError(f"the state is a JSON {type(state).__name__}, not an object")
            if dry_run:
                stored = database(core.get(item.user_id, item.session_id))
                _judge(item, state, stored, overwrite, summary)
            else:
                batch.append((item, state))
        except (OSError, ValueError, StatekeeperError) as exc:
            summary.failed.append((item.source, _reason(exc)))
        if dry_run or len(batch) >= BATCH:
            if batch:
                _write_batch(database, app_name, batch, summary, overwrite)
                batch = []
            progress(pending)
            pending = 0
    if batch:
        _write_batch(database, app_name, batch, summary, overwrite)
    if pending:
        progress(pending)
    return summary


def _judge(
    item: Item, state: dict[str, Any], stored: Any, overwrite: bool, summary: Summary
) -> None:
    """Count what a dry run would do with ``item``, stored as ``stored`` (``None``: absent)."""
    codec.encode_modules(state)  # would it encode? (raises StateEncodingError)
    if stored is None:
        summary.imported += 1
    elif stored == state:
        summary.unchanged += 1
    elif overwrite:
        summary.imported += 1
    else:
        summary.skipped.append((item.source, differs(item)))


def _write_batch(
    database: Database,
    app_name: str,
    batch: list[tuple[Item, dict[str, Any]]],
    summary: Summary,
    overwrite: bool,
) -> None:
    """Import one batch of loaded sessions, counting each in ``summary``."""
    encoded = []
    for item, state in batch:
        try:
            check_ids(item.user_id, item.session_id)
            text = codec.encode_modules(state)
            encoded.append((item, (item.user_id, item.session_id, state, text)))
        except ValueError as exc:  # StateEncodingError included
            summary.failed.append((item.source, str(exc)))
    if not encoded:
        return
    verdicts = database.import_states(app_name, [row for _, row in encoded], overwrite)
    for (item, _), verdict in zip(encoded, verdicts, strict=True):
        if verdict == "imported":
            summary.imported += 1
        elif verdict == "unchanged":
            summary.unchanged += 1
        elif verdict == "differs":
            summary.skipped.append((item.source, differs(item)))
        else:
            summary.failed.append((item.source, verdict))


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
