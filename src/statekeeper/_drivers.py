"""Drive an operation from ``_ops`` on a database: the only place sync and async differ.

Two ways to execute a :class:`~statekeeper._ops.Call`:

* **direct** (engines statekeeper created): each statement is compiled once
  per store by SQLAlchemy, then run on the pooled DBAPI connection with its
  bind and result processors applied here. Pooling, pre-ping, dialects and
  types stay SQLAlchemy's; the per-call execution machinery (cache-key
  generation, execution contexts, result objects) is skipped. Those
  connections are in autocommit from the moment they are made.
* **connection** (an ``Engine`` the caller passed in): through a SQLAlchemy
  ``Connection`` in autocommit, leaving the caller's pool as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from ._ops import BEGIN, COMMIT, Call, Op

__all__ = ["Compiler", "arun", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rows:
    """The fetched rows of one statement, and the number of rows it changed."""

    rows: Sequence[tuple[Any, ...]]
    rowcount: int = -1

    def first(self) -> tuple[Any, ...] | None:
        """Return the first row, or ``None``."""
        return self.rows[0] if self.rows else None

    def all(self) -> Sequence[tuple[Any, ...]]:
        """Return every row."""
        return self.rows


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled for one dialect and schema, ready for the DBAPI cursor."""

    sql: str
    defaults: dict[str, Any]
    positions: tuple[str, ...] | None
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    results: tuple[Callable[[Any], Any] | None, ...]
    returns_rows: bool

    def parameters(self, params: Mapping[str, Any]) -> Any:
        """Return the DBAPI parameters for ``params``."""
        values = {**self.defaults, **params}
        for name, process in self.binds:
            values[name] = process(values[name])
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Apply the result processors to fetched rows."""
        results = self.results
        if not any(results):
            return [tuple(row) for row in raw]
        return [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in raw
        ]


class Compiler:
    """Compile each statement once for a store's dialect and schema."""

    def __init__(self, dialect: Dialect, schema: str | None) -> None:
        """Remember the dialect and the schema to render."""
        self.dialect = dialect
        self.translate = None if schema is None else {None: schema}
        self.cache: dict[Any, Prepared] = {}

    def prepare(self, statement: Any) -> Prepared:
        """Return the compiled form of ``statement`` (a statement built once in ``_ops``)."""
        prepared = self.cache.get(statement)
        if prepared is None:
            prepared = self.cache[statement] = self._compile(statement)
        return prepared

    def _compile(self, statement: Any) -> Prepared:
        dialect = self.dialect
        compiled: Any = statement.compile(
            dialect=dialect,
            schema_translate_map=self.translate,
            render_schema_translate=self.translate is not None,
        )
        defaults = {
            name: value
            for name, value in compiled.construct_params(_check=False).items()
            if value is not None
        }
        results = tuple(
            column.type._cached_result_processor(dialect, None)
            for column in compiled._result_columns
        )
        return Prepared(
            sql=compiled.string,
            defaults=defaults,
            positions=tuple(compiled.positiontup) if compiled.positional else None,
            binds=tuple(compiled._bind_processors.items()),
            results=results,
            returns_rows=bool(results),
        )


def _error(exc: Exception, dialect: Dialect, sql: str, params: Any) -> sa.exc.StatementError:
    """Wrap a DBAPI error the way SQLAlchemy does, so both paths raise the same types."""
    return sa.exc.DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error, dialect=dialect)


def _begin_sql(dialect: Dialect) -> str:
    # SQLite's IMMEDIATE takes the write lock up front, so a read-then-write
    # transaction cannot deadlock against another writer.
    return "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN"


# --------------------------------------------------------------------------- sync


def run(engine: sa.Engine, op: Op[T], compiler: Compiler | None) -> T:
    """Run ``op`` on ``engine`` and return its result (direct path when given a compiler)."""
    if compiler is None:
        with engine.connect() as conn:
            return _drive(op, _connection_executor(conn))
    fairy = engine.raw_connection()
    try:
        return _drive(op, _direct_executor(fairy, compiler), fairy.invalidate)
    finally:
        fairy.close()


def _drive(
    op: Op[T], execute: Callable[[Call | str], Any], broken: Callable[[], Any] | None = None
) -> T:
    in_tx = False
    try:
        step = next(op)
        while True:
            try:
                result = execute(step)
            except sa.exc.DBAPIError as exc:
                step = op.throw(exc)
                continue
            if step == BEGIN:
                in_tx = True
            elif step == COMMIT:
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            try:
                execute("ROLLBACK")
            except Exception:
                # Never hand a connection inside a transaction back to the pool.
                if broken is not None:
                    broken()
        raise


