"""Drive an operation from ``_ops`` on a connection: the only place sync and async differ."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from ._ops import BEGIN, COMMIT, Call, Op

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["arun", "run"]

T = TypeVar("T")


def _begin_sql(conn: sa.Connection | AsyncConnection) -> str:
    # SQLite's IMMEDIATE takes the write lock up front, so a read-then-write
    # transaction cannot deadlock against another writer.
    return "BEGIN IMMEDIATE" if conn.dialect.name == "sqlite" else "BEGIN"


def run(conn: sa.Connection, op: Op[T]) -> T:
    """Run ``op`` on a sync connection in autocommit mode and return its result."""
    in_tx = False
    try:
        step = next(op)
        while True:
            result: Any = None
            if isinstance(step, Call):
                try:
                    result = conn.execute(step.statement, step.params)
                except sa.exc.DBAPIError as exc:
                    step = op.throw(exc)
                    continue
            elif step == BEGIN:
                conn.exec_driver_sql(_begin_sql(conn))
                in_tx = True
            elif step == COMMIT:
                conn.exec_driver_sql("COMMIT")
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            with contextlib.suppress(Exception):
                conn.exec_driver_sql("ROLLBACK")
        raise


async def arun(conn: AsyncConnection, op: Op[T]) -> T:
    """Run ``op`` on an async connection in autocommit mode and return its result."""
    in_tx = False
    try:
        step = next(op)
        while True:
            result: Any = None
            if isinstance(step, Call):
                try:
                    result = await conn.execute(step.statement, step.params)
                except sa.exc.DBAPIError as exc:
                    step = op.throw(exc)
                    continue
            elif step == BEGIN:
                await conn.exec_driver_sql(_begin_sql(conn))
                in_tx = True
            elif step == COMMIT:
                await conn.exec_driver_sql("COMMIT")
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            with contextlib.suppress(Exception):
                await conn.exec_driver_sql("ROLLBACK")
        raise
