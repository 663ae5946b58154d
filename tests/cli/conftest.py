"""Fixtures of the command-line tests: unmigrated databases, and the installed command.

The tests run the ``statekeeper`` script installed beside the test
interpreter as a subprocess, as a user or a script would: exit statuses,
stderr and the absence of tracebacks are then the real ones, which click's
``CliRunner`` cannot show.
"""

from __future__ import annotations

import os
import select
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

#: The installed command (the console script of the environment running the tests).
COMMAND = shutil.which("statekeeper", path=str(Path(sys.executable).parent)) or ""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("STATEKEEPER_URL", "STATEKEEPER_SCHEMA")
    }
    env["COLUMNS"] = "200"
    return {**env, **(extra or {})}


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Cli:
    """Run the installed ``statekeeper`` with ``args``; stdout and stderr are pipes."""
    assert COMMAND, f"no statekeeper command beside {sys.executable}: pip install -e ."
    done = subprocess.run(
        [COMMAND, *args],
        capture_output=True,
        text=True,
        env=_env(env),
        input=input,
        timeout=120,
        check=False,
    )
    return Cli(done.returncode, done.stdout, done.stderr)


class Cli:
    """What a run of the command did."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_in_terminal(*args: str, columns: int = 200) -> Cli:
    """Run the installed command with stdout and stderr on a pseudo-terminal (both merged)."""
    import pty

    assert COMMAND
    leader, follower = pty.openpty()
    env = _env({"COLUMNS": str(columns), "TERM": "xterm"})
    process = subprocess.Popen(
        [COMMAND, *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = process.wait(timeout=120)
    return Cli(code, b"".join(chunks).decode(errors="replace"), "")


@pytest.fixture
def cli() -> Callable[..., Cli]:
    """Run the installed command: ``cli("sessions", "ls", "--url", url)``."""
    return run_cli


@pytest.fixture
def terminal() -> Callable[..., Cli]:
    """Run the installed command on a pseudo-terminal (stdout and stderr merged)."""
    return run_in_terminal


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A database of the backend under test without statekeeper's tables, for this test alone."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_empty_database"))
    sqlite3.connect(sa.make_url(sqlite_url).database or "").close()  # an empty database file
    return sqlite_url
