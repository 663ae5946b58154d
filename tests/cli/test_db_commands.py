"""``statekeeper db``: upgrade, downgrade, current, check, history."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from statekeeper import migrations
from statekeeper._sql.schema import HEAD_REVISION
from statekeeper.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result


def _run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(main, list(args), input=input)


def test_upgrade_current_check_downgrade(empty_url: str, cli: Any) -> None:
    result = cli("db", "check", "--url", empty_url)
    assert result.code == 3, result  # not migrated
    (line,) = result.stderr.splitlines()
    assert "no statekeeper tables" in line
    assert "statekeeper db upgrade --url" in line

    assert (
        _run("db", "current", "--url", empty_url).stdout.strip() == "none (no statekeeper tables)"
    )

    result = _run("db", "upgrade", "--url", empty_url)
    assert result.exit_code == 0, result.output
    assert f"from none (no statekeeper tables) to {HEAD_REVISION} (head)" in result.stdout

    result = _run("db", "upgrade", "--url", empty_url)
    assert result.exit_code == 0
    assert "nothing to do" in result.stdout

    assert _run("db", "current", "--url", empty_url).stdout.strip() == f"{HEAD_REVISION} (head)"
    result = cli("db", "check", "--url", empty_url)
    assert result.code == 0, result
    assert "ready" in result.stdout

    result = _run("db", "downgrade", "base", "--url", empty_url, "--yes")
    assert result.exit_code == 0, result.output
    assert f"from {HEAD_REVISION} (head) to none" in result.stdout
    assert migrations.current(empty_url) is None


def test_downgrade_asks_first(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    result = _run("db", "downgrade", "base", "--url", sqlite_url, input="n\n")
    assert result.exit_code == 1
    assert "lose their data" in result.output
    assert migrations.current(sqlite_url) == HEAD_REVISION
    result = _run("db", "downgrade", "base", "--url", sqlite_url, input="y\n")
    assert result.exit_code == 0
    assert migrations.current(sqlite_url) is None


def test_url_from_the_environment(sqlite_url: str) -> None:
    result = _run("db", "upgrade", env={"STATEKEEPER_URL": sqlite_url})
    assert result.exit_code == 0, result.output
    assert migrations.current(sqlite_url) == HEAD_REVISION


def test_missing_url_and_bad_arguments_are_usage_errors(cli: Any) -> None:
    for args in (["db", "current"], ["sessions", "ls"], ["db", "upgrade", "--nope"]):
        result = cli(*args)
        assert result.code == 2, result  # bad arguments
        assert "Usage: statekeeper" in result.stderr
        assert "Traceback" not in result.stderr
    assert "--url" in cli("db", "current").stderr


def test_help_texts_are_not_cut_and_list_the_exit_statuses(cli: Any) -> None:
    for group in ([], ["db"], ["sessions"]):
        result = cli(*group, "--help", env={"COLUMNS": "80"})
        assert result.code == 0, result
        commands = result.stdout.split("Commands:")[1]
        assert "..." not in commands, commands
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
    result = cli("--help")
    for code, meaning in ((3, "not migrated"), (4, "unreachable"), (2, "bad arguments")):
        assert any(
            line.split()[:1] == [str(code)] and meaning in line
            for line in result.stdout.splitlines()
        ), (code, result.stdout)
    assert "4  database unreachable" in cli("sessions", "ls", "--help").stdout


def test_unsupported_database_is_explained() -> None:
    result = _run("db", "current", "--url", "mysql://u@h/db")
    assert result.exit_code == 1
    assert "supports SQLite and PostgreSQL" in result.stderr


def test_unknown_revision_is_explained(sqlite_url: str) -> None:
    result = _run("db", "upgrade", "nope", "--url", sqlite_url)
    assert result.exit_code == 1
    assert "nope" in result.stderr
    assert "Traceback" not in result.output


def test_upgrade_sql_prints_the_ddl_without_connecting() -> None:
    for url in ("postgresql://nobody@unreachable.invalid/db", "sqlite:///never-created.db"):
        result = _run("db", "upgrade", "--sql", "--url", url)
        assert result.exit_code == 0, result.output
        assert "CREATE TABLE statekeeper_sessions" in result.stdout
        assert "CREATE INDEX ix_statekeeper_sessions_user_updated" in result.stdout


def test_upgrade_sql_with_schema() -> None:
    result = _run("db", "upgrade", "--sql", "--url", "postgresql://", "--schema", "agents")
    assert result.exit_code == 0, result.output
    assert 'CREATE SCHEMA IF NOT EXISTS "agents"' in result.stdout


def test_downgrade_sql() -> None:
    result = _run("db", "downgrade", f"{HEAD_REVISION}:base", "--sql", "--url", "postgresql://")
    assert result.exit_code == 0, result.output
    assert "DROP TABLE statekeeper_sessions" in result.stdout


def test_history_marks_the_current_revision(sqlite_url: str) -> None:
    result = _run("db", "history")
    assert result.exit_code == 0, result.output
    assert HEAD_REVISION in result.stdout
    assert "Create statekeeper_sessions" in result.stdout
    assert "current" not in result.stdout

    migrations.upgrade(sqlite_url)
    result = _run("db", "history", "--url", sqlite_url)
    row = next(line for line in result.stdout.splitlines() if HEAD_REVISION in line)
    assert "current" in row


def test_schema_option_on_postgresql(pg_empty_database: str) -> None:
    url = pg_empty_database
    result = _run("db", "upgrade", "--url", url, "--schema", "agents")
    assert result.exit_code == 0, result.output
    assert "(schema agents)" in result.stdout
    assert migrations.current(url, schema="agents") == HEAD_REVISION
    assert migrations.current(url) is None
    assert _run("db", "check", "--url", url, "--schema", "agents").exit_code == 0
    result = _run("db", "check", "--url", url)
    assert result.exit_code == 3  # the public schema is not migrated
    result = _run("db", "current", "--url", url, env={"STATEKEEPER_SCHEMA": "agents"})
    assert result.stdout.strip() == f"{HEAD_REVISION} (head)"


def test_schema_option_needs_postgresql(sqlite_url: str) -> None:
    result = _run("db", "upgrade", "--url", sqlite_url, "--schema", "agents")
    assert result.exit_code == 1
    assert "schemas need PostgreSQL" in result.stderr


@pytest.mark.slow
def test_python_dash_m(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "statekeeper", "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Upgraded" in out
    assert migrations.current(url) == HEAD_REVISION
