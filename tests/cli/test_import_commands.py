"""``statekeeper import``: AgentScope 1.x folders and Redis keys into a statekeeper database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from statekeeper import SqlSession, migrations
from statekeeper.cli import main

if TYPE_CHECKING:
    from click.testing import Result

STATES: dict[str, dict[str, Any]] = {
    "s1": {"agent": {"name": "Friday", "memory": [{"text": "hi", "score": 0.5}]}},
    "alice_s2": {"agent": {"memory": []}, "toolkit": {"tools": ["search"]}},
    "tricky": {"m": {"nul": "a\x00b", "lone": "\ud800", "wide": "日本 🚀", "big": 2**70}},
}


def _run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))


@pytest.fixture
def url(empty_url: str) -> str:
    migrations.upgrade(empty_url)
    return empty_url


def write_like_agentscope(folder: Path, name: str, state: Any) -> None:
    """Write a session file as AgentScope 1.x's JSONSession.save_session_state does."""
    with open(folder / f"{name}.json", "w", encoding="utf-8", errors="surrogatepass") as file:
        json.dump(state, file, ensure_ascii=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "agentscope"
    folder.mkdir()
    for name, state in STATES.items():
        write_like_agentscope(folder, name, state)
    (folder / "broken.json").write_text('{"agent": {"name": ')  # torn by a crash
    write_like_agentscope(folder, "nan", {"agent": {"score": float("nan")}})
    (folder / "notes.txt").write_text("not a session")
    return folder


def test_imports_a_folder_exactly_and_reports_bad_files(folder: Path, url: str) -> None:
    result = _run("import", "agentscope-json", str(folder), "--to", url, "--split-user")
    assert result.exit_code == 1, result.output  # some failed
    assert "failed " + str(folder / "broken.json") + ": not valid JSON" in result.output
    assert "failed " + str(folder / "nan.json") + ": " in result.output
    assert "agent.score" in result.output  # the NaN's path
    assert "imported 3, unchanged 0, skipped 0, failed 2 of 5 sessions" in result.output
    with SqlSession(url) as store:
        assert store.get_state("s1") == STATES["s1"]
        assert store.get_state("s2", user_id="alice") == STATES["alice_s2"]
        assert store.get_state("tricky") == STATES["tricky"]

    again = _run("import", "agentscope-json", str(folder), "--to", url, "--split-user")
    assert "imported 0, unchanged 3, skipped 0, failed 2 of 5" in again.output
    with SqlSession(url) as store:
        assert {i.version for i in store.list_sessions().items} == {1}  # nothing rewritten


def test_without_split_user_the_whole_name_is_the_session(folder: Path, url: str) -> None:
    _run("import", "agentscope-json", str(folder), "--to", url)
    with SqlSession(url) as store:
        assert store.get_state("alice_s2") == STATES["alice_s2"]
        assert store.get_state("s2", user_id="alice") is None


def test_dry_run_writes_nothing(folder: Path, url: str) -> None:
    result = _run("import", "agentscope-json", str(folder), "--to", url, "--dry-run")
    assert "would import 3, unchanged 0, skipped 0, failed 2 of 5" in result.output
    assert "nothing written" in result.output
    with SqlSession(url) as store:
        assert store.list_sessions().items == ()


def test_a_different_stored_state_is_kept_unless_overwrite(folder: Path, url: str) -> None:
    with SqlSession(url, app_name="imported") as store:
        store.set_state("s1", {"newer": True})
    args = ["import", "agentscope-json", str(folder), "--to", url, "--app", "imported"]
    result = _run(*args)
    assert "skipped " + str(folder / "s1.json") in result.output
    assert "--overwrite" in result.output
    with SqlSession(url, app_name="imported") as store:
        assert store.get_state("s1") == {"newer": True}
    _run(*args, "--overwrite")
    with SqlSession(url, app_name="imported") as store:
        assert store.get_state("s1") == STATES["s1"]


def test_a_database_not_migrated_is_a_clear_error(folder: Path, empty_url: str) -> None:
    result = _run("import", "agentscope-json", str(folder), "--to", empty_url)
    assert result.exit_code == 3  # not migrated
    assert "statekeeper db upgrade" in result.output


def test_imports_agentscope_redis_keys(url: str, redis_url: str, redis_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for user, session, state in [("", "s1", STATES["s1"]), ("alice", "a:b", STATES["alice_s2"])]:
        key = f"{redis_prefix}user_id:{user}:session:{session}:state"
        client.set(key, json.dumps(state, ensure_ascii=False))  # as AgentScope 1.x writes it
    client.set(f"{redis_prefix}user_id:bob:session:bad:state", b"\xff not json")
    client.close()
    args = ["import", "agentscope-redis", redis_url, "--key-prefix", redis_prefix, "--to", url]
    result = _run(*args)
    assert "imported 2, unchanged 0, skipped 0, failed 1 of 3" in result.output
    assert "user_id:bob:session:bad:state" in result.output
    with SqlSession(url) as store:
        assert store.get_state("s1") == STATES["s1"]
        assert store.get_state("a:b", user_id="alice") == STATES["alice_s2"]
    assert "imported 0, unchanged 2" in _run(*args).output


def test_an_unreachable_target_names_its_url_in_one_line(folder: Path, cli: Any) -> None:
    target = "postgresql://postgres@127.0.0.1:1/x"  # port 1: nothing listens
    result = cli("import", "agentscope-json", str(folder), "--to", target)
    assert result.code == 4, result  # unreachable
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: could not reach the database {target}: "), line


def test_an_unreachable_redis_source_is_one_line(url: str, cli: Any) -> None:
    source = "redis://127.0.0.1:1/0"  # port 1: nothing listens
    result = cli("import", "agentscope-redis", source, "--to", url)
    assert result.code == 4, result  # unreachable
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: the AgentScope Redis source: Redis at {source} "), line
    assert "could not be reached" in line
