"""``statekeeper sessions ls`` and ``show`` on event-log sessions, run as the installed command."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from tests.cli.test_sessions_commands import RECORD_KEYS, _expire_all, _tsv

from statekeeper import SessionService, SqlSession, migrations
from statekeeper._sql.schema import sessions

T0 = 1763742578.101938  # 2025-11-21 16:29:38.101938 UTC
SHOW_KEYS = [*RECORD_KEYS, "state", "app_state", "user_state", "events"]


@pytest.fixture
def url(empty_url: str) -> str:
    """A migrated database of the backend under test, for this test alone."""
    migrations.upgrade(empty_url)
    return empty_url


def _utc(timestamp: float) -> str:
    """An event time as ``show`` prints it: UTC to the microsecond."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _log(url: str, count: int, *, session_id: str = "s1", user_id: str = "alice") -> list[Any]:
    """Create a session of app "bot" with ``count`` events a second apart; return the events."""
    events = [{"author": "user" if i % 2 else "agent", "text": f"turn {i}"} for i in range(count)]
    with SessionService(url, app_name="bot") as svc:
        svc.create_session(session_id, user_id, state={"agent": {"name": "Friday"}})
        for i, event in enumerate(events):
            svc.append_event(session_id, event, user_id, timestamp=T0 + i)
    return events


def _event_lines(output: str) -> list[list[str]]:
    """The event lines of piped ``show`` output: seq, time, JSON, tab-separated."""
    return [line.split("\t") for line in output.splitlines() if "\t" in line]


def test_ls_shows_each_sessions_event_count(url: str, cli: Any) -> None:
    _log(url, 3, session_id="chat", user_id="alice")
    _log(url, 0, session_id="fresh", user_id="bob")
    with SqlSession(url, app_name="bot") as store:
        store.set_state("plain", {"a": 1}, user_id="carol")

    result = cli("sessions", "ls", "--url", url, "--app", "bot")
    assert result.code == 0, result
    counts = {row[1]: row[6] for row in _tsv(result.stdout)}
    assert counts == {"chat": "3", "fresh": "0", "plain": "0"}

    result = cli("sessions", "ls", "--url", url, "--app", "bot", "--json")
    document = json.loads(result.stdout)
    assert {r["session_id"]: r["event_count"] for r in document["sessions"]} == {
        "chat": 3,
        "fresh": 0,
        "plain": 0,
    }
    assert all(list(r) == RECORD_KEYS for r in document["sessions"])


def test_ls_counts_stay_right_across_pages(url: str, cli: Any) -> None:
    for i in range(5):
        _log(url, i, session_id=f"s{i}")  # s4 is the newest
    seen: dict[str, int] = {}
    cursor: list[str] = []
    while True:
        args = ("sessions", "ls", "--url", url, "--app", "bot", "--limit", "2", "--json")
        page = json.loads(cli(*args, *cursor).stdout)
        assert len(page["sessions"]) <= 2
        seen.update({r["session_id"]: r["event_count"] for r in page["sessions"]})
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]
    assert seen == {f"s{i}": i for i in range(5)}


def test_a_new_session_in_an_expired_ones_place_counts_none_of_its_events(
    url: str, cli: Any
) -> None:
    with SessionService(url, app_name="bot", ttl=3600) as svc:
        svc.create_session("s1", "alice")
        for i in range(4):
            svc.append_event("s1", {"i": i}, "alice", timestamp=T0 + i)
    _expire_all(url)
    with SqlSession(url, app_name="bot") as store:  # the old events stay in the table
        store.set_state("s1", {"fresh": True}, user_id="alice")

    result = cli("sessions", "ls", "--url", url, "--app", "bot", "--json")
    (record,) = json.loads(result.stdout)["sessions"]
    assert record["event_count"] == 0
    args = ("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice")
    document = json.loads(cli(*args, "--json", "--events", "all").stdout)
    assert document["events"] == []
    assert document["state"] == {"fresh": True}


