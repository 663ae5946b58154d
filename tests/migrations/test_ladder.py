"""Upgrading a database that holds sessions, one revision at a time, and back."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from statekeeper import SqlSession, migrations

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


def _rows(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT app_name, user_id, session_id, CAST(state AS TEXT), version "
                    "FROM statekeeper_sessions ORDER BY app_name, user_id, session_id"
                )
            ).all()
        return [(*row[:3], json.loads(row[3]), row[4]) for row in rows]
    finally:
        engine.dispose()


def _insert_at_0001(url: str) -> None:
    """Write sessions the way the 0001 code did, with SQLAlchemy Core on 0001's table."""
    table = sa.Table(
        "statekeeper_sessions",
        sa.MetaData(),
        sa.Column("app_name", sa.String(255)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("session_id", sa.String(255)),
        sa.Column("state", sa.JSON()),
        sa.Column("version", sa.BigInteger()),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    rows = [
        {
            "app_name": app,
            "user_id": user,
            "session_id": f"s{i}",
            "state": {"agent": {"n": i, "nul": "\x00", "lone": "\ud800"}},
            "version": i + 1,
            "created_at": NOW.replace(tzinfo=None) if url.startswith("sqlite") else NOW,
            "updated_at": NOW.replace(tzinfo=None) if url.startswith("sqlite") else NOW,
            "expires_at": None,
        }
        for app in ("", "other")
        for user in ("", "alice")
        for i in range(3)
    ]
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


def test_a_database_at_0001_holding_sessions_upgrades_and_downgrades(empty_url: str) -> None:
    migrations.upgrade(empty_url, "0001")
    _insert_at_0001(empty_url)
    before = _rows(empty_url)
    assert len(before) == 12

    migrations.upgrade(empty_url)
    assert migrations.current(empty_url) == "0003"
    assert _rows(empty_url) == before
    with SqlSession(empty_url, app_name="other") as store:
        assert store.get_state("s2", "alice") == {
            "agent": {"n": 2, "nul": "\x00", "lone": "\ud800"}
        }
        assert store.merge_state("s2", {"more": 1}, "alice") == 4  # the old rows are writable
    from statekeeper import SessionService

    with SessionService(empty_url) as service:
        record = service.get_session("s1", "alice")
        assert record is not None
        assert record.events == ()
        assert record.version == 2
        assert record.state == {"agent": {"n": 1, "nul": "\x00", "lone": "\ud800"}}
        assert service.append_event("s1", {"text": "hi"}, "alice", timestamp=1.5) == 3

    migrations.downgrade(empty_url, "0001")
    assert migrations.current(empty_url) == "0001"
    after = {row[:3]: row[3:] for row in _rows(empty_url)}
    expected = {row[:3]: row[3:] for row in before}
    expected["other", "alice", "s2"] = (
        {"agent": {"n": 2, "nul": "\x00", "lone": "\ud800"}, "more": 1},
        4,
    )
    expected["", "alice", "s1"] = (expected["", "alice", "s1"][0], 3)
    assert after == expected
