"""The Agents SDK sessions benchmark runs on a fresh checkout (a smoke run; no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("agents", reason="the openai-agents extra is not installed here")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_reports_every_backend_and_operation(tmp_path: Path) -> None:
    out = tmp_path / "oa.json"
    script = ROOT / "benchmarks" / "openai_agents_sessions.py"
    run = subprocess.run(
        [sys.executable, str(script), "--repeat", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())["seconds"]
    assert len(figures) == 3
    for per_op in figures.values():
        assert set(per_op) == {"add 1", "add 3", "last 10 of 1,000", "all 1,000", "pop"}
        assert all(seconds > 0 for seconds in per_op.values())
