"""The release build: the wheel built from the sdist, in a fresh venv, migrates and works."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from statekeeper._sql.schema import HEAD_REVISION

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "src" / "statekeeper" / "migrations" / "versions"

STORE_WORKS = textwrap.dedent(
    """
    import statekeeper
    from statekeeper import SqlSession

    class Memory:
        def __init__(self, turns):
            self.turns = turns
        def state_dict(self):
            return {"turns": self.turns}
        def load_state_dict(self, state):
            self.turns = state["turns"]

    print(statekeeper.__file__)
    with SqlSession("sqlite:///w.db") as store:
        store.save_session_state("s1", user_id="alice", memory=Memory(["hi", "hello"]))
    restored = Memory([])
    with SqlSession("sqlite:///w.db") as store:
        store.load_session_state("s1", user_id="alice", memory=restored)
    print(restored.turns)
    with SqlSession("sqlite:///fresh.db", auto_migrate=True) as store:
        store.set_state("s2", {"ok": True}, user_id="bob")
        print(store.get_state("s2", "bob"))
    """
)


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _revision(database: Path) -> list[tuple[str]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT version_num FROM statekeeper_alembic_version").fetchall()


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.slow
def test_wheel_built_from_the_sdist_migrates_and_stores_from_an_unrelated_folder(
    tmp_path: Path,
) -> None:
    revisions = sorted(p.name for p in VERSIONS.glob("*.py"))
    assert "0001_sessions.py" in revisions

    # What a release does: the sdist first, then the wheel built from the unpacked sdist.
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, REPO)
    (sdist,) = dist.glob("statekeeper-*.tar.gz")
    (wheel,) = dist.glob("statekeeper-*.whl")
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        shipped = {m.name.removeprefix(f"{top}/") for m in archive.getmembers() if m.isfile()}
    assert {f"src/statekeeper/migrations/versions/{r}" for r in revisions} <= shipped
    assert "alembic.ini" in shipped
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    assert {f"statekeeper/migrations/versions/{r}" for r in revisions} <= packaged

    venv = tmp_path / "venv"  # fresh: no system site-packages, no editable install
    _run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-compile", wheel)

    elsewhere = tmp_path / "elsewhere"  # no alembic.ini, no sources
    elsewhere.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STATEKEEPER_URL", "STATEKEEPER_SCHEMA")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    url = "sqlite:///w.db"
    out = _run(bin_dir / "statekeeper", "db", "upgrade", "--url", url, cwd=elsewhere, env=env)
    assert f"Upgraded {url} from none (no statekeeper tables) to {HEAD_REVISION} (head)." in out
    assert _revision(elsewhere / "w.db") == [(HEAD_REVISION,)]
    assert "statekeeper_sessions" in _tables(elsewhere / "w.db")

    out = _run(python, "-c", STORE_WORKS, cwd=elsewhere, env=env)
    installed, turns, state = out.splitlines()
    assert Path(installed).resolve().is_relative_to(venv.resolve())  # not the source tree
    assert turns == "['hi', 'hello']"
    assert state == "{'ok': True}"
    assert _revision(elsewhere / "fresh.db") == [(HEAD_REVISION,)]  # auto_migrate ran the history

    out = _run(python, "-m", "statekeeper", "db", "check", "--url", url, cwd=elsewhere, env=env)
    assert "ready" in out
