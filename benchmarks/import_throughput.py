"""Throughput of ``statekeeper import``: sessions/s into SQLite and PostgreSQL.

Usage::

    python benchmarks/import_throughput.py                 # 100 000 AgentScope files
    python benchmarks/import_throughput.py --sessions 5000 # a quick run
    python benchmarks/import_throughput.py --adk           # 2 000 ADK sessions x 10 events
    python benchmarks/import_throughput.py --adk --sessions 200 --events 50

AgentScope (``agentscope-json``): it writes the files the way AgentScope 1.x's
``JSONSession`` does (one ``{user_id}_{session_id}.json`` per session,
``json.dump(..., ensure_ascii=False)``; about 1.2 KB each: an agent with a
short memory and a toolkit), runs the command's import (the same code as
``statekeeper import agentscope-json --split-user``, read-back check
included) into a fresh SQLite file and a throwaway PostgreSQL database, and
prints sessions per second.

ADK (``adk-database``, ``--adk``): ADK's own ``DatabaseSessionService``
creates its tables (SQLite file, PostgreSQL database); the rows are then
written in bulk in the layout ADK writes (events from ADK's ``Event`` model:
a user or model message of about 200 characters and a state delta, about
0.6 KB each). The command's import (``statekeeper import adk-database``, the
same code, read-back check included) goes into a fresh statekeeper database
on the same backend; a few sessions are then read through ADK and through
``statekeeper.adk.SqlSessionService`` and must be equal.

PostgreSQL is skipped when it does not answer at ``--pg-url``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common

from statekeeper import migrations

DEFAULT_PG_URL = os.environ.get("STATEKEEPER_TEST_POSTGRES_URL", _common.DEFAULT_PG_URL)


def _state(i: int) -> dict[str, object]:
    memory = [
        {"role": "user", "content": f"question {i}-{k}: what is the weather like?", "id": k}
        for k in range(6)
    ]
    return {
        "agent": {"name": f"agent-{i % 7}", "memory": {"content": memory}},
        "toolkit": {"active_groups": ["search", "calc"], "n_calls": i},
    }


def write_folder(folder: Path, sessions: int) -> None:
    """Write ``sessions`` AgentScope 1.x session files."""
    for i in range(sessions):
        path = folder / f"user{i % 100}_session{i}.json"
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as file:
            json.dump(_state(i), file, ensure_ascii=False)


def measure(folder: Path, url: str) -> _common.Imported:
    """Import the folder into ``url`` with ``statekeeper import``; what it did, how long."""
    return _common.import_command(
        "agentscope-json", str(folder), "--split-user", "--to", url, "--app", "import-bench"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the import benchmark (``--adk``: ADK's tables); print sessions per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adk", action="store_true", help="import ADK's tables instead")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--events", type=int, default=10, help="events per ADK session")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    if args.adk:
        from _adk_import import run_adk

        run_adk(args.sessions or 2_000, args.events, args.pg_url)
        return 0
    args.sessions = args.sessions or 100_000
    with tempfile.TemporaryDirectory(prefix="statekeeper-import-") as tmp:
        folder = Path(tmp) / "agentscope"
        folder.mkdir()
        t0 = time.perf_counter()
        write_folder(folder, args.sessions)
        print(f"wrote {args.sessions} AgentScope files in {time.perf_counter() - t0:.1f} s")

        with contextlib.ExitStack() as stack:
            targets = [("sqlite", f"sqlite:///{tmp}/import.db")]
            try:
                pg = stack.enter_context(_common.postgres_database(args.pg_url))
                targets.append(("postgresql", pg))
            except Exception as exc:  # no server: SQLite only
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
            for label, url in targets:
                migrations.upgrade(url)
                first = measure(folder, url)
                assert first.imported == args.sessions, first.output[-2000:]
                print(
                    f"{label:10} {args.sessions} sessions in {first.seconds:6.1f} s: "
                    f"{args.sessions / first.seconds:7.0f} sessions/s (read-back check included)"
                )
                again = measure(folder, url)
                assert again.unchanged == args.sessions
                rate = args.sessions / again.seconds
                print(f"{label:10} second run (nothing to write): {rate:7.0f} sessions/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
