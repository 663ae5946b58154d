"""statekeeper: keep AI-agent session state in SQL databases.

Save and load the state of agent modules (anything with ``state_dict()`` and
``load_state_dict()``) per user and session, in SQLite or PostgreSQL, from sync
code with :class:`SqlSession` or async code with :class:`AsyncSqlSession`.
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
from .modules import StateModule
from .sql import SqlSession
from .sql_async import AsyncSqlSession

__all__ = [
    "AsyncSessionBase",
    "AsyncSqlSession",
    "ConflictError",
    "DatabaseUnavailableError",
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
