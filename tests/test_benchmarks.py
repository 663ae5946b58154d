"""The benchmark command runs on a fresh checkout (a smoke run; no timings are asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_runs_and_reports_every_target(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-chart", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert "Targets" in run.stdout
    assert results["targets"], "no targets reported"
    names = " ".join(t["target"] for t in results["targets"])
    for scenario in ("write 10KB", "merge 1MB", "read 10KB", "writers", "sessions", "memory"):
        assert scenario in names
    assert all(isinstance(t["value"], float) and t["value"] > 0 for t in results["targets"])


@pytest.mark.slow
def test_adk_benchmark_runs_and_reports_its_targets(tmp_path: Path) -> None:
    out = tmp_path / "adk.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/adk_bench.py",
            "--quick",
            "--no-chart",
            "--no-postgres",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    sqlite = results["backends"]["SQLite"]
    # statekeeper beside both of ADK's SQLite services, on a file on disk (not /dev/shm)
    assert set(sqlite) == {"DatabaseSessionService, aiosqlite", "SqliteSessionService"}
    assert not results["meta"]["sqlite_dir"].startswith("/dev/shm")
    for against in sqlite.values():
        for key in ("create", "append", "get10", "get1000", "recent1000", "recent100k", "list1000"):
            assert against[key]["statekeeper_s"] > 0
            assert against[key]["adk_s"] > 0
    assert "last 10 of 100 000 events" in run.stdout
    assert len(results["meta"]["load_average_start"]) == 3


@pytest.mark.slow
def test_service_benchmark_runs_and_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results-service.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/service.py",
            "--quick",
            "--no-postgres",
            "--only",
            "sync",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    names = [r["scenario"] for r in results]
    for scenario in ("create_session", "append_event", "get_session 10", "recent=10", "list"):
        assert any(n.startswith(scenario) for n in names), names
    assert all(r["ratio"] > 0 and r["backend"] == "sqlite" for r in results)


@pytest.mark.slow
def test_roundtrips_benchmark_counts_every_operation(tmp_path: Path, pg_server: sa.URL) -> None:
    out = tmp_path / "roundtrips.json"
    pg_url = pg_server.render_as_string(hide_password=False)
    command = ["benchmarks/run.py", "roundtrips", "--quick", "--out", str(out), "--pg-url", pg_url]
    run = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    counted = {(r["group"], r["subject"], r["operation"]) for r in rows}
    store = ("get_state", "set_state", "merge_state, expected_version", "load_session_state")
    service = ("get_session, 10 events", "append_event, app:/user: delta", "pop_event")
    adk = ("create_session", "get_session, 10 events", "append_event, user: delta")
    for facade in ("sync", "async"):
        assert {("store", facade, op) for op in store} <= counted
        assert {("service", facade, op) for op in service} <= counted
    for subject in ("statekeeper.adk", "ADK, psycopg", "ADK, asyncpg"):
        assert {("adk", subject, op) for op in adk} <= counted
    # every call was answered by the server at least once, each counted by itself
    assert all(len(r["counts"]) == 3 and min(r["counts"]) >= 1 for r in rows)
    assert "| SqlSession | get_state |" in run.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_benchmark_counts_every_case(tmp_path: Path) -> None:
    out = tmp_path / "instructions.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/run.py", "instructions", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["op"]: r for r in json.loads(out.read_text())["rows"]}
    for op in (
        "get_state",
        "set_state",
        "merge_state",
        "encode",
        "async get_state",
        "async set_state",
    ):
        assert rows[op]["statekeeper_instructions"] > 0
        assert rows[op]["raw_instructions"] > 0
        assert rows[op]["ratio"] > 0
    assert rows["checkout"]["instructions"] > 0
    assert rows["sqlalchemy get"]["vs_raw"] > 0
    assert "| get_state |" in run.stdout
    assert rows["async get_state"]["target"] == 2.0  # the async stores' own target
