"""statekeeper: keep AI-agent session state in SQL databases.

Save and load the state of agent modules (anything with ``state_dict()`` and
``load_state_dict()``) per user and session, in SQLite or PostgreSQL, from sync
code with :class:`SqlSession` or async code with :class:`AsyncSqlSession`; or in
one JSON file per session with :class:`JSONSession` / :class:`AsyncJSONSession`, or
in Redis with :class:`RedisSession` / :class:`AsyncRedisSession`.
"""

from __future__ import annotations

from ._records import SessionInfo, SessionPage
from ._version import __version__
from .base import AsyncSessionBase, SessionBase
from .errors import (
    ConflictError,
    DatabaseUnavailableError,
    SchemaNotReadyError,
    SessionNotFoundError,
    StateEncodingError,
    StatekeeperError,
    StoreClosedError,
)
from .json_file import JSONSession
from .json_file_async import AsyncJSONSession
from .modules import StateModule
from .redis import RedisSession
from .redis_async import AsyncRedisSession
from .sql import SqlSession
from .sql_async import AsyncSqlSession

__all__ = [
    "AsyncJSONSession",
    "AsyncRedisSession",
    "AsyncSessionBase",
    "AsyncSqlSession",
    "ConflictError",
    "DatabaseUnavailableError",
    "JSONSession",
    "RedisSession",
    "SchemaNotReadyError",
    "SessionBase",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionPage",
    "SqlSession",
    "StateEncodingError",
    "StateModule",
    "StatekeeperError",
    "StoreClosedError",
    "__version__",
]
