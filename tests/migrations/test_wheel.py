"""The built wheel, installed in a fresh virtual environment, migrates a database and works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STORE_WORKS = textwrap.dedent(
    """
    import statekeeper
    from statekeeper import SqlSession, migrations

    print(statekeeper.__file__)
    migrations.check("sqlite:///sessions.db")
    with SqlSession("sqlite:///sessions.db") as store:
        store.set_state("s1", {"ok": True}, user_id="alice")
        assert store.get_state("s1", "alice") == {"ok": True}
    print("store works")
    """
)


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_installed_wheel_upgrades_from_an_unrelated_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO)
    (wheel,) = dist.glob("statekeeper-*.whl")

    venv = tmp_path / "venv"  # fresh: no system site-packages, no editable install
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", wheel)

    elsewhere = tmp_path / "elsewhere"  # no alembic.ini, no sources
    elsewhere.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STATEKEEPER_URL", "STATEKEEPER_SCHEMA")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    out = _run(
        bin_dir / "statekeeper",
        "db",
        "upgrade",
        "--url",
        "sqlite:///sessions.db",
        cwd=elsewhere,
        env=env,
    )
    assert "Upgraded sqlite:///sessions.db from none" in out
    out = _run(python, "-c", STORE_WORKS, cwd=elsewhere, env=env)
    installed, message = out.splitlines()
    assert Path(installed).resolve().is_relative_to(venv.resolve())  # not the source tree
    assert message == "store works"
    out = _run(
        python,
        "-m",
        "statekeeper",
        "db",
        "check",
        "--url",
        "sqlite:///sessions.db",
        cwd=elsewhere,
        env=env,
    )
    assert "ready" in out
