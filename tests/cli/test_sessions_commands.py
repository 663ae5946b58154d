"""``statekeeper sessions``: ls, show, rm, purge."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from statekeeper import SessionService, SqlSession, migrations
from statekeeper._schema import sessions
from statekeeper.cli import main

if TYPE_CHECKING:
    from click.testing import Result


def _run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))


@pytest.fixture
def url(empty_url: str) -> str:
    """A migrated database of the backend under test, for this test alone."""
    migrations.upgrade(empty_url)
    return empty_url


def _stored_text(url: str, session_id: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            query = sa.text(
                "SELECT CAST(state AS TEXT) FROM statekeeper_sessions WHERE session_id = :s"
            )
            return str(conn.execute(query, {"s": session_id}).scalar_one())
    finally:
        engine.dispose()


def _expire_all(url: str) -> None:
    """Move every session's expiry an hour into the past."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(sessions).values(expires_at=past))
    finally:
        engine.dispose()


def _rows(output: str) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_ls_shows_ids_version_times_and_size(url: str) -> None:
    with SqlSession(url, app_name="bot") as store:
        store.set_state("s1", {"text": "héllo"}, user_id="alice")  # é: 2 bytes in UTF-8
        store.merge_state("s1", {"n": 1}, user_id="alice")
        store.set_state("s2", {}, user_id="bob")
    with SqlSession(url, app_name="other") as store:
        store.set_state("hidden", {}, user_id="alice")

    result = _run("sessions", "ls", "--url", url, "--app", "bot")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert [r[:3] for r in rows] == [["bob", "s2", "1"], ["alice", "s1", "2"]]  # newest first
    sizes = {r[1]: int(r[6]) for r in rows}
    assert sizes == {"s1": len(_stored_text(url, "s1").encode()), "s2": 2}  # UTF-8 bytes; "{}"
    assert all(r[5] == "-" for r in rows)  # no ttl: never expires
    assert [r[3] for r in rows] == ["0", "0"]  # no events
    assert "2 session(s) of every user in app 'bot'" in result.stdout

    result = _run("sessions", "ls", "--url", url, "--app", "bot", "--user", "alice")
    assert [r[1] for r in _rows(result.stdout)] == ["s1"]


def test_ls_pages_through_many_sessions(url: str) -> None:
    with SqlSession(url) as store:
        for i in range(130):
            store.set_state(f"s{i:03d}", {"i": i}, user_id="u")
    result = _run("sessions", "ls", "--url", url, "--limit", "120")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert len(rows) == 120
    assert len({r[1] for r in rows}) == 120
    assert "raise --limit" in result.stderr

    result = _run("sessions", "ls", "--url", url, "--limit", "500")
    assert len(_rows(result.stdout)) == 130
    assert "raise --limit" not in result.stderr


def test_ls_shows_expiry(url: str) -> None:
    with SqlSession(url, ttl=3600) as store:
        store.set_state("s1", {})
    (row,) = _rows(_run("sessions", "ls", "--url", url).stdout)
    assert row[5] != "-"
    assert row[5] > row[4]  # expires after the last update


