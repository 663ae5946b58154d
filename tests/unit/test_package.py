"""The installed package: metadata, public names, the demo."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import statekeeper


def test_metadata_matches_the_package() -> None:
    meta = importlib.metadata.metadata("statekeeper")
    assert meta["Name"] == "statekeeper"
    assert importlib.metadata.version("statekeeper") == statekeeper.__version__
    assert meta["Requires-Python"] == ">=3.10"
    extras = meta.get_all("Provides-Extra") or []
    assert "postgres" in extras
    assert "redis" in extras


def test_typed_and_never_imports_agentscope() -> None:
    package = Path(statekeeper.__file__).parent
    assert (package / "py.typed").exists()
    sources = "".join(p.read_text() for p in package.rglob("*.py"))
    assert "import agentscope" not in sources
    assert "from agentscope" not in sources


def test_demo_saves_and_loads_back(tmp_path: Path) -> None:
    for command in (["statekeeper", "demo"], [sys.executable, "-m", "statekeeper", "demo"]):
        out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert "loaded it back in a new store: agent 'Friday', 3 turns" in out.stdout
        assert "Everything in this session." in out.stdout
        assert (tmp_path / "statekeeper-demo.db").exists()
