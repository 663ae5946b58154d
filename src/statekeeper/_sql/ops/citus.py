"""Spread statekeeper's tables over a Citus cluster (``statekeeper db distribute``), free of I/O.

:func:`distribute` makes every table that exists what
``statements.citus.LAYOUT`` says, in one transaction that takes the
upgrades' advisory lock, and reports what it did; run again, it finds
nothing to do. :func:`follow` runs inside a migration that created tables:
when the anchor table is distributed, it distributes the new ones the same
way, so a database distributed at one revision stays distributed at the next.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import SchemaNotReadyError
from ..schema import ADVISORY_LOCK_KEY
from ..statements.citus import (
    ANCHOR,
    CITUS_AVAILABLE,
    CITUS_VERSION,
    DISTRIBUTE,
    DISTRIBUTE_FUNCTION,
    DISTRIBUTION_COLUMN,
    FUNCTION_SPREAD,
    FUNCTIONS,
    LAYOUT,
    LOCK,
    REFERENCE,
    SEQUENTIAL,
    TABLE_KIND,
    TRUNCATE_LOCAL,
)
from .store import BEGIN, COMMIT, Call, Op

__all__ = ["distribute", "follow", "qualified"]


def qualified(table: str, schema: str | None) -> str:
    """``table`` as a quoted name ``to_regclass`` and Citus's functions accept."""

    def quote(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return quote(table) if schema is None else f"{quote(schema)}.{quote(table)}"


def _kind(table: str, schema: str | None) -> Op[tuple[bool, str | None, str | None]]:
    """Whether ``table`` exists, its Citus table type and distribution column."""
    present, kind, column = (yield Call(TABLE_KIND, {"p_table": qualified(table, schema)})).one()
    return bool(present), kind, column


def _make(table: str, schema: str | None) -> Op[str]:
    """Distribute ``table`` (or make it a reference table); return what was done."""
    name = qualified(table, schema)
    if LAYOUT[table] == "reference":
        yield Call(REFERENCE, {"p_table": name})
        return f"made {table} a reference table (a copy on every node)"
    anchor = qualified(ANCHOR, schema)
    with_ = "default" if table == ANCHOR else anchor
    yield Call(DISTRIBUTE, {"p_table": name, "p_with": with_})
    # Rows already there were copied to the shards; the coordinator's own
    # copy is invisible from now on, so it goes.
    yield Call(TRUNCATE_LOCAL, {"p_table": name})
    beside = "" if table == ANCHOR else f", co-located with {ANCHOR}"
    return f"distributed {table} on {DISTRIBUTION_COLUMN}{beside}"


def _wrong(table: str, kind: str, column: str | None, where: str) -> SchemaNotReadyError:
    want = (
        f"distributed on {DISTRIBUTION_COLUMN}"
        if LAYOUT[table] == "distributed"
        else "a reference table"
    )
    found = f"distributed on {column}" if kind == "distributed" else f"a {kind} table"
    return SchemaNotReadyError(
        f"{table} in the database {where} is {found}, but statekeeper needs it {want}: "
        f"undo it with SELECT undistribute_table('{table}'), then run "
        "`statekeeper db distribute` again"
    )


def _require_citus(where: str) -> Op[None]:
    if (yield Call(CITUS_VERSION, {})).first() is not None:
        return
    if (yield Call(CITUS_AVAILABLE, {})).first() is None:
        raise SchemaNotReadyError(
            f"the database {where} has no citus extension and its server offers none: "
            "`statekeeper db distribute` needs a Citus coordinator (Citus installed, "
            "shared_preload_libraries = 'citus', the worker nodes added). On plain "
            "PostgreSQL there is nothing to distribute"
        )
    raise SchemaNotReadyError(
        f"the database {where} does not have the citus extension: run CREATE EXTENSION "
        "citus in it (as a superuser), add the worker nodes with citus_add_node(), then "
        "run `statekeeper db distribute` again"
    )


def distribute(schema: str | None, where: str, upgrade: str) -> Op[list[str]]:
    """Make each of statekeeper's tables what Citus needs it to be; return what was done.

    ``where`` names the database in messages and ``upgrade`` is the command
    that creates the tables.

    Raises:
        SchemaNotReadyError: no citus extension, no statekeeper tables, or a
            table distributed some other way.
    """
    yield from _require_citus(where)
    yield BEGIN
    yield Call(LOCK, {"p_key": ADVISORY_LOCK_KEY})  # not while an upgrade creates tables
    yield SEQUENTIAL
    done: list[str] = []
    for table in LAYOUT:
        present, kind, column = yield from _kind(table, schema)
        if not present:
            if table == ANCHOR:
                raise SchemaNotReadyError(
                    f"the database {where} has no statekeeper tables to distribute: run "
                    f"`{upgrade}` first"
                )
            continue  # created by a later revision, which distributes it then
        if kind is None:
            done.append((yield from _make(table, schema)))
        elif kind != LAYOUT[table] or (kind == "distributed" and column != DISTRIBUTION_COLUMN):
            raise _wrong(table, kind, column, where)
    for function in FUNCTIONS:
        name = function if schema is None else f"{qualified(schema, None)}.{function}"
        present, spread = (yield Call(FUNCTION_SPREAD, {"p_function": name})).one()
        if present and not spread:  # created before the citus extension was
            yield Call(DISTRIBUTE_FUNCTION, {"p_function": name})
            done.append(f"created {function.partition('(')[0]}() on every node")
    yield COMMIT
    return done


def follow(tables: Iterable[str], schema: str | None) -> Op[list[str]]:
    """Inside a migration that created ``tables``: distribute them when the anchor is.

    Does nothing on plain PostgreSQL, or on Citus before ``statekeeper db
    distribute`` ran (which will find them).
    """
    if (yield Call(CITUS_VERSION, {})).first() is None:
        return []
    present, kind, _ = yield from _kind(ANCHOR, schema)
    if not present or kind != "distributed":
        return []
    yield SEQUENTIAL
    done = []
    for table in tables:
        if (yield from _kind(table, schema))[1] is None:
            done.append((yield from _make(table, schema)))
    return done
