"""The file layer of ``JSONSession``: safe names, locks, atomic writes, the file format.

Layout under ``save_dir``::

    a-<app>/u-<user>/s-<session>.json

Each id is encoded injectively into the characters ``a-z 0-9 - _ ^ ~``: an
upper-case letter becomes ``^`` and its lower-case form, any other character
``~`` and six hex digits of its code point. So a name never holds a separator,
a dot, a space or a NUL, two ids differing only in case never meet on a
case-insensitive file system, and the ``a-``/``u-``/``s-`` prefixes keep every
name clear of ``.``, ``..`` and Windows' reserved names (``CON``, ``NUL``,
...). An id whose encoding passes :data:`LONGEST` characters is named
``a~``/``u~``/``s~`` and the SHA-256 of its text instead, so no name or path
passes file-system limits; the header line holds the ids themselves, and the
store checks them on every read.

A session file is one ASCII header line (JSON: ids, version, timestamps in
microseconds since the epoch, and where each module's text sits in the body),
then the state's JSON text as ``codec`` writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from . import codec

__all__ = ["LONGEST", "Header", "lock", "read", "read_header", "session_path", "write"]

LONGEST = 200
"""The longest encoded id used as it is; a longer one is named by its SHA-256."""

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_STRIPES = 64
_MAGIC = "statekeeper-json-1"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def encode_id(value: str) -> str:
    """Return the file-name-safe, injective, case-proof encoding of an id."""
    out = []
    for char in value:
        if char in _PLAIN:
            out.append(char)
        elif "A" <= char <= "Z":
            out.append("^" + char.lower())
        else:
            out.append(f"~{ord(char):06x}")
    return "".join(out)


def _name(prefix: str, value: str) -> str:
    encoded = encode_id(value)
    if len(encoded) <= LONGEST:
        return f"{prefix}-{encoded}"
    return f"{prefix}~{hashlib.sha256(value.encode()).hexdigest()}"


def app_dir(root: str, app_name: str) -> str:
    """Return the folder holding an app's sessions."""
    return os.path.join(root, _name("a", app_name))


def user_dir(root: str, app_name: str, user_id: str) -> str:
    """Return the folder holding a user's sessions."""
    return os.path.join(app_dir(root, app_name), _name("u", user_id))


def session_path(root: str, app_name: str, user_id: str, session_id: str) -> str:
    """Return the file of one session; it is always inside ``root``."""
    return os.path.join(user_dir(root, app_name, user_id), _name("s", session_id) + ".json")


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a session file."""

    app_name: str
    user_id: str
    session_id: str
    version: int
    created: int
    updated: int
    expires: int | None
    parts: tuple[tuple[str, int, int], ...]  # module name, start, end in the body

    def live(self, now_us: int) -> bool:
        """Tell whether the session has not expired at ``now_us``."""
        return self.expires is None or self.expires > now_us

    def dumps(self) -> str:
        """Return the header line, newline included."""
        fields = [
            _MAGIC,
            self.app_name,
            self.user_id,
            self.session_id,
            self.version,
            self.created,
            self.updated,
            self.expires,
            self.parts,
        ]
        return json.dumps(fields, separators=(",", ":")) + "\n"

    @classmethod
    def loads(cls, line: str) -> Header:
        """Parse a header line; raise ``ValueError`` if it is not one."""
        fields = json.loads(line)
        if not isinstance(fields, list) or len(fields) != 9 or fields[0] != _MAGIC:
            raise ValueError("not a statekeeper session file")
        _, app, user, session, version, created, updated, expires, parts = fields
        return cls(app, user, session, version, created, updated, expires, tuple(map(tuple, parts)))


def body_and_parts(entries: Mapping[str, str]) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """Join encoded module texts into the state's JSON text; note where each one sits."""
    pieces: list[str] = []
    parts = []
    offset = 0
    for name, text in entries.items():
        lead = ("," if pieces else "{") + json.dumps(name) + ":"
        pieces += [lead, text]
        offset += len(lead)
        parts.append((name, offset, offset + len(text)))
        offset += len(text)
    pieces.append("}" if pieces else "{}")
    return "".join(pieces), tuple(parts)


def module_texts(header: Header, body: str) -> dict[str, str]:
    """Return each stored module's JSON text, cut from the body without parsing it."""
    return {name: body[start:end] for name, start, end in header.parts}


def read_header(path: str) -> Header | None:
    """Return a session file's header, or ``None`` if there is no such file."""
    try:
        with open(path, encoding="ascii") as file:
            return Header.loads(file.readline())
    except FileNotFoundError:
        return None


def read(path: str) -> tuple[Header, str] | None:
    """Return a session file's header and body, or ``None`` if there is no such file."""
    try:
        with open(path, encoding="ascii") as file:
            header = Header.loads(file.readline())
            return header, file.read()
    except FileNotFoundError:
        return None


def decode_body(body: str) -> dict[str, Any]:
    """Decode a session file's body."""
    state: dict[str, Any] = codec.decode(body)
    return state


_sync_data = getattr(os, "fdatasync", os.fsync)  # the data and the size; not the times


def _fsync_dir(folder: str) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows cannot open folders
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: str, header: Header, body: str) -> None:
    """Replace ``path`` atomically: a temp file beside it, flushed to disk, then renamed.

    A reader, or a crash at any point, sees the old file or the new one, whole.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        file: IO[bytes]
        with os.fdopen(fd, "wb") as file:
            file.write(header.dumps().encode("ascii"))
            file.write(body.encode("ascii"))
            file.flush()
            _sync_data(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def remove(path: str) -> None:
    """Delete a session file and make the deletion durable."""
    os.unlink(path)
    _fsync_dir(os.path.dirname(path))


@contextlib.contextmanager
def lock(root: str, path: str) -> Iterator[None]:
    """Hold the cross-process lock that guards ``path`` (one of a fixed set of lock files).

    Locks are ``flock`` locks on files under ``root/.locks``: they exclude other
    processes and other threads alike, and the system drops them if the holder dies.
    """
    stripe = zlib.crc32(os.path.relpath(path, root).encode()) % _STRIPES
    name = os.path.join(root, ".locks", f"{stripe:02d}.lock")
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(name), exist_ok=True)
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_fd(fd)
        try:
            yield
        finally:
            _unlock_fd(fd)
    finally:
        os.close(fd)


def session_files(folder: str) -> Iterator[str]:
    """Yield every session file under ``folder`` (temp files and lock files skipped)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from session_files(entry.path)
        elif entry.name.endswith(".json"):
            yield entry.path


def stale_temp_files(folder: str, older_than: float) -> Iterator[str]:
    """Yield temp files under ``folder`` left by writers that died before renaming them."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.startswith(".tmp-"):
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < older_than:
                        yield path