def test_show_prints_the_state_as_json(url: str) -> None:
    state = {"agent": {"name": "[bold]Friday[/bold]", "nul": "a\u0000b", "odd": "x\ud800y"}}
    with SqlSession(url, app_name="bot") as store:
        store.set_state("s1", state, user_id="alice")
    result = _run("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == state  # markup is not interpreted, escapes survive
    assert "\n  " in result.stdout  # pretty-printed


def test_ls_shows_the_event_count(url: str) -> None:
    with SessionService(url, app_name="bot") as service:
        service.create_session("chat", "alice")
        for i in range(3):
            service.append_event("chat", {"i": i}, "alice")
    (row,) = _rows(_run("sessions", "ls", "--url", url, "--app", "bot").stdout)
    assert (row[1], row[2], row[3]) == ("chat", "4", "3")


def _chat(url: str, events: int) -> None:
    with SessionService(url, app_name="bot") as service:
        service.create_session("chat", "alice", state={"topic": "x", "app:a": 1})
        for i in range(events):
            service.append_event(
                "chat", {"i": i, "odd": "\ud800", "nul": "\x00"}, "alice", timestamp=1e9 + i
            )


def test_show_prints_the_last_events(url: str) -> None:
    _chat(url, 15)
    args = ("sessions", "show", "chat", "--url", url, "--app", "bot", "--user", "alice")
    result = _run(*args)
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert [r[0] for r in rows] == [str(seq) for seq in range(6, 16)]  # the last 10
    assert rows[0][1] == "2001-09-09 01:46:45.000000"  # 1e9 + 5 seconds, UTC
    assert json.loads(rows[-1][2]) == {"i": 14, "odd": "\ud800", "nul": "\x00"}
    assert "last 10 of 15 event(s)" in result.stdout
    assert json.loads(result.stdout[: result.stdout.index("last 10")]) == {
        "topic": "x",
        "app:a": 1,
    }
    assert [r[0] for r in _rows(_run(*args, "--last", "2").stdout)] == ["14", "15"]
    assert len(_rows(_run(*args, "--all-events").stdout)) == 15
    assert "event(s)" not in _run(*args, "--last", "0").stdout


def test_show_json_prints_the_whole_session(url: str) -> None:
    _chat(url, 3)
    result = _run(
        "sessions", "show", "chat", "--url", url, "--app", "bot", "--user", "alice", "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["session_id"], doc["user_id"], doc["app_name"]) == ("chat", "alice", "bot")
    assert doc["version"] == 4
    assert doc["update_time"] == 1e9 + 2
    assert doc["state"] == {"topic": "x", "app:a": 1}
    assert doc["events"] == [
        {"seq": i + 1, "timestamp": 1e9 + i, "data": {"i": i, "odd": "\ud800", "nul": "\x00"}}
        for i in range(3)
    ]
    assert dt.datetime.fromisoformat(doc["created_at"]).tzinfo is not None


def test_show_and_rm_of_a_missing_session_fail_clearly(url: str) -> None:
    for command in ("show", "rm"):
        result = _run("sessions", command, "nope", "--url", url, "--user", "alice")
        assert result.exit_code == 1
        assert "no session 'nope' of user 'alice' in app ''" in result.stderr


def test_rm_deletes_one_session(url: str) -> None:
    with SqlSession(url) as store:
        store.set_state("s1", {}, user_id="alice")
        store.set_state("s1", {}, user_id="bob")
    result = _run("sessions", "rm", "s1", "--url", url, "--user", "alice")
    assert result.exit_code == 0, result.output
    assert "Deleted session 's1' of user 'alice'" in result.stdout
    with SqlSession(url) as store:
        assert not store.session_exists("s1", "alice")
        assert store.session_exists("s1", "bob")


def test_rm_and_purge_delete_the_events(url: str) -> None:
    _chat(url, 3)
    assert (
        _run("sessions", "rm", "chat", "--url", url, "--app", "bot", "--user", "alice").exit_code
        == 0
    )
    with SessionService(url, app_name="bot", ttl=3600) as service:
        service.create_session("chat", "alice")
        assert service.get_session("chat", "alice").events == ()
        service.append_event("chat", {"a": 1}, "alice")
    _expire_all(url)
    assert "Purged 1 expired" in _run("sessions", "purge", "--url", url).stdout
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM statekeeper_events")).scalar() == 0
    engine.dispose()


def test_purge_counts_expired_sessions(url: str) -> None:
    for app in ("a", "b"):
        with SqlSession(url, app_name=app, ttl=3600) as store:
            store.set_state("gone1", {})
            store.set_state("gone2", {})
    _expire_all(url)
    with SqlSession(url, app_name="a") as store:
        store.set_state("kept", {})

    result = _run("sessions", "purge", "--url", url, "--app", "a")
    assert result.exit_code == 0, result.output
    assert "Purged 2 expired session(s) of app 'a'" in result.stdout

    result = _run("sessions", "purge", "--url", url)
    assert result.exit_code == 0, result.output
    assert "Purged 2 expired session(s) in 1 app(s)" in result.stdout
    with SqlSession(url, app_name="a") as store:
        assert store.session_exists("kept")


def test_sessions_on_an_unmigrated_database_name_the_command(empty_url: str) -> None:
    for args in (["ls"], ["show", "s1"], ["rm", "s1"], ["purge"], ["purge", "--app", "a"]):
        result = _run("sessions", *args, "--url", empty_url)
        assert result.exit_code == 1, args
        assert "statekeeper db upgrade --url" in result.stderr, args
        assert "Traceback" not in result.output


def test_sessions_in_a_postgresql_schema(pg_empty_database: str) -> None:
    url = pg_empty_database
    migrations.upgrade(url, schema="agents")
    with SqlSession(url, schema="agents") as store:
        store.set_state("s1", {"a": 1})
    result = _run("sessions", "ls", "--url", url, "--schema", "agents")
    assert result.exit_code == 0, result.output
    assert [r[1] for r in _rows(result.stdout)] == ["s1"]
    result = _run("sessions", "show", "s1", "--url", url, "--schema", "agents")
    assert json.loads(result.stdout) == {"a": 1}
