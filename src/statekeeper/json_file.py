"""``JSONSession``: one JSON file per session in a folder, from sync code."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from . import _json_files as _files
from . import codec
from ._records import SessionInfo, SessionPage
from ._rules import (
    apply_loaded,
    check_cursor,
    check_expected,
    check_ids,
    check_limit,
    collect_states,
    conflict,
    decode_cursor,
    encode_cursor,
    encoded_entries,
    ttl_delta,
    validate_id,
)
from .base import SessionBase
from .errors import StatekeeperError, StoreClosedError

__all__ = ["JSONSession"]

logger = logging.getLogger("statekeeper")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_STALE_TEMP_SECONDS = 3600.0


_H = TypeVar("_H", "_files.Header | None", "tuple[_files.Header, str] | None")


def _now_us() -> int:
    return time.time_ns() // 1000


def _stamp(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


class JSONSession(SessionBase):
    """Keep agent-session state in one JSON file per session under a folder, from sync code.

    Writes are atomic (a temp file flushed to disk, then renamed over the old
    one) and serialized across threads and processes by file locks, so a
    reader or a crash sees the old state or the new one, and concurrent
    writers of different modules both survive. Ids are encoded into safe file
    names: no id can name a path outside ``save_dir``.

    Listing and purging read the header line of every session file of the
    app (or of the user): they cost time in proportion to the number of
    sessions stored, unlike the SQL and Redis stores' indexes.

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
        validate_id(app_name, "app_name", allow_empty=True)
        delta = ttl_delta(ttl)
        self._ttl_us = None if delta is None else delta // dt.timedelta(microseconds=1)
        self._app = app_name
        self._root = os.path.abspath(os.fspath(save_dir))
        os.makedirs(self._root, exist_ok=True)
        self._closed = False

    @property
    def save_dir(self) -> str:
        """The absolute path of the folder holding the sessions."""
        return self._root

    # ------------------------------------------------------------------ helpers

    def _path(self, user_id: str, session_id: str) -> str:
        if self._closed:
            raise StoreClosedError(
                f"this JSONSession on {self._root!r} was closed; create a new one to keep working"
            )
        check_ids(user_id, session_id)
        return _files.session_path(self._root, self._app, user_id, session_id)

    def _check(self, found: _H, path: str, user_id: str, session_id: str) -> _H:
        header = found if found is None or isinstance(found, _files.Header) else found[0]
        if header is not None and (header.app_name, header.user_id, header.session_id) != (
            self._app,
            user_id,
            session_id,
        ):
            raise StatekeeperError(
                f"{path} holds session {header.session_id!r} of user {header.user_id!r} "
                f"(app {header.app_name!r}), not session {session_id!r} of user {user_id!r}: "
                "the file was moved or copied by hand; move it back or delete it"
            )
        return found

    def _expires(self, now_us: int) -> int | None:
        return None if self._ttl_us is None else now_us + max(self._ttl_us, 1)

    def _write(
        self,
        user_id: str,
        session_id: str,
        entries: Mapping[str, str],
        merge: bool,
        expected: int | None,
    ) -> int:
        path = self._path(user_id, session_id)
        expected = check_expected(expected)
        with _files.lock(self._root, path):
            now_us = _now_us()
            header = self._check(_files.read_header(path), path, user_id, session_id)
            live = header is not None and header.live(now_us)
            actual = header.version if header is not None and live else 0
            if expected is not None and expected != actual:
                raise conflict(expected, actual, session_id)
            if (
                merge
                and header is not None
                and live
                and any(name not in entries for name, _, _ in header.parts)
            ):
                stored = _files.read(path)
                if stored is not None:  # only this lock's holder replaces the file
                    kept = _files.module_texts(*stored)
                    entries = {**kept, **entries}
            body, parts = _files.body_and_parts(entries)
            created = header.created if header is not None and live else now_us
            updated = max(now_us, header.updated + 1) if header is not None and live else now_us
            new = _files.Header(
                self._app,
                user_id,
                session_id,
                actual + 1,
                created,
                updated,
                self._expires(now_us),
                parts,
            )
            _files.write(path, new, body)
        return actual + 1

    # ------------------------------------------------------------------ the store API

    def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        self._path(user_id, session_id)
        states = collect_states(modules)
        self._write(user_id, session_id, codec.encode_entries(states), True, None)

    def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        state = self.get_state(session_id, user_id)
        apply_loaded(state, session_id, user_id, self._app, allow_not_exist, modules)

    def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        path = self._path(user_id, session_id)
        if self._ttl_us is None:
            stored = self._check(_files.read(path), path, user_id, session_id)
            if stored is None or not stored[0].live(_now_us()):
                return None
            return _files.decode_body(stored[1])
        with _files.lock(self._root, path):  # a load moves the expiry: a write
            stored = self._check(_files.read(path), path, user_id, session_id)
            now_us = _now_us()
            if stored is None or not stored[0].live(now_us):
                return None
            header, body = stored
            _files.write(
                path,
                _files.Header(
                    header.app_name,
                    header.user_id,
                    header.session_id,
                    header.version,
                    header.created,
                    header.updated,
                    self._expires(now_us),
                    header.parts,
                ),
                body,
            )
        return _files.decode_body(body)

    def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        self._path(user_id, session_id)
        entries = encoded_entries(state, "state")
        return self._write(user_id, session_id, entries, False, expected_version)

    def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        self._path(user_id, session_id)
        entries = encoded_entries(modules, "modules")
        return self._write(user_id, session_id, entries, True, expected_version)

    def delete_session(self, session_id: str, user_id: str = "") -> bool:
        path = self._path(user_id, session_id)
        with _files.lock(self._root, path):
            header = self._check(_files.read_header(path), path, user_id, session_id)
            if header is None:
                return False
            _files.remove(path)
            return header.live(_now_us())

    def session_exists(self, session_id: str, user_id: str = "") -> bool:
        path = self._path(user_id, session_id)
        header = self._check(_files.read_header(path), path, user_id, session_id)
        return header is not None and header.live(_now_us())

    def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        self._path("", "-")  # the closed check
        if user_id is not None:
            validate_id(user_id, "user_id", allow_empty=True)
        limit = check_limit(limit)
        cursor = check_cursor(cursor)
        after = None if cursor is None else decode_cursor(cursor, user_id)
        if user_id is None:
            folder = _files.app_dir(self._root, self._app)
        else:
            folder = _files.user_dir(self._root, self._app, user_id)
        now_us = _now_us()
        items = []
        for header in self._headers(folder):
            if header.app_name != self._app or not header.live(now_us):
                continue
            if user_id is not None and header.user_id != user_id:
                continue  # a longer user id whose folder nests in this one's
            info = SessionInfo(
                self._app,
                header.user_id,
                header.session_id,
                header.version,
                _stamp(header.created),
                _stamp(header.updated),
                None if header.expires is None else _stamp(header.expires),
            )
            if after is None or (info.updated_at, info.user_id, info.session_id) < after:
                items.append(info)
        items.sort(key=lambda i: (i.updated_at, i.user_id, i.session_id), reverse=True)
        page = tuple(items[:limit])
        next_cursor = encode_cursor(page[-1]) if len(items) > limit else None
        return SessionPage(page, next_cursor)

    def _headers(self, folder: str) -> list[_files.Header]:
        headers = []
        for path in _files.session_files(folder):
            try:
                header = _files.read_header(path)
            except (ValueError, UnicodeDecodeError) as exc:
                logger.warning("skipping %s: not a statekeeper session file (%s)", path, exc)
                continue
            if header is not None:
                headers.append(header)
        return headers

    def purge_expired(self) -> int:
        self._path("", "-")  # the closed check
        folder = _files.app_dir(self._root, self._app)
        count = 0
        for header in self._headers(folder):
            if header.app_name != self._app or header.live(_now_us()):
                continue
            path = _files.session_path(self._root, self._app, header.user_id, header.session_id)
            with _files.lock(self._root, path):
                current = _files.read_header(path)
                if current is not None and not current.live(_now_us()):
                    _files.remove(path)
                    count += 1
        for path in _files.stale_temp_files(folder, time.time() - _STALE_TEMP_SECONDS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a writer that died before its rename
        return count

    def close(self) -> None:
        self._closed = True
