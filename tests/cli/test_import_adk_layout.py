"""``statekeeper import adk-database`` on ADK's layout written by hand, without google.adk.

The lowest-versions CI run installs no ADK, so test_import_adk.py skips there;
this keeps the import's statements running on the oldest SQLAlchemy and
psycopg the project supports. The ADK tables and statekeeper's share one
database, as they may.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa
from tests.cli.conftest import run_cli

from statekeeper import SessionService, migrations

T0 = 1_760_000_000.25


def _naive(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).replace(tzinfo=None)


def _write_adk_layout(url: str) -> None:
    """ADK's schema version 1, as its DatabaseSessionService creates and fills it."""
    engine = sa.create_engine(sa.make_url(url), poolclass=sa.NullPool)
    pg = engine.dialect.name == "postgresql"
    doc, when = ("JSONB", "TIMESTAMP WITHOUT TIME ZONE") if pg else ("TEXT", "DATETIME")
    js = "CAST(:{} AS JSONB)" if pg else ":{}"
    events = [  # id, timestamp (float), document; two share a microsecond
        ("e-b", T0 + 1, {"author": "user", "content": {"parts": [{"text": "hi 日本"}]}}),
        ("e-a", T0 + 1, {"author": "model", "actions": {"state_delta": {"turn": 1}}}),
        ("e-c", T0 + 2.5, {"author": "model"}),  # no "timestamp": the column's is taken
    ]
    with engine.begin() as conn:
        for ddl in (
            f"CREATE TABLE sessions (app_name VARCHAR(128), user_id VARCHAR(128), "
            f"id VARCHAR(128), state {doc} NOT NULL, create_time {when}, update_time {when}, "
            "PRIMARY KEY (app_name, user_id, id))",
            f"CREATE TABLE events (id VARCHAR(128), app_name VARCHAR(128), "
            f"user_id VARCHAR(128), session_id VARCHAR(128), invocation_id VARCHAR(256), "
            f"timestamp {when}, event_data {doc}, PRIMARY KEY (id, app_name, user_id, session_id))",
            f"CREATE TABLE app_states (app_name VARCHAR(128) PRIMARY KEY, state {doc}, "
            f"update_time {when})",
            f"CREATE TABLE user_states (app_name VARCHAR(128), user_id VARCHAR(128), "
            f"state {doc}, update_time {when}, PRIMARY KEY (app_name, user_id))",
            "CREATE TABLE adk_internal_metadata (key VARCHAR(128) PRIMARY KEY, value VARCHAR(256))",
            "INSERT INTO adk_internal_metadata VALUES ('schema_version', '1')",
        ):
            conn.execute(sa.text(ddl))
        insert = "INSERT INTO sessions VALUES (:a, :u, :s, {}, :c, :t)".format(js.format("state"))
        conn.execute(
            sa.text(insert),
            [
                {"a": "support", "u": "", "s": "s1", "state": json.dumps({"topic": "x"}),
                 "c": _naive(T0), "t": _naive(T0 + 2.5)},
                {"a": "support", "u": "bob", "s": "s2", "state": json.dumps({}),
                 "c": _naive(T0), "t": _naive(T0)},
            ],
        )  # fmt: skip
        rows = []
        for event_id, stamp, document in events:
            data: dict[str, Any] = {**document, "id": event_id, "invocation_id": "i1"}
            if event_id != "e-c":
                data["timestamp"] = stamp
            rows.append({"id": event_id, "t": _naive(stamp), "data": json.dumps(data)})
        insert = "INSERT INTO events VALUES (:id, 'support', '', 's1', 'i1', :t, {})"
        conn.execute(sa.text(insert.format(js.format("data"))), rows)
        state = js.format("state")
        conn.execute(
            sa.text(f"INSERT INTO app_states VALUES ('support', {state}, :t)"),
            {"state": json.dumps({"model": "m"}), "t": _naive(T0)},
        )
        conn.execute(
            sa.text(f"INSERT INTO user_states VALUES ('support', 'bob', {state}, :t)"),
            {"state": json.dumps({"lang": "fr"}), "t": _naive(T0)},
        )
    engine.dispose()


@pytest.fixture
def url(empty_url: str) -> str:
    """One database holding ADK's tables and, migrated, statekeeper's."""
    _write_adk_layout(empty_url)
    migrations.upgrade(empty_url)
    return empty_url


def test_imports_adks_layout_into_the_same_database(url: str) -> None:
    result = run_cli("import", "adk-database", url, "--to", url)
    assert result.code == 0, result
    assert "app and user states: imported 2, unchanged 0, skipped 0, failed 0 of 2" in result.stdout
    assert "imported 2, unchanged 0, skipped 0, failed 0 of 2 sessions" in result.stdout
    with SessionService(url, app_name="support") as service:
        session = service.get_session("s1")
        assert session is not None
        assert session.state == {"topic": "x", "app:model": "m"}
        assert [e.data["id"] for e in session.events] == ["e-a", "e-b", "e-c"]  # tie: by id
        assert [e.timestamp for e in session.events] == [T0 + 1, T0 + 1, T0 + 2.5]
        assert session.events[2].data["timestamp"] == T0 + 2.5  # from the column
        assert session.events[1].data["content"] == {"parts": [{"text": "hi 日本"}]}
        assert session.update_time == T0 + 2.5
        assert session.version == 4  # a create's 1, and one per event
        bob = service.get_session("s2", user_id="bob")
        assert bob is not None
        assert bob.state == {"app:model": "m", "user:lang": "fr"}
        assert (bob.events, bob.version) == ((), 1)
    again = run_cli("import", "adk-database", url, "--to", url, "--app", "support")
    assert "imported 0, unchanged 2, skipped 0, failed 0 of 2 sessions" in again.stdout


def test_an_unreachable_target_names_its_url_in_one_line(url: str) -> None:
    target = "postgresql://postgres@127.0.0.1:1/x"  # port 1: nothing listens
    result = run_cli("import", "adk-database", url, "--to", target)
    assert result.code == 4, result  # unreachable
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: could not reach the database {target}: "), line
