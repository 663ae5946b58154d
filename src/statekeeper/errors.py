"""The errors statekeeper raises.

Every error derives from :class:`StatekeeperError`, so one ``except`` clause
catches them all. Where AgentScope raised ``ValueError`` the matching error is
also a ``ValueError``, so code written for AgentScope keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "DatabaseUnavailableError",
    "SchemaNotReadyError",
    "SessionExistsError",
    "SessionNotFoundError",
    "StateEncodingError",
    "StatekeeperError",
    "StorageFullError",
    "StoreClosedError",
    "TransactionPoolerError",
]


class StatekeeperError(Exception):
    """Base class of every error raised by statekeeper."""


class SessionNotFoundError(StatekeeperError, ValueError):
    """The session does not exist (or has expired) and absence was not allowed."""


class SessionExistsError(StatekeeperError):
    """A session was to be created under a key that a live session already holds.

    Nothing was written. Pick another ``session_id``, pass ``None`` to have
    one generated, or load the existing session instead.
    """


class ConflictError(StatekeeperError):
    """A write named an ``expected_version`` that is not the stored one.

    Nothing was written. Reload the session, reapply the change and retry.

    Attributes:
        expected: the version the caller expected.
        actual: the version stored when the write was refused (``0`` when the
            session does not exist or has expired), or ``None`` when unknown.
    """

    def __init__(self, message: str, *, expected: int, actual: int | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class StateEncodingError(StatekeeperError, ValueError):
    """A state holds a value that cannot be stored as exact JSON.

    Nothing was written. ``path`` names the offending value, for example
    ``agent.memory.content[3].score``.

    Attributes:
        path: where in the state the offending value sits.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class SchemaNotReadyError(StatekeeperError):
    """The database is not migrated to the schema this version of statekeeper needs.

    Run ``statekeeper db upgrade --url URL`` (or pass ``auto_migrate=True``).
    """


class DatabaseUnavailableError(StatekeeperError, ConnectionError):
    """The database could not be reached, or the connection to it was lost.

    Raised for a refused or timed-out connection, a server that went away
    mid-call, or a pool that could not hand out a connection in time. A write
    that raises it was not committed unless the connection broke after the
    server's reply; the session is never left half-written. Check that the
    database is up and the URL is right, then retry. The driver's own
    exception is the ``__cause__``.
    """


class StoreClosedError(StatekeeperError, RuntimeError):
    """The store (or service) was closed; create a new one to keep working."""


class TransactionPoolerError(StatekeeperError):
    """A connection pooler in transaction mode refused the driver's prepared statements.

    A pooler such as PgBouncer with ``pool_mode = transaction`` hands each
    transaction to any of its server connections, so a statement the driver
    prepared on one of them is missing (or taken) on the next. The statement
    was refused before it ran; a call inside a transaction was rolled back,
    so no session is half-written, and the connection was discarded. Turn
    the driver's server-side prepared statements off for engines that go
    through the pooler: psycopg
    ``engine_options={"connect_args": {"prepare_threshold": None}}`` (or
    ``connect_args={"prepare_threshold": None}`` on your own engine), asyncpg
    ``connect_args={"statement_cache_size": 0}``. The driver's own exception
    is the ``__cause__``.
    """


class StorageFullError(StatekeeperError):
    """The backend refused the write for lack of memory or disk; nothing was written.

    Raised when Redis is at its ``maxmemory`` (with a policy that does not
    evict) and when SQLite or PostgreSQL report a full disk. The session keeps
    the state and version it had before the call. Free space (delete sessions,
    ``purge_expired``, a bigger disk) or raise Redis's ``maxmemory``, then
    retry. The driver's own exception is the ``__cause__``.
    """