def _connection_executor(conn: sa.Connection) -> Callable[[Call | str], Any]:
    def execute(step: Call | str) -> Any:
        if isinstance(step, Call):
            return conn.execute(step.statement, step.params)
        conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
        return None

    return execute


def _direct_executor(fairy: Any, compiler: Compiler) -> Callable[[Call | str], Any]:
    dialect = compiler.dialect

    def execute(step: Call | str) -> Any:
        if isinstance(step, Call):
            prepared = compiler.prepare(step.statement)
            sql, params = prepared.sql, prepared.parameters(step.params)
        else:
            sql, params = (_begin_sql(dialect) if step == BEGIN else step), ()
        cursor = fairy.cursor()
        try:
            cursor.execute(sql, params)
            if not isinstance(step, Call):
                return None
            raw = cursor.fetchall() if cursor.description is not None else []
            return Rows(prepared.rows(raw), cursor.rowcount)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, fairy.dbapi_connection, cursor):
                fairy.invalidate(exc)
            raise _error(exc, dialect, sql, params) from exc
        finally:
            cursor.close()

    return execute


# --------------------------------------------------------------------------- async


async def arun(engine: AsyncEngine, op: Op[T], compiler: Compiler | None) -> T:
    """Run ``op`` on ``engine`` and return its result (direct path when given a compiler)."""
    if compiler is None:
        async with engine.connect() as conn:
            return await _adrive(op, _aconnection_executor(conn))
    fairy = await engine.raw_connection()
    try:
        return await _adrive(
            op, _adirect_executor(fairy, compiler), lambda: greenlet_spawn(fairy.invalidate)
        )
    finally:
        await greenlet_spawn(fairy.close)


async def _adrive(
    op: Op[T], execute: Callable[[Call | str], Any], broken: Callable[[], Any] | None = None
) -> T:
    in_tx = False
    try:
        step = next(op)
        while True:
            try:
                result = await execute(step)
            except sa.exc.DBAPIError as exc:
                step = op.throw(exc)
                continue
            if step == BEGIN:
                in_tx = True
            elif step == COMMIT:
                in_tx = False
            step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        if in_tx:
            try:
                await execute("ROLLBACK")
            except Exception:
                if broken is not None:
                    await broken()
        raise


def _aconnection_executor(conn: Any) -> Callable[[Call | str], Any]:
    async def execute(step: Call | str) -> Any:
        if isinstance(step, Call):
            return await conn.execute(step.statement, step.params)
        await conn.exec_driver_sql(_begin_sql(conn.dialect) if step == BEGIN else step)
        return None

    return execute


def _adirect_executor(fairy: Any, compiler: Compiler) -> Callable[[Call | str], Any]:
    dialect = compiler.dialect
    driver = fairy.driver_connection  # psycopg.AsyncConnection or aiosqlite.Connection
    # aiosqlite runs each call in its connection's thread: execute and fetch
    # in one hop there.
    one_hop = getattr(driver, "execute_fetchall", None)

    async def fetch(sql: str, params: Any, rows: bool) -> tuple[Sequence[Any], int]:
        if rows and one_hop is not None:
            return list(await one_hop(sql, params)), -1
        cursor = await driver.execute(sql, params)
        try:
            fetched = await cursor.fetchall() if rows else []
            return fetched, cursor.rowcount
        finally:
            await cursor.close()

    async def execute(step: Call | str) -> Any:
        if isinstance(step, Call):
            prepared = compiler.prepare(step.statement)
            sql, params = prepared.sql, prepared.parameters(step.params)
        else:
            sql, params = (_begin_sql(dialect) if step == BEGIN else step), ()
        returns_rows = isinstance(step, Call) and prepared.returns_rows
        try:
            raw, rowcount = await fetch(sql, params, returns_rows)
        except dialect.loaded_dbapi.Error as exc:  # the drivers' own classes
            if dialect.is_disconnect(exc, fairy.dbapi_connection, None):
                await greenlet_spawn(fairy.invalidate, exc)
            raise _error(exc, dialect, sql, params) from exc
        return Rows(prepared.rows(raw), rowcount) if isinstance(step, Call) else None

    return execute
