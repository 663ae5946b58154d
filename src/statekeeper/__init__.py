"""statekeeper: keep AI-agent session state in SQL databases.

Save and load the state of agent modules (anything with ``state_dict()`` and
``load_state_dict()``) per user and session, in SQLite or PostgreSQL, from sync
code with :class:`SqlSession` or async code with :class:`AsyncSqlSession`.
Sessions with an event log and app / user scoped state (Google ADK's model):
:class:`SessionService` and :class:`AsyncSessionService`.
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
    StoreClosedError,
)
from .modules import StateModule
from .service import SessionService
from .service_async import AsyncSessionService
from .sql import SqlSession
from .sql_async import AsyncSqlSession

__all__ = [
    "AsyncSessionBase",
    "AsyncSessionService",
    "AsyncSqlSession",
    "ConflictError",
    "DatabaseUnavailableError",
    "EventRecord",
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
    "StoreClosedError",
    "__version__",
]
