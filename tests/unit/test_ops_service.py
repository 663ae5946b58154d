"""The event-log service's operations: the statements they yield, per dialect, and how many."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa
from tests.unit.test_ops import NOW, FakeResult, ctx, drive, sql

from statekeeper._sql.ops import imports as _ops_import
from statekeeper._sql.ops import service as _ops_service
from statekeeper._sql.ops import store as _ops
from statekeeper._sql.statements.service import append_statement, service_statements
from statekeeper.errors import ConflictError, SessionExistsError, SessionNotFoundError

#: A session row: state, version, count, time, created, updated, expires, app, user state.
ROW = ("{}", 1, 0, 1.5, NOW, NOW, None, None, None)


def delta(**state: Any) -> _ops_service.Delta:
    return _ops_service.split_state(state, "state_delta")


def test_split_routes_by_prefix_and_drops_temp() -> None:
    d = _ops_service.split_state(
        {"a": 1, "app:b": [1], "user:c": "x", "temp:d": 4, "user:a": None}, "state"
    )
    assert d.session == {"a": 1}
    assert d.entries == {"a": "1"}
    assert d.app == {"b": "[1]"}
    assert d.user == {"a": "null", "c": '"x"'}  # sorted: rows are locked in key order


def test_postgres_append_is_one_statement_with_every_write() -> None:
    steps, version = drive(
        _ops_service.append_event(
            ctx("postgresql"),
            "u",
            "s",
            '{"e":1}',
            delta(n=1, **{"app:a": 2, "user:b": 3}),
            1.25,
            4,
            NOW,
        ),
        [(5, 4)],
    )
    assert len(steps) == 1
    assert version == 5
    text = sql("postgresql", steps[0].statement)
    for part in (
        "UPDATE statekeeper_sessions",
        "INSERT INTO statekeeper_events",
        "INSERT INTO statekeeper_app_state",
        "INSERT INTO statekeeper_user_state",
        "json_each",  # the session state is merged in SQL, as merge_state does
        "statekeeper_sessions.version = %(p_expected)s",
    ):
        assert part in text
    assert "jsonb" not in text
    params = steps[0].params
    assert (params["p_akeys"], params["p_avalues"]) == (["a"], ["2"])
    assert (params["p_ukeys"], params["p_uvalues"]) == (["b"], ["3"])
    assert params["p_time"] == 1.25
    assert params["p_event"] == '{"e":1}'


def test_postgres_append_without_session_delta_leaves_the_state_alone() -> None:
    steps, _ = drive(
        _ops_service.append_event(ctx("postgresql"), "u", "s", "{}", delta(), 1.0, None, NOW),
        [(2, 1)],
    )
    text = sql("postgresql", steps[0].statement)
    assert "json_each" not in text
    assert "p_expected" not in text


def test_sqlite_append_is_one_immediate_transaction() -> None:
    steps, version = drive(
        _ops_service.append_event(
            ctx("sqlite"), "u", "s", "{}", delta(n=1, **{"app:a": 2, "user:b": 3}), 1.0, None, NOW
        ),
        [(2, 1)],
        [],
        [],
        [],
    )
    assert steps[0] == _ops.BEGIN
    assert steps[-1] == _ops.COMMIT
    texts = [sql("sqlite", s.statement) for s in steps[1:-1]]
    assert texts[0].startswith("UPDATE statekeeper_sessions SET state=json_set(")
    assert texts[1].startswith("INSERT INTO statekeeper_events")
    assert texts[2].startswith("INSERT INTO statekeeper_app_state")
    assert texts[3].startswith("INSERT INTO statekeeper_user_state")
    assert steps[2].params["p_seq"] == 1
    assert version == 2


@pytest.mark.parametrize(("dialect", "write"), [("sqlite", "UPDATE"), ("postgresql", "WITH")])
def test_a_stale_append_raises_conflict_and_writes_no_more(dialect: str, write: str) -> None:
    op = _ops_service.append_event(ctx(dialect), "u", "s", "{}", delta(), 1.0, 3, NOW)
    seen: list[Any] = []
    replies = iter([[], [(7,)]])  # the write matches nothing; version 7 is stored

    def run() -> None:
        step = next(op)
        while True:
            seen.append(step)
            rows = next(replies) if isinstance(step, _ops.Call) else None
            step = op.send(None if rows is None else FakeResult(rows))

    with pytest.raises(ConflictError) as info:
        run()
    assert (info.value.expected, info.value.actual) == (3, 7)
    calls = [sql(dialect, s.statement).split()[0] for s in seen if isinstance(s, _ops.Call)]
    assert calls == [write, "SELECT"]  # no event, no scoped write, no COMMIT
    assert _ops.COMMIT not in seen


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_append_to_a_missing_session_raises_not_found(dialect: str) -> None:
    with pytest.raises(SessionNotFoundError):
        drive(_ops_service.append_event(ctx(dialect), "u", "s", "{}", delta(), 1.0, 3, NOW), [], [])


def _refused(sqlstate: str) -> sa.exc.DBAPIError:
    class Refused(Exception):
        pass

    orig = Refused("json_each refused the stored state")
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return sa.exc.DBAPIError("APPEND", {}, orig)


def test_postgres_append_falls_back_to_a_locked_merge() -> None:
    steps, version = drive(
        _ops_service.append_event(ctx("postgresql"), "u", "s", "{}", delta(a="x"), 1.0, None, NOW),
        _refused("22P05"),
        [('{"b":"\\u0000"}', 4, True)],
        [(5, 4)],
    )
    assert steps[1] == _ops.BEGIN
    assert "FOR UPDATE" in sql("postgresql", steps[2].statement)
    assert steps[3].params["p_state"] == '{"b":"\\u0000","a":"x"}'
    assert steps[3].params["p_expected"] == 4
    assert steps[3].statement is append_statement("postgresql", "replace", True)
    assert steps[-1] == _ops.COMMIT
    assert version == 5


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_create_on_a_live_key_raises(dialect: str) -> None:
    with pytest.raises(SessionExistsError):
        drive(
            _ops_service.create_session(ctx(dialect), "u", "s", delta(), 1.0, NOW),
            [],
        )


def test_postgres_create_is_one_statement_that_clears_leftover_events() -> None:
    steps, record = drive(
        _ops_service.create_session(
            ctx("postgresql"), "u", "s", delta(a=1, **{"app:x": 2}), 1.5, NOW
        ),
        [(1, '"x":1,"y":[3]', None)],  # the version, and the app state before the write
    )
    assert len(steps) == 1
    text = sql("postgresql", steps[0].statement)
    assert "DELETE FROM statekeeper_events" in text
    assert "INSERT INTO statekeeper_app_state" in text
    assert "string_agg" in text  # the scoped state, read in the same statement
    assert record.state == {"a": 1, "app:x": 2, "app:y": [3]}  # the delta over what was there
    assert record.update_time == 1.5


def test_sqlite_create_without_scoped_keys_needs_no_transaction() -> None:
    steps, record = drive(
        _ops_service.create_session(ctx("sqlite"), "u", "s", delta(a=1), 1.5, NOW),
        [(1, None, '"k":"v"')],
        [],
    )
    assert _ops.BEGIN not in steps
    assert len(steps) == 2  # the insert (with the scoped state), the leftover events' delete
    assert sql("sqlite", steps[1].statement).startswith("DELETE FROM statekeeper_events")
    assert record.state == {"a": 1, "user:k": "v"}
    steps, _ = drive(
        _ops_service.create_session(ctx("sqlite"), "u", "s", delta(**{"app:a": 1}), 1.5, NOW),
        [(1, None, None)],
        [],
        [],
    )
    assert steps[0] == _ops.BEGIN
    assert steps[-1] == _ops.COMMIT


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("recent", "after"), [(None, None), (10, None), (None, 2.0), (3, 2.0)])
def test_event_reads_use_the_key_and_seq(
    dialect: str, recent: int | None, after: float | None
) -> None:
    steps, record = drive(
        _ops_service.get_session(ctx(dialect), "u", "s", recent, after, NOW),
        [("{}", 3, 2, 1.5, NOW, NOW, None, '"a":1', '"b":2')],
        [(2, 2.0, '{"b":2}'), (1, 1.0, '{"a":1}')]  # the last N come newest first
        if recent
        else [(1, 1.0, '{"a":1}'), (2, 2.0, '{"b":2}')],
    )
    assert record.state == {"app:a": 1, "user:b": 2}
    read = steps[1]
    text = sql(dialect, read.statement)
    assert "statekeeper_events.seq <=" in text  # never past the session's own count
    assert read.params["p_count"] == 2
    if recent:
        assert "ORDER BY statekeeper_events.seq DESC" in text
        assert "LIMIT" in text
    else:
        assert "ORDER BY statekeeper_events.seq" in text
        assert "DESC" not in text
    assert ("statekeeper_events.timestamp >=" in text) == (after is not None)
    assert [e.seq for e in record.events] == [1, 2]


def test_recent_zero_and_an_empty_log_read_no_events() -> None:
    steps, record = drive(
        _ops_service.get_session(ctx("sqlite"), "u", "s", 0, None, NOW),
        [("{}", 3, 2, 1.5, NOW, NOW, None, None, None)],
    )
    assert len(steps) == 1  # the session row carries its scoped state
    assert record.events == ()
    steps, _ = drive(_ops_service.get_session(ctx("sqlite"), "u", "s", None, None, NOW), [ROW])
    assert len(steps) == 1


def test_get_with_ttl_refreshes_the_expiry() -> None:
    c = ctx("postgresql", dt.timedelta(seconds=5))
    steps, _ = drive(_ops_service.get_session(c, "u", "s", 0, None, NOW), [ROW])
    assert sql("postgresql", steps[0].statement).startswith("UPDATE")
    assert steps[0].params["p_expires"] == NOW + dt.timedelta(seconds=5)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_delete_and_purge_take_the_events(dialect: str) -> None:
    answers: list[Any] = [[], [(None,)]] if dialect == "sqlite" else [[(None,)]]
    steps, deleted = drive(_ops.delete_session(ctx(dialect), "u", "s", NOW), *answers)
    assert deleted is True
    texts = " ".join(sql(dialect, s.statement) for s in steps if isinstance(s, _ops.Call))
    assert "DELETE FROM statekeeper_events" in texts
    assert "DELETE FROM statekeeper_sessions" in texts
    if dialect == "sqlite":
        assert steps[0] == _ops.BEGIN
    else:
        assert len(steps) == 1

    class Deleted:
        rowcount = 1

    op = _ops.purge_expired(ctx(dialect), NOW)
    purge = [next(op), op.send(Deleted())]  # one short batch, then the events left over
    with pytest.raises(StopIteration) as stop:
        op.send(Deleted())
    assert stop.value.value == 1
    assert "DELETE FROM statekeeper_events" in sql(dialect, purge[1].statement)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_listing_is_one_statement_with_each_users_state(dialect: str) -> None:
    page = ("u", "s", "{}", 2, 1, 1.5, NOW, NOW, None, '"a":1', '"n":1')
    steps, result = drive(
        _ops_service.list_sessions(ctx(dialect), None, 1, None, False, NOW),
        [page, ("v", *page[1:-1], '"n":2')],
    )
    assert len(steps) == 1
    assert "statekeeper_user_state.user_id = statekeeper_sessions.user_id" in sql(
        dialect, steps[0].statement
    )
    assert [r.state for r in result.items] == [{"app:a": 1, "user:n": 1}]
    assert result.next_cursor is not None


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_statements_are_built_once(dialect: str) -> None:
    assert service_statements(dialect) is service_statements(dialect)
    assert append_statement(dialect, "merge", True, 2) is append_statement(
        dialect, "merge", True, 2
    )


# --------------------------------------------------------------------------- imports


def _whole(session: str, *events: tuple[float, dict[str, Any]]) -> _ops_import.WholeSession:
    return _ops_import.WholeSession(
        user_id="u",
        session_id=session,
        state={"a": 1},
        state_text='{"a":1}',
        events=tuple((ts, doc, json.dumps(doc)) for ts, doc in events),
        created_at=NOW,
        updated_at=NOW,
        update_time=2.5,
    )


def _names(steps: list[Any]) -> list[str]:
    return [s if isinstance(s, str) else type(s).__name__ for s in steps]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_import_writes_a_batch_of_sessions_in_one_transaction(dialect: str) -> None:
    batch = [_whole("s1", (1.0, {"n": 1}), (1.0, {"n": 2})), _whole("s2"), _whole("s3", (2.0, {}))]
    steps, verdicts = drive(
        _ops_import.import_sessions(ctx(dialect), batch, False, False, NOW),
        [],  # none of the keys is there
        [("u", "s1"), ("u", "s2"), ("u", "s3")],
        [],
        [],
    )
    assert verdicts == ["imported"] * 3
    assert _names(steps) == ["BEGIN", "Call", "Call", "Call", "Call", "COMMIT"]
    read, rows, clear, log = steps[1:-1]
    if dialect == "postgresql":
        assert "FOR UPDATE" in sql(dialect, read.statement)
        # One user per locking statement (Citus refuses FOR UPDATE across shards).
        assert "statekeeper_sessions.user_id = %(p_user)s" in sql(dialect, read.statement)
        assert read.params["p_user"] == "u"
        assert read.params["p_sessions"] == ["s1", "s2", "s3"]
    assert [r["p_version"] for r in rows.params] == [3, 1, 2]  # a create's 1, one per event
    assert [r["p_count"] for r in rows.params] == [2, 0, 1]
    assert {r["p_time"] for r in rows.params} == {2.5}
    assert "DELETE FROM statekeeper_events" in sql(dialect, clear.statement)
    assert [(p["p_session"], p["p_seq"], p["p_time"]) for p in log.params] == [
        ("s1", 1, 1.0),
        ("s1", 2, 1.0),
        ("s3", 1, 2.0),
    ]  # every event of the batch in one executemany, in order


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_import_of_sessions_already_there_writes_nothing(dialect: str) -> None:
    batch = [_whole("s1", (1.0, {"n": 1}))]
    stored = [("u", "s1", '{"a":1}', 2, 1, True)]

    def op(overwrite: bool = False, dry_run: bool = False) -> Any:
        return _ops_import.import_sessions(ctx(dialect), batch, overwrite, dry_run, NOW)

    steps, verdicts = drive(op(), stored, [("u", "s1", 1, 1.0, '{"n":1}')])
    assert verdicts == ["unchanged"]
    assert _names(steps) == ["BEGIN", "Call", "Call", "COMMIT"]  # the rows, their events
    assert drive(op(), stored, [("u", "s1", 1, 1.0, '{"n":2}')])[1] == ["differs"]
    leftover = [("u", "s1", 1, 1.0, '{"n":1}'), ("u", "s1", 2, 1.0, "{}")]  # past the count
    assert drive(op(), stored, leftover)[1] == ["unchanged"]
    steps, verdicts = drive(op(overwrite=True), stored, [("u", "s1", 1, 1.0, "{}")], [(3,)], [], [])
    assert verdicts == ["imported"]
    assert steps[3].params["p_expected"] == 2  # replaced only if still at the version read
    assert steps[3].params["p_version"] == 3


def test_a_dry_run_import_only_reads() -> None:
    op = _ops_import.import_sessions(ctx("postgresql"), [_whole("s")], False, True, NOW)
    steps, verdicts = drive(op, [])
    assert verdicts == ["imported"]
    assert len(steps) == 1
    assert "FOR UPDATE" not in sql("postgresql", steps[0].statement)


def test_a_session_written_meanwhile_raises_conflict() -> None:
    batch = [_whole("s1"), _whole("s2")]
    op = _ops_import.import_sessions(ctx("postgresql"), batch, False, False, NOW)
    with pytest.raises(ConflictError, match="'s2' of user 'u' was written by someone else"):
        drive(op, [], [("u", "s1")])


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_scoped_import_replaces_whole_scopes_in_one_transaction(dialect: str) -> None:
    batch = [
        _ops_import.WholeScope(None, {"k": 1}, {"k": "1"}),
        _ops_import.WholeScope("u", {"k": 2}, {"k": "2"}),
        _ops_import.WholeScope("v", {"k": 3}, {"k": "3"}),
    ]

    def op() -> Any:
        return _ops_import.import_scopes(ctx(dialect), batch, False, False)

    # PostgreSQL reads (and locks) one user per statement, users in order.
    per_user = dialect == "postgresql"
    users_read: list[Any] = [[], [("v", "k", "3")]] if per_user else [[("v", "k", "3")]]
    steps, verdicts = drive(op(), [], *users_read, [], [], [], [])
    assert verdicts == ["imported", "imported", "unchanged"]
    n = len(users_read) - 1
    assert _names(steps) == ["BEGIN", *["Call"] * (6 + n), "COMMIT"]
    if per_user:
        assert [steps[i].params["p_user"] for i in (2, 3)] == ["u", "v"]
    assert steps[4 + n].params["p_users"] == ["u"]  # only the written users' rows are replaced
    assert steps[5 + n].params == [{"p_app": "app", "p_key": "k", "p_value": "1"}]
    assert steps[6 + n].params == [{"p_app": "app", "p_user": "u", "p_key": "k", "p_value": "2"}]
    stored: list[Any] = (
        [[("u", "k", "2")], [("v", "k", "3")]] if per_user else [[("u", "k", "2"), ("v", "k", "3")]]
    )
    _, verdicts = drive(op(), [("k", "2")], *stored)
    assert verdicts == ["differs", "unchanged", "unchanged"]
