"""Several processes upgrading at once; PostgreSQL schemas; the repository's own alembic.ini."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.config import main as alembic_main

from statekeeper import AsyncSqlSession, SqlSession, migrations
from statekeeper._sql.schema import HEAD_REVISION, VERSION_TABLE
from statekeeper.cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli_in_child(args: list[str], barrier: Any, out_path: str) -> None:
    """Run the ``statekeeper`` command in this (forked) process once all siblings are ready."""
    with (
        open(out_path, "w") as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        barrier.wait(timeout=60)
        main(args, prog_name="statekeeper")  # exits with the command's status


def _upgrade_in_processes(url: str, count: int, tmp_path: Path) -> list[tuple[int | None, str]]:
    """Start ``count`` processes running ``statekeeper db upgrade`` at the same instant."""
    try:
        mp = multiprocessing.get_context("fork")
    except ValueError:  # pragma: no cover - no fork on this platform
        pytest.skip("needs the fork start method")
    barrier = mp.Barrier(count)
    args = ["db", "upgrade", "--url", url]
    outs = [str(tmp_path / f"out{i}.txt") for i in range(count)]
    procs = [mp.Process(target=_cli_in_child, args=(args, barrier, out)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    return [(p.exitcode, Path(out).read_text()) for p, out in zip(procs, outs, strict=True)]


def _count(url: str, sql: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_four_processes_upgrade_one_database_at_once(empty_url: str, tmp_path: Path) -> None:
    results = _upgrade_in_processes(empty_url, 4, tmp_path)
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    outputs = [out for _, out in results]
    # The history ran once: one process upgraded, the others found nothing to do.
    assert sum("Upgraded" in out for out in outputs) == 1, outputs
    assert sum("nothing to do" in out for out in outputs) == 3, outputs
    assert _count(empty_url, f"SELECT count(*) FROM {VERSION_TABLE}") == 1
    assert migrations.current(empty_url) == HEAD_REVISION


def _tables_in(url: str, schema: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


async def test_schema_option_on_postgresql(pg_empty_database: str) -> None:
    url = pg_empty_database
    migrations.upgrade(url, schema="agents")
    assert _tables_in(url, "agents") == {
        "statekeeper_sessions",
        "statekeeper_events",
        "statekeeper_app_state",
        "statekeeper_user_state",
        VERSION_TABLE,
    }
    assert _tables_in(url, "public") == set()
    assert migrations.current(url, schema="agents") == HEAD_REVISION
    assert migrations.current(url) is None
    migrations.check(url, schema="agents")

    with SqlSession(url, schema="agents") as store:
        store.set_state("s1", {"a": 1}, user_id="u")
        assert store.get_state("s1", "u") == {"a": 1}
        # A merge calls the schema's statekeeper_merge_json, none in public.
        assert store.merge_state("s1", {"b": 2}, "u") == 2
    async with AsyncSqlSession(url, schema="agents") as astore:
        assert await astore.merge_state("s1", {"a": 3}, "u") == 3
        assert await astore.get_state("s1", "u") == {"b": 2, "a": 3}
    assert _count(url, "SELECT count(*) FROM agents.statekeeper_sessions") == 1
    merge_function = (
        "SELECT count(*) FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace"
        " WHERE proname = 'statekeeper_merge_json' AND nspname = '{}'"
    )
    assert _count(url, merge_function.format("agents")) == 1
    assert _count(url, merge_function.format("public")) == 0
    migrations.downgrade(url, "0002", schema="agents")
    assert _count(url, merge_function.format("agents")) == 0

    migrations.downgrade(url, "0001", schema="agents")  # ALTER TABLE in the schema, too
    assert _tables_in(url, "agents") == {"statekeeper_sessions", VERSION_TABLE}
    migrations.downgrade(url, "base", schema="agents")
    assert "statekeeper_sessions" not in _tables_in(url, "agents")


def test_auto_migrate_creates_the_schema(pg_empty_database: str) -> None:
    with SqlSession(pg_empty_database, schema="agents", auto_migrate=True) as store:
        store.set_state("s1", {"a": 1})
    assert "statekeeper_sessions" in _tables_in(pg_empty_database, "agents")


def test_repository_alembic_ini_runs_the_packaged_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'repo.db'}"
    monkeypatch.setenv("STATEKEEPER_URL", url)
    ini = str(REPO / "alembic.ini")
    alembic_main(["-c", ini, "upgrade", "head"])
    assert migrations.current(url) == HEAD_REVISION
    printed = io.StringIO()
    command.current(Config(ini, stdout=printed))
    assert f"{HEAD_REVISION} (head)" in printed.getvalue()
    alembic_main(["-c", ini, "check"])
