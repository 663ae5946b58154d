"""Purge of a large backlog of expired sessions, and what a concurrent caller waits meanwhile.

    python benchmarks/purge.py                      # 100,000 sessions, SQLite and PostgreSQL
    python benchmarks/purge.py --sessions 5000      # a quick look
    python benchmarks/purge.py --write-docs         # also benchmarks/results/purge.json, purge.md,
                                                    # and regenerate docs/performance.md

For each database: N expired sessions (and 100 live ones) are bulk loaded into
one app, then ``SqlSession.purge_expired()`` deletes them while two other
processes keep calling the store: a reader (``get_state`` of a live session,
back to back) and a writer (``set_state`` of a live session, about 100 a
second). The run reports the purge's
total time and the longest (and 99th percentile) call of the reader and the
writer during it, beside the same callers over an idle database ("baseline").

For comparison it also times the purge as one ``DELETE ... RETURNING`` of the
whole backlog (statekeeper's purge before batching), with the same callers.
The SQLite file is on disk (fsync on), PostgreSQL is the test server, on the
same machine as the client.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _common
import _report
import sqlalchemy as sa

from statekeeper import SqlSession, migrations

APP = "bench"
STATE = {"agent": {"name": "Friday", "turns": 3}, "memory": {"content": ["hello"] * 10}}
BASELINE_SECONDS = 2.0
#: The writer's pause between two writes (about 100 writes a second).
WRITER_PAUSE = 0.01
WAITS = ("max_s", "p99_s")


def _caller(url: str, kind: str, started: Any, stop: Any, out: Any) -> None:
    """Call the store in a loop until ``stop``; send back each call's duration."""
    durations: list[float] = []
    with SqlSession(url, app_name=APP) as store:
        store.get_state("live-0", "u")  # connect and check the schema before timing
        started.set()
        i = 0
        while not stop.is_set():
            begin = time.perf_counter()
            if kind == "reader":
                store.get_state("live-0", "u")
            else:
                store.set_state("live-1", {"i": i}, user_id="u")
            durations.append(time.perf_counter() - begin)
            i += 1
            if kind == "writer":
                time.sleep(WRITER_PAUSE)  # a busy app, not a tight loop hogging the lock
    out.put((kind, durations))


class Callers:
    """A reader and a writer process calling the store while a block runs."""

    def __init__(self, url: str) -> None:
        self.ctx = mp.get_context("spawn")
        self.url = url

    def __enter__(self) -> Callers:
        self.stop = self.ctx.Event()
        self.out = self.ctx.Queue()
        events = []
        self.processes = []
        for kind in ("reader", "writer"):
            started = self.ctx.Event()
            process = self.ctx.Process(
                target=_caller, args=(self.url, kind, started, self.stop, self.out)
            )
            process.start()
            events.append(started)
            self.processes.append(process)
        for started in events:
            if not started.wait(60):
                raise RuntimeError("a caller process did not start")
        time.sleep(0.2)  # let both settle into their loops
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.results = dict(self.out.get(timeout=60) for _ in self.processes)
        for process in self.processes:
            process.join(timeout=60)


def _summary(durations: list[float]) -> dict[str, float]:
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    return {
        "calls": len(ordered),
        "max_s": ordered[-1] if ordered else 0.0,
        "p99_s": p99,
        "median_s": statistics.median(ordered) if ordered else 0.0,
    }


def _sessions(engine: sa.Engine) -> sa.Table:
    """statekeeper's sessions table as the migrated database has it (reflected)."""
    return sa.Table(_common.TABLE, sa.MetaData(), autoload_with=engine)


def _load(url: str, count: int) -> None:
    """Bulk load ``count`` expired sessions and 100 live ones into the app."""
    now = _common.utcnow()
    past = now - dt.timedelta(hours=1)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    sessions = _sessions(engine)

    def rows(name: str, ids: range, when: dt.datetime, expires: Any) -> list[dict[str, Any]]:
        base = {"app_name": APP, "user_id": "u", "state": STATE, "version": 1}
        times = {"created_at": when, "updated_at": when, "expires_at": expires}
        return [{**base, **times, "session_id": f"{name}-{i}"} for i in ids]

    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.app_name == APP))
            for start in range(0, count, 10_000):
                old = range(start, min(count, start + 10_000))
                conn.execute(sa.insert(sessions), rows("old", old, past, past))
            conn.execute(sa.insert(sessions), rows("live", range(100), now, None))
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE statekeeper_sessions"))
    finally:
        engine.dispose()


def _purge_batched(url: str) -> int:
    with SqlSession(url, app_name=APP) as store:
        return store.purge_expired()


