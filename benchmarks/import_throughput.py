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

PostgreSQL is skipped when it does not answer at ``--pg-url`` (or with ``--no-postgres``).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import _common

from statekeeper import migrations


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


def main(argv: list[str] | None = None) -> int:
    """Run the import benchmark (``--adk``: ADK's tables); print sessions per second."""
    parser = _common.parser(__doc__, "pg-url", "no-postgres")
    parser.add_argument("--adk", action="store_true", help="import ADK's tables instead")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--events", type=int, default=10, help="events per ADK session")
    args = parser.parse_args(argv)
    use_pg = _common.postgres_skipped(args) is None
    if args.adk:
        from _adk_import import run_adk

        run_adk(args.sessions or 2_000, args.events, args.pg_url if use_pg else None)
        return 0
    sessions = args.sessions or 100_000
    with (
        tempfile.TemporaryDirectory(prefix="statekeeper-import-") as tmp,
        _common.postgres_database(args.pg_url) if use_pg else contextlib.nullcontext() as pg,
    ):
        folder = Path(tmp) / "agentscope"
        folder.mkdir()
        t0 = time.perf_counter()
        write_folder(folder, sessions)
        print(f"wrote {sessions} AgentScope files in {time.perf_counter() - t0:.1f} s")
        targets = [("sqlite", f"sqlite:///{tmp}/import.db")]
        for label, url in targets + ([("postgresql", pg)] if pg else []):
            migrations.upgrade(url)
            command = ("agentscope-json", str(folder), "--split-user", "--to", url)
            _common.import_twice(label, sessions, *command, "--app", "import-bench")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
