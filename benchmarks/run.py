"""statekeeper's benchmark: every scenario beside the raw driver doing the same work.

Usage::

    python benchmarks/run.py                 # full run, < 5 minutes on 2 cores
    python benchmarks/run.py service --quick # another suite (see SUITES), its own options
    python benchmarks/run.py --quick         # smoke run, tiny batches (~30 s)
    python benchmarks/run.py --million       # scale also at 1 000 000 sessions (longer)
    python benchmarks/run.py --write-docs    # also regenerate docs/performance.md
    python benchmarks/run.py --from-json benchmarks/results/stores.json --write-docs   # no run

It prints a table, writes ``benchmarks/results/stores.json`` and draws
``docs/performance.png`` (needs matplotlib: ``pip install 'statekeeper[bench]'``
or ``pip install matplotlib``). PostgreSQL is used when it answers at
``--pg-url`` (default ``$STATEKEEPER_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``): the benchmark creates a
throwaway database ``statekeeper_bench_<random>`` there and drops it at the end.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _common
import _report
from _common import REPO, Settings

SECTIONS = ("latency", "concurrency", "scale", "memory")

#: The other benchmarks: ``python benchmarks/run.py NAME [its options]`` runs the
#: module's ``main`` (each still runs as ``python benchmarks/MODULE.py`` too).
SUITES = {
    "service": "service",  # SessionService / AsyncSessionService beside the raw driver
    "adk": "adk_bench",  # statekeeper.adk beside ADK's DatabaseSessionService
    "purge": "purge",  # purge_expired of a large backlog, callers meanwhile
    "import": "import_throughput",  # statekeeper import: sessions/s
    "pooler": "pooler",  # behind PgBouncer in transaction mode
    "per-request": "per_request",  # a store per request on a shared engine
    "agentscope": "stores_vs_agentscope",  # JSON and Redis stores beside AgentScope's
    "profile": "profile_ops",  # where the time of one call goes
    "roundtrips": "roundtrips",  # round trips per operation on PostgreSQL, counted on the wire
    "instructions": "instructions",  # CPU instructions per operation (callgrind) vs sqlite3
    "openai-agents": "openai_agents_sessions",  # beside the Agents SDK's own sessions
}


def _parser() -> argparse.ArgumentParser:
    p = _common.parser(
        "Benchmark statekeeper against the raw database drivers.",
        *("quick", "out", "chart", "no-chart", "write-docs", "from-json", "pg-url"),
        *("no-fsync", "no-postgres"),
        only=SECTIONS,
        out={"help": "results JSON (default benchmarks/results/stores[-quick].json)"},
        chart={"help": "chart PNG (default docs/performance.png; beside --out with --quick)"},
        from_json={"help": "do not run: report, chart and docs from an existing results JSON"},
    )
    p.prog = "python benchmarks/run.py"
    p.epilog = "Other suites: python benchmarks/run.py {" + ",".join(SUITES) + "} [options]."
    p.add_argument(
        "--million",
        action="store_true",
        help="also measure the scale scenario at 1 000 000 sessions",
    )
    return p


def _progress(kind: str, row: dict[str, Any]) -> None:
    fmt, ratio = _report.fmt_time, _report.fmt_ratio
    if kind == "latency":
        text = f"{row['db']} {row['api']} {row['op']} {row['size']}: "
        text += f"{fmt(row['statekeeper_s'])} vs {fmt(row['floor_s'])} ({ratio(row['ratio'])})"
    elif kind == "scale":
        text = f"{row['db']} {row['op']} at {row['sessions']:,}: {fmt(row['statekeeper_s'])} "
        text += f"({ratio(row['vs_smallest'])} of the smallest)"
    elif kind == "memory":
        text = f"{row['db']} {row['op']}: {row['statekeeper_multiple']:.2f}x JSON "
        text += f"(floor {row['floor_multiple']:.2f}x)"
    else:
        text = f"{row['statekeeper_ops_s']:,.0f} vs {row['floor_ops_s']:,.0f} writes/s "
        text += f"({ratio(row['ratio'])})"
    print(f"  [{kind}] {text}", file=sys.stderr, flush=True)


def _collector(results: dict[str, Any], kind: str) -> Any:
    def report(row: dict[str, Any]) -> None:
        results[kind].append(row)
        _progress(kind, row)

    return report


@contextmanager
def _timed(name: str) -> Iterator[None]:
    """Print how long the block took, on stderr."""
    start = time.perf_counter()
    yield
    print(f"  ({name}: {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


def _sections(
    results: dict[str, Any], db: str, url: str, settings: Settings, only: set[str]
) -> None:
    """Run the selected sections on one database (``url``: its SQLite file or throwaway DB)."""
    import _concurrency
    import _latency
    import _memory
    import _scale

    name = _report.DB_NAMES[db]
    _common.upgrade(url)
    if "latency" in only:
        with _timed(f"{name} latency"):
            _latency.run_sync(db, url, settings, _collector(results, "latency"))
            asyncio.run(_latency.run_async(db, url, settings, _collector(results, "latency")))
    if "concurrency" in only and db == "postgresql":
        with _timed(f"{name} concurrency"):
            results["concurrency"] = asyncio.run(_concurrency.run(url, settings))
            _progress("concurrency", results["concurrency"])
    if "scale" in only:
        with _timed(f"{name} scale"):
            _scale.run(db, url, settings, _collector(results, "scale"))
    if "memory" in only:
        with _timed(f"{name} memory"):
            _memory.run(db, url, settings, _collector(results, "memory"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections on SQLite and PostgreSQL; return the results."""
    settings = Settings.make(quick=args.quick, million=args.million, durable=not args.no_fsync)
    only = args.only
    results: dict[str, Any] = {
        "latency": [],
        "concurrency": None,
        "scale": [],
        "memory": [],
        "skipped": [],
    }
    start = time.perf_counter()
    pg_version = None
    with _common.scratch_dir(durable=settings.durable) as folder:
        results["sqlite_dir"] = str(Path(folder).parent)
        results["sqlite_storage"] = _common.storage(folder)
        print("SQLite", file=sys.stderr, flush=True)
        _sections(results, "sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", settings, only)
    if (reason := _common.postgres_skipped(args)) is not None:
        results["skipped"].append(f"PostgreSQL: {reason}")
    else:
        with _common.postgres_database(args.pg_url, durable=settings.durable) as url:
            print(f"PostgreSQL (throwaway database {url.rsplit('/', 1)[-1]})", file=sys.stderr)
            pg_version = _common.server_setting(url)
            _sections(results, "postgresql", url, settings, only)
    results["meta"] = {
        "command": "python benchmarks/run.py " + shlex.join(sys.argv[1:]),
        "date": _common.now_text(),
        "seconds": time.perf_counter() - start,
        "settings": dataclasses.asdict(settings),
        "machine": _report.machine(pg_version),
    }
    results["targets"] = _report.targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run (or load) the benchmark, then print, save, draw and document it; or run a suite."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUITES:
        return int(importlib.import_module(SUITES[argv[0]]).main(argv[1:]) or 0)
    args = _common.parse(_parser(), argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        out = None
    else:
        out = _common.save(results := run(args), "stores", args.out, quick=args.quick)
    print(_report.console(results))
    if out is not None:
        print(f"results: {out}")

    chart_path: Path | None = None
    if not args.no_chart:
        quick = results["meta"]["settings"]["quick"]
        base = out or args.from_json
        chart_path = args.chart or (
            base.with_suffix(".png") if quick else REPO / "docs" / "performance.png"
        )
        try:
            _report.chart(results, chart_path)
        except ImportError:
            print(
                "no chart: matplotlib is not installed. "
                "Install it with: pip install 'statekeeper[bench]'  (or: pip install matplotlib)"
            )
            chart_path = None
        else:
            print(f"chart: {chart_path}")
    if args.write_docs:
        link = os.path.relpath(chart_path.resolve(), _report.PAGE.parent) if chart_path else None
        print(f"docs: {_report.write_page(results, link)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
