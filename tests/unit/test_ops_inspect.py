"""The operator's reads (``sessions ls`` / ``show``): what they yield, per dialect, and how many."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.unit.test_ops import NOW, ctx, drive, sql

from statekeeper._sql.ops import inspect as _ops_inspect
from statekeeper._sql.statements.inspect import inspect_statements
from statekeeper._sql.statements.terms import page_statements

TTL = dt.timedelta(seconds=60)


def row(count: int, update_time: float | None = 1.5) -> tuple[object, ...]:
    """A session row: state, version, count, time, created, updated, expires, size, app, user."""
    return ('{"a":1}', count + 1, count, update_time, NOW, NOW, None, 7, '"k":1', None)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_show_reads_never_refresh_an_expiry(dialect: str) -> None:
    steps, view = drive(
        _ops_inspect.read_session(ctx(dialect, TTL), "u", "s", None, NOW),
        [row(2)],
        [(1, 1.0, '{"n":1}'), (2, 2.0, '{"n":2}')],
    )
    assert [sql(dialect, step.statement).split()[0] for step in steps] == ["SELECT", "SELECT"]
    assert "p_expires" not in steps[0].params
    assert view.state == {"a": 1}
    assert (view.size_bytes, view.event_count, view.event_log) == (7, 2, True)
    assert view.app_state == {"k": 1}
    assert view.user_state == {}
    assert [e.data for e in view.events] == [{"n": 1}, {"n": 2}]


def test_the_last_n_events_are_read_backwards_up_to_the_count_and_returned_oldest_first() -> None:
    steps, view = drive(
        _ops_inspect.read_session(ctx("postgresql"), "u", "s", 2, NOW),
        [row(9)],
        [(9, 9.0, '{"n":9}'), (8, 8.0, '{"n":8}')],  # as the database returns them
    )
    assert steps[1].params["p_count"] == 9
    assert steps[1].params["p_recent"] == 2
    text = sql("postgresql", steps[1].statement)
    assert "ORDER BY statekeeper_events.seq DESC" in text
    assert "LIMIT" in text
    assert [e.seq for e in view.events] == [8, 9]


@pytest.mark.parametrize(("recent", "count"), [(0, 5), (None, 0), (20, 0)])
def test_no_events_asked_for_or_none_there_is_one_statement(recent: int | None, count: int) -> None:
    steps, view = drive(
        _ops_inspect.read_session(ctx("sqlite"), "u", "s", recent, NOW), [row(count)]
    )
    assert len(steps) == 1
    assert view.events == ()
    assert view.event_count == count


def test_a_store_session_has_no_event_log() -> None:
    _, view = drive(_ops_inspect.read_session(ctx("sqlite"), "u", "s", 5, NOW), [row(0, None)])
    assert not view.event_log


def test_a_missing_session_is_none() -> None:
    assert drive(_ops_inspect.read_session(ctx("sqlite"), "u", "s", 5, NOW), [])[1] is None


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("key", [(False, False), (False, True), (True, False), (True, True)])
def test_a_listing_page_is_the_stores_page_with_size_and_event_count(
    dialect: str, key: tuple[bool, bool]
) -> None:
    listed = sql(dialect, inspect_statements(dialect).pages[key])
    stores = sql(dialect, page_statements()[key])
    # The same FROM, WHERE (the keyset seek), ORDER BY and LIMIT: only two more columns.
    columns, _, rest = listed.partition("\nFROM statekeeper_sessions")
    assert rest
    assert rest == stores.partition("\nFROM statekeeper_sessions")[2]
    assert columns.endswith("AS size_bytes, statekeeper_sessions.event_count ")
    assert "statekeeper_events" not in listed  # the count is the session row's own


def test_a_listing_is_one_statement_per_page() -> None:
    listed = [
        ("bot", "u", f"s{i}", 1, NOW, NOW - dt.timedelta(seconds=i), None, 10 + i, i)
        for i in range(3)
    ]
    steps, page = drive(_ops_inspect.list_sessions(ctx("sqlite"), "u", 2, None, NOW), listed)
    assert len(steps) == 1
    assert steps[0].params["p_limit"] == 3  # one more, to tell whether a next page exists
    assert [(s.info.session_id, s.size_bytes, s.event_count) for s in page.items] == [
        ("s0", 10, 0),
        ("s1", 11, 1),
    ]
    assert page.next_cursor is not None
    steps, _ = drive(
        _ops_inspect.list_sessions(ctx("sqlite"), "u", 2, page.next_cursor, NOW), listed[2:]
    )
    assert steps[0].params["c_session"] == "s1"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_statements_are_built_once(dialect: str) -> None:
    assert inspect_statements(dialect) is inspect_statements(dialect)