def _purge_one_statement(url: str) -> int:
    """The purge before batching: one DELETE of the whole backlog, its rows fetched back."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    sessions = _sessions(engine)
    try:
        with engine.begin() as conn:
            now = _common.utcnow()
            query = (
                sa.delete(sessions)
                .where(sessions.c.app_name == APP, sessions.c.expires_at <= now)
                .returning(sessions.c.version)
            )
            return len(conn.execute(query).all())
    finally:
        engine.dispose()


def measure(url: str, label: str, count: int) -> dict[str, Any]:
    """Baseline callers, then each way of purging with the callers running."""
    print(f"{label}: loading {count:,} expired sessions ...", flush=True)
    _load(url, count)
    result: dict[str, Any] = {"database": label, "sessions": count}
    with Callers(url) as idle:
        time.sleep(BASELINE_SECONDS)
    result["baseline"] = {kind: _summary(d) for kind, d in idle.results.items()}
    for name, purge in (("batched", _purge_batched), ("one statement", _purge_one_statement)):
        _load(url, count)
        with Callers(url) as callers:
            begin = time.perf_counter()
            deleted = purge(url)
            seconds = time.perf_counter() - begin
        if deleted != count:
            raise RuntimeError(f"{name} purge deleted {deleted} sessions, expected {count}")
        result[name] = {
            "seconds": seconds,
            "deleted": deleted,
            **{kind: _summary(d) for kind, d in callers.results.items()},
        }
        waits = {kind: _summary(d)["max_s"] * 1e3 for kind, d in callers.results.items()}
        print(
            f"{label} {name}: {seconds:.2f} s; longest reader call {waits['reader']:.1f} ms, "
            f"writer {waits['writer']:.1f} ms",
            flush=True,
        )
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The section docs/performance.md includes (written to benchmarks/results/purge.md)."""
    lines = [
        f"## Purge of {results[0]['sessions']:,} expired sessions",
        "",
        "<!-- Generated by `python benchmarks/purge.py --write-docs`; edits are overwritten. -->",
        "",
        f"Run: `{meta['command']}` on {meta['date']}. `purge_expired()` deletes in batches of "
        "1,000 rows, each one short autocommit statement, and counts the deleted rows without "
        "fetching them. Meanwhile two other processes call the store in a loop: a reader "
        "(`get_state` of a live session, back to back) and a writer (`set_state` of a live "
        "session, about 100 a second). "
        "*Baseline* is the same callers for 2 s over an idle database; *one statement* is "
        "the purge as it was before batching (one `DELETE ... RETURNING` of the whole backlog), "
        "for comparison. SQLite on disk (WAL, fsync on); PostgreSQL on the same machine.",
        "",
    ]
    rows = []
    for r in results:
        for name in ("baseline", "batched", "one statement"):
            row, seconds = r[name], r[name].get("seconds")
            rows.append(
                [
                    r["database"],
                    name,
                    "-" if seconds is None else f"{seconds:.2f} s",
                    "-" if seconds is None else f"{r['sessions'] / seconds:,.0f}",
                    f"{row['reader']['calls']:,}",
                    *(_ms(row[kind][key]) for kind in ("reader", "writer") for key in WAITS),
                ]
            )
    heads = ["db", "purge", "total time", "sessions/s", "reader calls", "reader max wait"]
    heads += ["reader p99", "writer max wait", "writer p99"]
    lines += [_report.md_table(heads, rows)]
    lines.append("")
    by_db = {r["database"]: r for r in results}
    if "SQLite" in by_db:
        r = by_db["SQLite"]
        lines += [
            "On SQLite the reader does not wait for the purge (in WAL mode reads do not take "
            "the write lock). The writer does: SQLite has one write lock and no queue for it, "
            "and a writer retrying on its busy timeout can miss the short gaps between batches. "
            f"Its longest call was {_ms(r['batched']['writer']['max_s'])} during the batched "
            f"purge, against {_ms(r['one statement']['writer']['max_s'])} with one statement "
            "holding the lock throughout.",
            "",
        ]
    if "PostgreSQL" in by_db:
        r = by_db["PostgreSQL"]
        lines += [
            "On PostgreSQL neither caller waits on the purge either way (readers see the rows "
            "until the delete commits, and only the deleted rows are locked); what batching "
            "bounds there is each transaction's size and lock count, at the price of total "
            f"time: {r['batched']['seconds']:.2f} s against {r['one statement']['seconds']:.2f} s "
            "in one statement.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the purge benchmark; print the table, optionally write it for the docs."""
    parser = _common.parser(
        __doc__,
        *("pg-url", "no-postgres", "write-docs"),
        write_docs={"help": "save results/purge.json and purge.md; regenerate the docs page"},
    )
    parser.add_argument("--sessions", type=int, default=100_000, help="expired sessions")
    parser.add_argument(
        "--from-json", action="store_true", help="no run: document results/purge.json again"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads((_common.RESULTS / "purge.json").read_text())
        _write_docs(markdown(saved["results"], saved["meta"]))
        return 0

    results = []
    with _common.scratch_dir() as tmp:  # on disk, as users have it
        url = f"sqlite:///{Path(tmp) / 'purge.db'}"
        migrations.upgrade(url)
        results.append(measure(url, "SQLite", args.sessions))
    if not args.no_postgres:
        with _common.postgres_database(args.pg_url) as pg_url:
            migrations.upgrade(pg_url)
            results.append(measure(pg_url, "PostgreSQL", args.sessions))
    meta = {
        "command": "python benchmarks/purge.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "date": _common.now_text(),
    }
    text = markdown(results, meta)
    print(text)
    if args.write_docs:
        _common.save({"meta": meta, "results": results}, "purge")
        _write_docs(text)
    return 0


def _write_docs(text: str) -> None:
    """Write benchmarks/results/purge.md and regenerate docs/performance.md, which includes it."""
    (_common.RESULTS / "purge.md").write_text(text)
    saved = json.loads((_common.RESULTS / "stores.json").read_text())  # the page's own results
    print(f"docs: {_report.write_page(saved, 'performance.png')}")


if __name__ == "__main__":
    raise SystemExit(main())