def test_show_prints_the_last_events_in_order(url: str, cli: Any) -> None:
    events = _log(url, 25)
    args = ("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice")

    result = cli(*args)  # the last 20 by default
    assert result.code == 0, result
    assert result.stdout.startswith('{\n  "agent": {\n    "name": "Friday"\n  }\n}\n')
    assert "the last 20 of 25 event(s), oldest first, times in UTC" in result.stdout
    lines = _event_lines(result.stdout)
    assert [int(seq) for seq, _, _ in lines] == list(range(6, 26))
    for seq, when, text in lines:
        assert when == _utc(T0 + int(seq) - 1)
        assert json.loads(text) == events[int(seq) - 1]

    result = cli(*args, "--events", "3")
    assert [line[0] for line in _event_lines(result.stdout)] == ["23", "24", "25"]

    result = cli(*args, "--events", "all")
    assert "25 event(s), oldest first, times in UTC:" in result.stdout
    assert [json.loads(text) for _, _, text in _event_lines(result.stdout)] == events

    result = cli(*args, "--events", "0")
    assert result.code == 0, result
    assert json.loads(result.stdout) == {"agent": {"name": "Friday"}}  # the state alone


def test_show_json_holds_the_events_exactly(url: str, cli: Any) -> None:
    odd = {"nul": "a\u0000b", "lone": "x\ud800y", "big": 2**70, "neg": -0.0, "é": "ü\n\t"}
    stamps = [T0, 0.1, T0 + 1e-7, 1e-300]  # finer than a microsecond: kept as appended
    events = [{"i": i, **odd} for i in range(len(stamps))]
    with SessionService(url, app_name="bot") as svc:
        svc.create_session(
            "s1", "alice", state={"own": odd, "app:shared": "\ud800", "user:pref": [1]}
        )
        for event, stamp in zip(events, stamps, strict=True):
            svc.append_event("s1", event, "alice", timestamp=stamp)
    args = ("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice", "--json")

    result = cli(*args, "--events", "all")
    assert result.code == 0, result
    assert result.stdout.isascii()
    document = json.loads(result.stdout)
    assert list(document) == SHOW_KEYS
    assert document["event_count"] == 4
    assert document["version"] == 5
    assert document["state"] == {"own": odd}  # the session's own state
    assert document["app_state"] == {"shared": "\ud800"}
    assert document["user_state"] == {"pref": [1]}
    assert [list(e) for e in document["events"]] == [["seq", "timestamp", "time", "data"]] * 4
    assert [e["seq"] for e in document["events"]] == [1, 2, 3, 4]
    assert [e["data"] for e in document["events"]] == events
    assert [e["timestamp"] for e in document["events"]] == stamps  # exact floats
    assert document["events"][0]["time"] == "2025-11-21T16:29:38.101938+00:00"

    last = json.loads(cli(*args, "--events", "2").stdout)
    assert [e["seq"] for e in last["events"]] == [3, 4]
    none = json.loads(cli(*args, "--events", "0").stdout)
    assert none["events"] == []
    assert none["event_count"] == 4

    # Piped, each event is one line that parses back to the same document.
    plain = cli(*args[:-1], "--events", "all").stdout
    assert "app state (app: keys, shared by every session of app 'bot'):" in plain
    assert "user state (user: keys, shared by every session of user 'alice'):" in plain
    assert [json.loads(text) for _, _, text in _event_lines(plain)] == events


def test_show_of_a_store_session_prints_its_state_alone(url: str, cli: Any) -> None:
    with SessionService(url, app_name="bot") as svc:
        svc.create_session("chat", "alice", state={"app:shared": 1})  # the app has state
    with SqlSession(url, app_name="bot") as store:
        store.set_state("plain", {"a": [1, 2]}, user_id="bob")
    result = cli("sessions", "show", "plain", "--url", url, "--app", "bot", "--user", "bob")
    assert result.code == 0, result
    assert json.loads(result.stdout) == {"a": [1, 2]}
    assert result.stderr == ""
    args = ("sessions", "show", "plain", "--url", url, "--app", "bot", "--user", "bob", "--json")
    document = json.loads(cli(*args).stdout)
    assert (document["event_count"], document["events"]) == (0, [])
    assert document["app_state"] == {"shared": 1}  # labelled: the app's, not the session's


