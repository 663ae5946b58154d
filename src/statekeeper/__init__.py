"""statekeeper: keep AI-agent session state in SQL databases.

Save and load the state of agent modules (anything with ``state_dict()`` and
``load_state_dict()``) per user and session, in SQLite or PostgreSQL, from sync
code with :class:`SqlSession` or async code with :class:`AsyncSqlSession`; or in
one JSON file per session with :class:`JSONSession` / :class:`AsyncJSONSession`, or
in Redis with :class:`RedisSession` / :class:`AsyncRedisSession`. Sessions with an
event log and app / user scoped state (Google ADK's model): :class:`SessionService`
and :class:`AsyncSessionService`.
"""

from __future__ import annotations

from ._records import EventRecord, SessionInfo, SessionPage, SessionRecord
from ._version import __version__
from .base import AsyncSessionBase, SessionBase
from .errors import (
    ConflictError,
    DatabaseUnavailableError,
    SchemaNotReadyError,
    SessionExistsError,
    SessionNotFoundError,
    StateEncodingError,
    StatekeeperError,
    StorageFullError,
    StoreClosedError,
    TransactionPoolerError,
)
from .json_file import JSONSession
from .json_file_async import AsyncJSONSession
from .modules import StateModule
from .redis import RedisSession
from .redis_async import AsyncRedisSession
from .service import SessionService
from .service_async import AsyncSessionService
from .sql import SqlSession
from .sql_async import AsyncSqlSession

__all__ = [
    "AsyncJSONSession",
    "AsyncRedisSession",
    "AsyncSessionBase",
    "AsyncSessionService",
    "AsyncSqlSession",
    "ConflictError",
    "DatabaseUnavailableError",
    "EventRecord",
    "JSONSession",
    "RedisSession",
    "SchemaNotReadyError",
    "SessionBase",
    "SessionExistsError",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionPage",
    "SessionRecord",
    "SessionService",
    "SqlSession",
    "StateEncodingError",
    "StateModule",
    "StatekeeperError",
    "StorageFullError",
    "StoreClosedError",
    "TransactionPoolerError",
    "__version__",
]
