"""The sans-IO operations: the statements they yield, per dialect, and how many."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from statekeeper import _rules
from statekeeper._sql.ops import store as _ops
from statekeeper.errors import ConflictError

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.psycopg.dialect()}


class FakeResult:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def all(self) -> list[tuple[Any, ...]]:
        return self.rows


def drive(op: Any, *answers: list[tuple[Any, ...]] | BaseException) -> tuple[list[Any], Any]:
    """Run ``op`` against canned results; return the steps it yielded and its value."""
    steps: list[Any] = []
    replies = iter(answers)
    try:
        step = next(op)
        while True:
            steps.append(step)
            answer = next(replies) if isinstance(step, _ops.Call) else None
            if isinstance(answer, BaseException):
                step = op.throw(answer)
                continue
            step = op.send(None if answer is None else FakeResult(answer))
    except StopIteration as stop:
        return steps, stop.value


def ctx(dialect: str, ttl: dt.timedelta | None = None) -> _ops.Context:
    return _ops.Context(dialect, "app", ttl)


def sql(dialect: str, statement: Any) -> str:
    return str(statement.compile(dialect=DIALECTS[dialect]))


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_writes_are_single_upserts(dialect: str) -> None:
    statements = ctx(dialect).sql
    for stmt in (statements.replace, statements.create):
        text = sql(dialect, stmt)
        assert "ON CONFLICT (app_name, user_id, session_id) DO UPDATE" in text
        assert "RETURNING" in text


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_set_state_is_one_round_trip(dialect: str) -> None:
    steps, version = drive(_ops.set_state(ctx(dialect), "u", "s", "{}", None, NOW), [(3,)])
    assert len(steps) == 1
    assert version == 3
    assert steps[0].params["p_state"] == "{}"


@pytest.mark.parametrize(
    ("dialect", "function"), [("postgresql", "statekeeper_merge_json("), ("sqlite", "json_set")]
)
def test_merge_is_one_statement(dialect: str, function: str) -> None:
    steps, version = drive(
        _ops.merge_state(
            ctx(dialect), "u", "s", {"a": 1, "b.c": 2}, {"a": "1", "b.c": "2"}, None, NOW
        ),
        [(2,)],
    )
    assert [type(s) for s in steps] == [_ops.Call]
    assert version == 2
    text = sql(dialect, steps[0].statement)
    assert function in text
    assert "jsonb" not in text
    assert steps[0].params["p_state"] == '{"a":1,"b.c":2}'


def test_sqlite_merge_binds_one_path_and_value_per_module() -> None:
    steps, _ = drive(
        _ops.merge_state(
            ctx("sqlite"), "u", "s", {"a": 1, "b.c": 2}, {"a": "1", "b.c": "2"}, 3, NOW
        ),
        [(4,)],
    )
    params = steps[0].params
    assert (params["p_path0"], params["p_value0"]) == ('$."a"', "1")
    assert (params["p_path1"], params["p_value1"]) == ('$."b.c"', "2")
    assert params["p_expected"] == 3
    assert sql("sqlite", steps[0].statement).startswith("UPDATE")


def _refused(sqlstate: str) -> sa.exc.DBAPIError:
    class Refused(Exception):
        pass

    orig = Refused("json_each refused the stored state")
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return sa.exc.DBAPIError("MERGE", {}, orig)


@pytest.mark.parametrize("sqlstate", ["22P05", "22P02"])
def test_postgres_merge_falls_back_when_json_each_refuses_the_stored_state(sqlstate: str) -> None:
    c = ctx("postgresql")
    steps, version = drive(
        _ops.merge_state(c, "u", "s", {"a": "x"}, {"a": '"x"'}, None, NOW),
        _refused(sqlstate),
        [('{"b":"\\u0000"}', 4, True)],
        [(5,)],
    )
    assert steps[0].params["p_keys"] == ["a"]
    assert steps[1] == _ops.BEGIN
    assert steps[-1] == _ops.COMMIT
    assert "FOR UPDATE" in sql("postgresql", steps[2].statement)
    assert version == 5
    assert steps[3].params["p_state"] == '{"b":"\\u0000","a":"x"}'
    assert steps[3].params["p_expected"] == 4


def test_postgres_merge_other_errors_propagate() -> None:
    op = _ops.merge_state(ctx("postgresql"), "u", "s", {"a": 1}, {"a": "1"}, None, NOW)
    with pytest.raises(sa.exc.DBAPIError):
        drive(op, _refused("40001"))


@pytest.mark.parametrize("name", ['say "hi"', "back\\slash"])
def test_sqlite_names_a_json_path_cannot_quote_take_the_locked_path(name: str) -> None:
    steps, version = drive(
        _ops.merge_state(ctx("sqlite"), "u", "s", {name: 2}, {name: "2"}, None, NOW),
        [('{"b":1}', 1, 1)],
        [(2,)],
    )
    assert steps[0] == _ops.BEGIN
    assert steps[-1] == _ops.COMMIT
    assert len(steps) == 4
    assert _ops.codec.decode(steps[2].params["p_state"]) == {"b": 1, name: 2}
    assert version == 2


def test_locked_merge_conflict_raises_before_writing() -> None:
    op = _ops.merge_state(ctx("sqlite"), "u", "s", {'"': 2}, {'"': "2"}, 7, NOW)
    assert next(op) == _ops.BEGIN
    assert isinstance(next(op), _ops.Call)
    with pytest.raises(ConflictError) as info:
        op.send(FakeResult([('{"a":1}', 3, 1)]))
    assert (info.value.expected, info.value.actual) == (7, 3)


def test_load_without_ttl_is_a_select_and_with_ttl_an_update() -> None:
    steps, _ = drive(_ops.get_state(ctx("postgresql"), "u", "s", NOW), [])
    assert sql("postgresql", steps[0].statement).startswith("SELECT")
    steps, _ = drive(_ops.get_state(ctx("postgresql", dt.timedelta(seconds=5)), "u", "s", NOW), [])
    assert sql("postgresql", steps[0].statement).startswith("UPDATE")
    assert steps[0].params["p_expires"] == NOW + dt.timedelta(seconds=5)


def test_state_is_read_as_text_so_the_driver_does_not_parse_it() -> None:
    assert "CAST(statekeeper_sessions.state AS TEXT)" in sql(
        "postgresql", ctx("postgresql").sql.select
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_statements_are_built_once(dialect: str) -> None:
    assert ctx(dialect).sql is ctx(dialect).sql


def test_cursor_round_trip_and_garbage() -> None:
    from statekeeper import SessionInfo

    info = SessionInfo("a", "u", "s", 1, NOW, NOW, None)
    assert _rules.decode_cursor(_rules.encode_cursor(info)) == (NOW, "u", "s")
    for bad in ("", "!!", "e30", "WzEsMiwzXQ"):
        with pytest.raises(ValueError, match="invalid cursor"):
            _rules.decode_cursor(bad)


def test_a_failed_rollback_discards_the_connection() -> None:
    from statekeeper._sql.driver import drive

    class Connection:
        dialect = sa.dialects.sqlite.dialect()
        discarded = False

        def execute(self, statement: Any, params: Any) -> Any:
            return FakeResult([('{"a":1}', 3, 1)])

        def exec_driver_sql(self, sql: str) -> None:
            if sql == "ROLLBACK":
                raise OSError("connection lost")

        def invalidate(self) -> None:
            self.discarded = True

    conn = Connection()
    op = _ops.merge_state(ctx("sqlite"), "u", "s", {'"': 2}, {'"': "2"}, 7, NOW)
    with pytest.raises(ConflictError):
        drive(op, conn)  # type: ignore[arg-type]
    assert conn.discarded


class CountResult(FakeResult):
    def __init__(self, rowcount: int) -> None:
        super().__init__([])
        self.rowcount = rowcount


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_purge_deletes_in_bounded_batches_and_counts_without_fetching(dialect: str) -> None:
    seen: list[int] = []
    op = _ops.purge_expired(ctx(dialect), NOW, seen.append, batch=1000)
    steps = [next(op)]
    total = None
    try:
        for deleted in (1000, 1000, 437, 0):
            steps.append(op.send(CountResult(deleted)))
    except StopIteration as stop:
        total = stop.value
    assert total == 2437
    assert seen == [1000, 2000, 2437]  # the running count after each batch
    assert len(steps) == 4  # one statement per batch, a short batch ends it; then the events
    assert "DELETE FROM statekeeper_events" in sql(dialect, steps[3].statement)
    call = steps[0]
    assert call.params["p_batch"] == 1000
    text = sql(dialect, call.statement)
    assert "RETURNING" not in text  # the count comes from the row count
    assert "LIMIT" in text  # each statement deletes at most one batch
    # Rows are picked by address: one lookup each, whatever the table's size.
    assert ("ctid IN (SELECT ctid" if dialect == "postgresql" else "rowid IN (SELECT rowid") in text
    if dialect == "postgresql":  # the expiry is rechecked on the rows deleted
        assert text.count("expires_at <=") == 2


def test_purge_picks_batches_by_key_where_ctid_is_refused() -> None:
    # Citus refuses a row address in a multi-shard DELETE (feature_not_supported).
    op = _ops.purge_expired(ctx("postgresql"), NOW, batch=1000)
    first = next(op)
    assert "ctid" in sql("postgresql", first.statement)
    again = op.throw(_refused("0A000"))  # the same batch, by primary key
    text = sql("postgresql", again.statement)
    assert "ctid" not in text
    assert "(statekeeper_sessions.app_name, statekeeper_sessions.user_id, " in text
    assert text.count("expires_at <=") == 2  # the expiry is rechecked on the rows deleted
    assert op.send(CountResult(1000)).statement is again.statement  # and it stays so
    with pytest.raises(sa.exc.DBAPIError):  # any other refusal is the caller's
        op.throw(_refused("42501"))


def test_purge_of_nothing_is_one_statement() -> None:
    op = _ops.purge_expired(ctx("sqlite"), NOW)
    next(op)
    with pytest.raises(StopIteration) as stop:
        op.send(CountResult(0))
    assert stop.value.value == 0