def test_show_on_a_terminal_says_when_there_are_no_events(sqlite_url: str, terminal: Any) -> None:
    url = sqlite_url
    migrations.upgrade(url)
    _log(url, 0, session_id="fresh")
    _log(url, 2, session_id="chat")
    with SqlSession(url, app_name="bot") as store:
        store.set_state("plain", {}, user_id="alice")
    base = ("sessions", "show")
    where = ("--url", url, "--app", "bot", "--user", "alice")

    result = terminal(*base, "fresh", *where)
    assert result.code == 0, result
    assert "no events" in result.stdout
    assert "no events" not in terminal(*base, "plain", *where).stdout
    result = terminal(*base, "chat", *where)
    assert "2 event(s), oldest first" in result.stdout
    assert f"1  {_utc(T0)}  " in result.stdout
    assert f"2  {_utc(T0 + 1)}  " in result.stdout

    result = terminal("sessions", "ls", "--url", url, "--app", "bot")
    lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines()  # no colours
    header = next(line for line in lines if "session" in line and "┃" in line)
    assert header.strip().strip("┃").split("┃")[-1].strip() == "events"
    row = next(line for line in lines if "chat" in line)
    assert row.strip().strip("│").split("│")[-1].strip() == "2"


def test_show_does_not_refresh_an_event_sessions_expiry(url: str, cli: Any) -> None:
    with SessionService(url, app_name="bot", ttl=3600) as svc:
        svc.create_session("s1", "alice")
        svc.append_event("s1", {"n": 1}, "alice")
    with SqlSession(url, app_name="bot") as store:  # a listing refreshes nothing
        before = store.list_sessions().items[0].expires_at
    for extra in ((), ("--json",), ("--events", "all")):
        args = ("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice")
        assert cli(*args, *extra).code == 0
    assert cli("sessions", "ls", "--url", url, "--app", "bot").code == 0
    with SqlSession(url, app_name="bot") as store:
        assert store.list_sessions().items[0].expires_at == before


def test_show_of_an_unknown_or_expired_session_fails_clearly(url: str, cli: Any) -> None:
    with SessionService(url, app_name="bot", ttl=3600) as svc:
        svc.create_session("gone", "alice")
        svc.append_event("gone", {"n": 1}, "alice")
    _expire_all(url)
    for session_id in ("nope", "gone"):
        args = ("sessions", "show", session_id, "--url", url, "--app", "bot", "--user", "alice")
        result = cli(*args, "--events", "all", "--json")
        assert result.code == 1, result
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert f"no session {session_id!r} of user 'alice' in app 'bot'" in line


@pytest.mark.parametrize("value", ["-1", "many", ""])
def test_a_bad_events_value_is_a_usage_error(value: str, sqlite_url: str, cli: Any) -> None:
    result = cli("sessions", "show", "s1", "--url", sqlite_url, "--events", value)
    assert result.code == 2, result
    assert "Invalid value for '--events'" in result.stderr


def test_a_database_at_revision_0001_is_not_migrated(empty_url: str, cli: Any) -> None:
    migrations.upgrade(empty_url, "0001")
    typed = empty_url.replace("postgresql+psycopg://", "postgresql://")
    now = dt.datetime.now(dt.timezone.utc)
    engine = sa.create_engine(empty_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:  # a session written by a statekeeper of revision 0001
            conn.execute(
                sa.insert(sessions).values(
                    app_name="",
                    user_id="",
                    session_id="old",
                    state={"kept": True},
                    version=3,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        engine.dispose()
    for args in (["ls"], ["ls", "--json"], ["show", "old"], ["show", "old", "--json"]):
        result = cli("sessions", *args, "--url", typed)
        assert result.code == 3, (args, result)  # not migrated
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert "is at statekeeper revision 0001; this statekeeper needs revision 0003" in line
        assert f"statekeeper db upgrade --url '{typed}'" in line

    assert cli("db", "upgrade", "--url", typed).code == 0
    result = cli("sessions", "ls", "--url", typed, "--json")
    (record,) = json.loads(result.stdout)["sessions"]
    assert (record["session_id"], record["version"], record["event_count"]) == ("old", 3, 0)
    result = cli("sessions", "show", "old", "--url", typed)
    assert json.loads(result.stdout) == {"kept": True}


def test_ls_and_show_refuse_an_invalid_id_before_reading(sqlite_url: str, cli: Any) -> None:
    long = "u" * 256
    for args in (["ls", "--user", long], ["show", "s1", "--user", long]):
        result = cli("sessions", *args, "--url", sqlite_url)  # not even migrated
        assert result.code == 1, (args, result)
        (line,) = result.stderr.splitlines()
        assert "user_id is 256 characters long; at most 255 are allowed" in line
