"""The documentation site: it builds, and its API reference lists every public name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import statekeeper
from statekeeper import errors, migrations

ROOT = Path(__file__).resolve().parents[2]
API_PAGE = ROOT / "docs" / "api.md"


def _directives() -> set[str]:
    return set(re.findall(r"^::: (\S+)", API_PAGE.read_text(), flags=re.MULTILINE))


def test_the_api_page_names_every_public_name() -> None:
    documented = _directives()
    missing = {f"statekeeper.{name}" for name in statekeeper.__all__} - documented
    assert not missing, f"add to docs/api.md: {sorted(missing)}"
    assert set(errors.__all__) <= set(statekeeper.__all__)  # the errors are documented as such
    assert "statekeeper.migrations" in documented


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_public_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    mkdocs = Path(sys.executable).parent / "mkdocs"
    assert mkdocs.exists(), "mkdocs is missing: pip install -e '.[docs]'"
    build = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    page = (site / "api" / "index.html").read_text()
    anchors = set(re.findall(r'id="(statekeeper[\w.]*)"', page))
    wanted = {f"statekeeper.{name}" for name in statekeeper.__all__}
    wanted |= {f"statekeeper.migrations.{name}" for name in migrations.__all__}
    assert not wanted - anchors, f"not on the API page: {sorted(wanted - anchors)}"
    for method in ("save_session_state", "load_session_state", "list_sessions", "purge_expired"):
        for store in ("SqlSession", "AsyncSqlSession"):
            assert f"statekeeper.{store}.{method}" in anchors
    assert ":meth:" not in page  # Sphinx roles are rendered, not printed
    assert (site / "performance.png").exists()  # the chart of the performance page
    for name in ("quickstart", "concepts", "agentscope", "migrations", "cli", "performance"):
        assert (site / name / "index.html").exists(), name
