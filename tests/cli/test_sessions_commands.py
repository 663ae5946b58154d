"""``statekeeper sessions``: ls, show, rm, purge, run as the installed command."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from statekeeper import SqlSession, migrations
from statekeeper._sql.schema import sessions
from statekeeper._sql.statements.store import PURGE_BATCH

BOX_DRAWING = set("┏┓┗┛━┃│─┡┩╇┳┻╋┼")
RECORD_KEYS = [
    "app_name",
    "user_id",
    "session_id",
    "version",
    "created_at",
    "updated_at",
    "expires_at",
    "size_bytes",
    "event_count",
]


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


def _insert_expired(url: str, app: str, count: int) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    row = {"user_id": "u", "state": {}, "version": 1}
    times = {"created_at": past, "updated_at": past, "expires_at": past}
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(sessions),
                [{**row, **times, "app_name": app, "session_id": f"old{i}"} for i in range(count)],
            )
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


def _tsv(output: str) -> list[list[str]]:
    """The rows of plain ``ls`` output, after checking its header."""
    header, *rows = output.splitlines()
    assert header.split("\t") == [
        "user",
        "session",
        "version",
        "updated (UTC)",
        "expires (UTC)",
        "size (bytes)",
        "events",
    ]
    return [line.split("\t") for line in rows]


def test_ls_piped_prints_plain_lines(url: str, cli: Any) -> None:
    with SqlSession(url, app_name="bot") as store:
        store.set_state("s1", {"text": "héllo"}, user_id="alice")  # é: 2 bytes in UTF-8
        store.merge_state("s1", {"n": 1}, user_id="alice")
        store.set_state("s2", {}, user_id="bob")
        store.set_state("s3", {}, user_id="tab\there")
    with SqlSession(url, app_name="other") as store:
        store.set_state("hidden", {}, user_id="alice")

    result = cli("sessions", "ls", "--url", url, "--app", "bot")
    assert result.code == 0, result
    assert not BOX_DRAWING & set(result.stdout)
    rows = _tsv(result.stdout)
    assert [r[:3] for r in rows] == [  # newest first; a tab in an id is escaped
        ["tab\\there", "s3", "1"],
        ["bob", "s2", "1"],
        ["alice", "s1", "2"],
    ]
    sizes = {r[1]: int(r[5]) for r in rows}
    assert sizes["s1"] == len(_stored_text(url, "s1").encode())  # UTF-8 bytes
    assert sizes["s2"] == 2  # "{}"
    assert all(r[4] == "-" for r in rows)  # no ttl: never expires
    assert result.stderr == ""

    result = cli("sessions", "ls", "--url", url, "--app", "bot", "--user", "alice")
    assert [r[1] for r in _tsv(result.stdout)] == ["s1"]


def test_ls_json_is_one_document_with_stable_keys(url: str, cli: Any) -> None:
    with SqlSession(url, app_name="bot", ttl=3600) as store:
        store.set_state("s1", {"a": "\ud800"}, user_id="alice")
        store.merge_state("s1", {"b": 2}, user_id="alice")
    result = cli("sessions", "ls", "--url", url, "--app", "bot", "--json")
    assert result.code == 0, result
    document = json.loads(result.stdout)
    assert list(document) == ["app_name", "user_id", "sessions", "next_cursor"]
    assert document["app_name"] == "bot"
    assert document["user_id"] is None  # every user
    assert document["next_cursor"] is None
    (record,) = document["sessions"]
    assert list(record) == RECORD_KEYS
    assert record["user_id"] == "alice"
    assert record["session_id"] == "s1"
    assert record["version"] == 2
    assert record["size_bytes"] == len(_stored_text(url, "s1").encode())
    updated = dt.datetime.fromisoformat(record["updated_at"])
    expires = dt.datetime.fromisoformat(record["expires_at"])
    assert updated.utcoffset() == dt.timedelta(0)
    assert dt.timedelta(minutes=59) < expires - updated <= dt.timedelta(hours=1)


def test_ls_pages_with_a_cursor(url: str, cli: Any) -> None:
    with SqlSession(url) as store:
        for i in range(130):
            store.set_state(f"s{i:03d}", {"i": i}, user_id="u")
    result = cli("sessions", "ls", "--url", url, "--limit", "120")
    assert result.code == 0, result
    first = _tsv(result.stdout)
    assert len(first) == 120
    assert "More sessions exist" in result.stderr
    cursor = result.stderr.split("--cursor")[1].split()[0]

    result = cli("sessions", "ls", "--url", url, "--limit", "120", "--cursor", cursor)
    assert result.code == 0, result
    rest = _tsv(result.stdout)
    assert len(rest) == 10
    assert "More sessions exist" not in result.stderr
    assert {r[1] for r in first + rest} == {f"s{i:03d}" for i in range(130)}

    # The same walk with --json: next_cursor until null, every session once.
    seen: list[str] = []
    cursor_args: list[str] = []
    while True:
        page = json.loads(
            cli("sessions", "ls", "--url", url, "--limit", "50", "--json", *cursor_args).stdout
        )
        seen += [r["session_id"] for r in page["sessions"]]
        if page["next_cursor"] is None:
            break
        cursor_args = ["--cursor", page["next_cursor"]]
    assert sorted(seen) == [f"s{i:03d}" for i in range(130)]
    assert len(seen) == 130


def test_ls_refuses_a_bad_cursor_and_limit(url: str, cli: Any) -> None:
    result = cli("sessions", "ls", "--url", url, "--cursor", "nope")
    assert result.code == 1
    assert "invalid cursor" in result.stderr
    result = cli("sessions", "ls", "--url", url, "--limit", "0")
    assert result.code == 2  # bad arguments
    assert "--limit" in result.stderr


@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()
        for fields in (
            ["2026-01-01T00:00:00+00:00", "u\x00", "s"],
            ["2026-01-01T00:00:00+00:00", "\ud800", "s"],
            ["0001-01-01T00:00:00+05:00", "u", "s"],
            {"a": 1},
        )
    ]
    + ["A" * 20_000],
    ids=["nul", "lone surrogate", "overflowing stamp", "object", "huge"],
)
def test_ls_refuses_a_hostile_cursor_in_one_line(url: str, cli: Any, cursor: str) -> None:
    with SqlSession(url) as store:
        store.set_state("s", {"secret": 1}, user_id="u")
    for user in ([], ["--user", "u"]):
        result = cli("sessions", "ls", "--url", url, "--json", "--cursor", cursor, *user)
        assert result.code == 1, result
        assert "invalid cursor" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr) < 1000
        assert result.stdout == ""


def test_ls_on_a_terminal_draws_a_table(sqlite_url: str, terminal: Any) -> None:
    url = sqlite_url
    migrations.upgrade(url)
    with SqlSession(url, app_name="bot", ttl=3600) as store:
        store.set_state("s1", {}, user_id="alice")
    result = terminal("sessions", "ls", "--url", url, "--app", "bot")
    assert result.code == 0, result
    assert "1 session(s) of every user in app 'bot'" in result.stdout
    assert BOX_DRAWING & set(result.stdout)
    row = next(line for line in result.stdout.splitlines() if "alice" in line)
    cells = [cell.strip() for cell in row.strip().strip("│").split("│")]
    assert cells[:3] == ["alice", "s1", "1"]
    assert cells[4] > cells[3]  # expires after the last update


def test_show_prints_the_state_as_json(url: str, cli: Any) -> None:
    state = {"agent": {"name": "[bold]Friday[/bold]", "nul": "a\u0000b", "odd": "x\ud800y"}}
    with SqlSession(url, app_name="bot") as store:
        store.set_state("s1", state, user_id="alice")
    args = ("sessions", "show", "s1", "--url", url, "--app", "bot", "--user", "alice")
    result = cli(*args)
    assert result.code == 0, result
    assert json.loads(result.stdout) == state  # markup is not interpreted, escapes survive
    assert "\n  " in result.stdout  # pretty-printed

    result = cli(*args, "--json")
    assert result.code == 0, result
    document = json.loads(result.stdout)
    assert list(document) == [*RECORD_KEYS, "state", "app_state", "user_state", "events"]
    assert document["state"] == state
    assert document["session_id"] == "s1"
    assert document["user_id"] == "alice"
    assert document["version"] == 1
    assert document["expires_at"] is None
    assert document["size_bytes"] == len(_stored_text(url, "s1").encode())


def test_show_does_not_refresh_the_expiry(url: str, cli: Any) -> None:
    with SqlSession(url, ttl=3600) as store:
        store.set_state("s1", {"a": 1})
        before = store.list_sessions().items[0].expires_at
    assert cli("sessions", "show", "s1", "--url", url).code == 0
    with SqlSession(url) as store:
        assert store.list_sessions().items[0].expires_at == before


def test_show_and_rm_of_a_missing_session_fail_clearly(url: str, cli: Any) -> None:
    for command in ("show", "rm"):
        result = cli("sessions", command, "nope", "--url", url, "--user", "alice")
        assert result.code == 1, result
        assert "no session 'nope' of user 'alice' in app ''" in result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_rm_deletes_one_session(url: str, cli: Any) -> None:
    with SqlSession(url) as store:
        store.set_state("s1", {}, user_id="alice")
        store.set_state("s1", {}, user_id="bob")
    result = cli("sessions", "rm", "s1", "--url", url, "--user", "alice")
    assert result.code == 0, result
    assert "Deleted session 's1' of user 'alice'" in result.stdout
    with SqlSession(url) as store:
        assert not store.session_exists("s1", "alice")
        assert store.session_exists("s1", "bob")


def test_purge_counts_expired_sessions(url: str, cli: Any) -> None:
    for app in ("a", "b"):
        with SqlSession(url, app_name=app, ttl=3600) as store:
            store.set_state("gone1", {})
            store.set_state("gone2", {})
    _expire_all(url)
    with SqlSession(url, app_name="a") as store:
        store.set_state("kept", {})

    result = cli("sessions", "purge", "--url", url, "--app", "a")
    assert result.code == 0, result
    assert "Purged 2 expired session(s) of app 'a'" in result.stdout

    _insert_expired(url, "c", PURGE_BATCH + 5)  # more than one batch
    result = cli("sessions", "purge", "--url", url)
    assert result.code == 0, result
    assert "app 'b': 2" in result.stdout
    assert f"app 'c': {PURGE_BATCH + 5}" in result.stdout
    assert f"Purged {PURGE_BATCH + 7} expired session(s) in 2 app(s)" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    with SqlSession(url, app_name="a") as store:
        assert store.session_exists("kept")
    with SqlSession(url, app_name="c") as store:
        assert store.purge_expired() == 0


def test_purge_shows_progress_on_a_terminal(sqlite_url: str, terminal: Any) -> None:
    migrations.upgrade(sqlite_url)
    _insert_expired(sqlite_url, "", 3 * PURGE_BATCH + 1)
    result = terminal("sessions", "purge", "--url", sqlite_url, "--app", "")
    assert result.code == 0, result
    assert "purging expired sessions" in result.stdout  # the bar, drawn on stderr
    assert f"Purged {3 * PURGE_BATCH + 1} expired session(s) of app ''" in result.stdout


SESSION_COMMANDS = (["ls"], ["show", "s1"], ["rm", "s1"], ["purge"], ["purge", "--app", "a"])


def test_sessions_on_an_unmigrated_database_name_the_url_and_command(
    empty_url: str, cli: Any
) -> None:
    typed = empty_url.replace("postgresql+psycopg://", "postgresql://")  # as a user types it
    for args in SESSION_COMMANDS:
        result = cli("sessions", *args, "--url", typed)
        assert result.code == 3, (args, result)  # not migrated
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert f"statekeeper db upgrade --url '{typed}'" in line, args
        assert f"the database {typed} has no statekeeper tables" in line, args
        assert "auto_migrate" not in line  # a command-line user cannot pass it


@pytest.mark.parametrize(
    "args",
    [
        *(["sessions", *a] for a in SESSION_COMMANDS),
        ["db", "current"],
        ["db", "check"],
        ["db", "upgrade"],
        ["db", "downgrade", "base", "--yes"],
        ["db", "history"],
    ],
    ids=lambda a: " ".join(a),
)
def test_an_unreachable_database_is_one_line_without_traceback(args: list[str], cli: Any) -> None:
    url = "postgresql://postgres@127.0.0.1:1/x"  # port 1: nothing listens
    result = cli(*args, "--url", url)
    assert result.code == 4, result  # unreachable
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: could not reach the database {url}: ")
    assert "Connection refused" in line


def test_an_sqlite_file_that_cannot_be_created_is_unreachable(tmp_path: Any, cli: Any) -> None:
    url = f"sqlite:///{tmp_path / 'missing-folder' / 'x.db'}"
    result = cli("db", "upgrade", "--url", url)
    assert result.code == 4, result
    (line,) = result.stderr.splitlines()
    assert "folder exists" in line


@pytest.mark.parametrize(
    "args",
    [
        *(["sessions", *a] for a in SESSION_COMMANDS),
        ["db", "current"],
        ["db", "check"],
        ["db", "history"],
    ],
    ids=lambda a: " ".join(a),
)
@pytest.mark.parametrize("form", ["plain", "uri"])
def test_a_missing_sqlite_file_is_reported_and_never_created(
    args: list[str], form: str, tmp_path: Any, cli: Any
) -> None:
    path = tmp_path / "typo.db"
    url = f"sqlite:///{path}" if form == "plain" else f"sqlite:///file:{path}?mode=rw&uri=true"
    result = cli(*args, "--url", url)
    assert result.code == 4, result  # the database cannot be reached
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: could not reach the database sqlite:///"), line
    assert f"the SQLite file {path} does not exist" in line
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no journal, WAL or shared-memory file either


def test_sessions_in_a_postgresql_schema(pg_empty_database: str, cli: Any) -> None:
    url = pg_empty_database
    migrations.upgrade(url, schema="agents")
    with SqlSession(url, schema="agents") as store:
        store.set_state("s1", {"a": 1})
    result = cli("sessions", "ls", "--url", url, "--schema", "agents", "--json")
    assert result.code == 0, result
    assert [r["session_id"] for r in json.loads(result.stdout)["sessions"]] == ["s1"]
    result = cli("sessions", "show", "s1", "--url", url, "--schema", "agents")
    assert json.loads(result.stdout) == {"a": 1}
    result = cli("sessions", "ls", "--url", url)  # the public schema has no tables
    assert result.code == 3
    assert "--schema" not in result.stderr
    result = cli("sessions", "ls", "--url", url, "--schema", "other")
    assert result.code == 3
    assert "--schema other" in result.stderr
