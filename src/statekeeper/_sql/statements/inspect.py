"""The statements of the operator's reads (``statekeeper sessions ls`` and ``show``), per dialect.

Reads only: none of them refreshes a session's expiry. A listing page is the
stores' own keyset page (``statements.terms.page_statements``) with two more
columns, the stored state's size and the session's event count, so it stays
one statement per page. The count is the session row's ``event_count``, which
every append bumps in the same write as it adds the event: it is what the
service reads the log up to, so events a deleted or expired session left
under the same key are never counted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..schema import sessions
from .terms import (
    KEY,
    LIVE,
    NOW,
    RECORD,
    page_statements,
    scoped_text,
)

__all__ = ["InspectStatements", "inspect_statements", "state_size"]

c = sessions.c


def state_size(dialect: str) -> sa.ColumnElement[Any]:
    """Bytes of the stored state: the length of its UTF-8 JSON text."""
    if dialect == "postgresql":
        return sa.func.octet_length(sa.cast(c.state, sa.Text))
    return sa.func.length(sa.cast(c.state, sa.LargeBinary))  # of TEXT: characters


@dataclass(frozen=True)
class InspectStatements:
    """The operator's reads of one dialect."""

    #: One live session: the service's record columns (state, version, event
    #: count, update time, times), then its size and the app's and user's state.
    session: sa.Select[Any]
    #: Listing pages by (one user?, after a cursor?): a session's key, version,
    #: times, size and event count.
    pages: dict[tuple[bool, bool], sa.Select[Any]]
    #: Sessions expired at ``p_now`` per app, of every app or (``True``) of ``p_app``.
    expired: dict[bool, sa.Select[Any]]


@functools.cache
def inspect_statements(dialect: str) -> InspectStatements:
    """The operator's reads for ``dialect``, built once."""
    size = state_size(dialect).label("size_bytes")
    session = sa.select(*RECORD, size, *scoped_text(dialect, sa.bindparam("p_user"))).where(
        KEY, LIVE
    )
    pages = {key: page.add_columns(size, c.event_count) for key, page in page_statements().items()}
    expired = (
        sa.select(c.app_name, sa.func.count())
        .where(c.expires_at <= NOW)
        .group_by(c.app_name)
        .order_by(c.app_name)
    )
    return InspectStatements(
        session=session,
        pages=pages,
        expired={False: expired, True: expired.where(c.app_name == sa.bindparam("p_app"))},
    )
