"""The event reads are index lookups: their cost does not grow with the session's log."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from statekeeper import SessionService
from statekeeper._sql.statements.service import service_statements

EVENTS = 20_000


def _plan(engine: sa.Engine, statement: sa.Select[object], params: dict[str, object]) -> str:
    """The database's plan of ``statement``, as one text."""
    compiled = statement.compile(dialect=engine.dialect)
    values = {**compiled.params, **params}
    sql = compiled.string
    args: object = values
    if compiled.positional:
        args = tuple(values[name] for name in compiled.positiontup or ())
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + sql, args).all()  # type: ignore[arg-type]
    return "\n".join(str(row[-1]) for row in rows)


@pytest.fixture
def long_log(db_url: str) -> sa.Engine:
    """A session of EVENTS events (app "plans", user "u", session "s"), statistics gathered."""
    with SessionService(db_url, app_name="plans") as svc:
        svc.delete_session("s", "u")
        svc.create_session("s", "u")
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    pg = engine.dialect.name == "postgresql"
    series = (
        f"generate_series(1, {EVENTS}) AS g(n)"
        if pg
        else "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {EVENTS}) SELECT n FROM s) AS g"
    )
    doc = "CAST('{}' AS json)" if pg else "'{}'"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO statekeeper_events "
                "(app_name, user_id, session_id, seq, timestamp, event) "
                f"SELECT 'plans', 'u', 's', n, n, {doc} FROM {series}"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE statekeeper_sessions SET event_count = :n "
                "WHERE app_name = 'plans' AND user_id = 'u' AND session_id = 's'"
            ),
            {"n": EVENTS},
        )
        conn.execute(sa.text("ANALYZE"))
    return engine


@pytest.mark.parametrize(("recent", "after"), [(True, False), (False, True), (True, True)])
def test_event_reads_use_an_index(long_log: sa.Engine, recent: bool, after: bool) -> None:
    engine = long_log
    statement = service_statements(engine.dialect.name).events[recent, after]
    params = {
        "p_app": "plans",
        "p_user": "u",
        "p_session": "s",
        "p_count": EVENTS,
        "p_recent": 10,
        "p_after": float(EVENTS - 5),
    }
    plan = _plan(engine, statement, params)
    engine.dispose()
    if engine.dialect.name == "sqlite":
        index = "ix_statekeeper_events_time" if after else "sqlite_autoindex_statekeeper_events_1"
        assert f"SEARCH statekeeper_events USING INDEX {index}" in plan, plan
    else:
        assert "Index" in plan, plan
        assert "Seq Scan" not in plan, plan
        if after and not recent:  # with a LIMIT, a backward scan of the key is as good
            assert "ix_statekeeper_events_time" in plan, plan
