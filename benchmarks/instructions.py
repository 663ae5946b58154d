"""CPU instructions per operation, counted by callgrind: statekeeper beside the raw driver.

Usage::

    python benchmarks/run.py instructions            # ~2 min on 2 cores
    python benchmarks/run.py instructions --quick    # smoke run (~1 min, noisier)
    python benchmarks/run.py instructions --keep /tmp/cg   # keep callgrind's files

Instructions do not depend on the machine's load, unlike wall time: the
figure of a change can be read from one run, on a busy machine too. One
child process runs every case under ``valgrind --tool=callgrind
--dump-before=getppid``; it calls ``os.getppid()`` (which nothing else in
the process calls) between segments, so callgrind writes one profile per
segment. A segment is ``--ops`` calls of one case, after a warm-up of the
same call (imports, SQLAlchemy's compiled cache, the pool's connection are
outside it); an empty segment (the same loop calling nothing) is subtracted,
and ``instructions / op = (segment - empty) / ops``. Every instruction of
the process counts: Python, SQLAlchemy, the ``sqlite3`` module and SQLite
itself (its writes to disk are system calls: their time is not counted,
their instructions in the process are).

The cases, on a SQLite file on disk (default durability, WAL) with
``SqlSession``'s default settings, and their raw-driver floor on one
``sqlite3`` connection in autocommit (``benchmarks/_common.py``), both on
the same table, a 10 KB AgentScope-like state of two modules:

* ``get_state``: one point ``SELECT`` + ``json.loads``;
* ``set_state`` and ``merge_state`` (both modules): ``json.dumps`` + one
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING version``;
* ``encode``: ``statekeeper.codec.encode_modules`` (what ``set_state``
  encodes with) against plain ``json.dumps``.

Beside them, what bounds the store: the least a call does on SQLAlchemy's
public API on the store's engine, a pool checkout and return
(``engine.connect()`` then ``close()``), and that checkout around one
``Connection.execute`` of the floor's ``SELECT`` (+ ``json.loads``) or of
its upsert (after ``json.dumps``), as ``sa.text``.

Before each segment the WAL is checkpointed (``PRAGMA
wal_checkpoint(TRUNCATE)``, outside the segment), so every writing segment
starts from an empty WAL and pays the same automatic checkpoints.
``PYTHONHASHSEED=0`` makes the runs repeatable. Writes
``benchmarks/results/instructions.json`` (``--out``). Targets (issue 16):
``SqlSession`` at most 1.5x the raw driver's instructions per operation.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

#: What each case is, in the order of the table: (op, what is measured, the floor).
CASES: dict[str, tuple[str, str]] = {
    "get_state": (
        "SqlSession.get_state",
        "sqlite3: one point SELECT + json.loads",
    ),
    "set_state": (
        "SqlSession.set_state",
        "sqlite3: json.dumps + INSERT ... ON CONFLICT DO UPDATE ... RETURNING version",
    ),
    "merge_state": (
        "SqlSession.merge_state (2 modules)",
        "sqlite3: json.dumps + the same upsert",
    ),
    "encode": ("statekeeper.codec.encode_modules", "json.dumps"),
    "async get_state": (
        "AsyncSqlSession.get_state (one worker-thread hop)",
        "sqlite3 in asyncio.to_thread: one point SELECT + json.loads",
    ),
    "async set_state": (
        "AsyncSqlSession.set_state (one worker-thread hop)",
        "sqlite3 in asyncio.to_thread: json.dumps + the upsert",
    ),
}
#: The cases run as coroutines, ``ops`` of them in one pass of an event loop.
ASYNC_CASES = ("async get_state", "async set_state")
#: What bounds the store, on SQLAlchemy's public API on the store's engine: the
#: least a call can do there (no floor of their own; compared with the raw driver's).
PARTS = {
    "checkout": ("engine.connect() + close(): a pool checkout and return", None),
    "sqlalchemy get": (
        "with engine.connect(): Connection.execute(text(the floor's SELECT)) + json.loads",
        "get_state",
    ),
    "sqlalchemy set": (
        "json.dumps + with engine.connect(): Connection.execute(text(the floor's upsert))",
        "set_state",
    ),
}
TARGET = 1.5  # issue 16: sync stores <= 1.5x the raw driver's instructions per op
ASYNC_TARGET = 2.0  # and async ones <= 2x
SIZE = 10_000
SK_APP, FLOOR_APP, USER = "bench", "bench_floor", "alice"
SESSIONS = 8


# --------------------------------------------------------------------------- child


def _child(path: Path, ops: int, warmup: int, rounds: int, labels_file: Path) -> int:
    """Run every case; ``os.getppid()`` between segments makes callgrind dump (see above)."""
    import asyncio

    import sqlalchemy as sa

    from statekeeper import AsyncSqlSession, SqlSession, codec

    labels: list[str] = []

    def mark(label: str) -> None:
        """Close the segment that ran since the last mark: callgrind dumps on getppid."""
        os.getppid()
        labels.append(label)

    state = _common.agent_modules(SIZE)
    keys = [f"instr-{i}" for i in range(SESSIONS)]
    store = SqlSession(f"sqlite:///{path}", app_name=SK_APP)
    conn = _common.sqlite_connect(path)
    fwrite, fread = _common.floor(conn, FLOOR_APP, USER)
    for key in keys:  # every session exists: writes are updates, reads hit
        store.set_state(key, state, USER)
        fwrite(key, json.dumps(state))
    sk_key, floor_key = _common.rotating(keys), _common.rotating(keys)
    engine = store.engine
    key = "app_name = :app AND user_id = :user AND session_id = :session"
    select = sa.text(
        f"SELECT state, version FROM {_common.TABLE} WHERE {key} "
        "AND (expires_at IS NULL OR expires_at > :now)"
    )
    upsert = sa.text(
        f"INSERT INTO {_common.TABLE} ({_common.COLUMNS}) "
        "VALUES (:app, :user, :session, :state, 1, :now, :now, NULL) "
        "ON CONFLICT (app_name, user_id, session_id) DO UPDATE SET "
        f"state = excluded.state, version = {_common.TABLE}.version + 1, "
        "updated_at = excluded.updated_at, expires_at = excluded.expires_at "
        "RETURNING version"
    )

    def sa_get() -> Any:
        params = {"app": FLOOR_APP, "user": USER, "session": floor_key()}
        with engine.connect() as conn:
            row = conn.execute(select, params | {"now": _common.sqlite_now()}).first()
        return json.loads(row[0])

    def sa_set() -> Any:
        params = {"app": FLOOR_APP, "user": USER, "session": floor_key()}
        params |= {"state": json.dumps(state), "now": _common.sqlite_now()}
        with engine.connect() as conn:
            return conn.execute(upsert, params).first()

    calls: dict[str, Callable[[], Any]] = {
        "get_state/statekeeper": lambda: store.get_state(sk_key(), USER),
        "get_state/raw": lambda: fread(floor_key()),
        "set_state/statekeeper": lambda: store.set_state(sk_key(), state, USER),
        "set_state/raw": lambda: fwrite(floor_key(), json.dumps(state)),
        "merge_state/statekeeper": lambda: store.merge_state(sk_key(), state, USER),
        "merge_state/raw": lambda: fwrite(floor_key(), json.dumps(state)),
        "encode/statekeeper": lambda: codec.encode_modules(state),
        "encode/raw": lambda: json.dumps(state),
        "checkout/sqlalchemy": lambda: engine.connect().close(),
        "sqlalchemy get/sqlalchemy": sa_get,
        "sqlalchemy set/sqlalchemy": sa_set,
        "empty": lambda: None,
    }
    loop = asyncio.new_event_loop()
    astore = AsyncSqlSession(f"sqlite:///{path}", app_name=SK_APP)
    threaded = _common.ThreadedSqlite(path)  # the async floor's connection, any thread's
    twrite, tread = _common.floor(threaded.conn, FLOOR_APP, USER)
    acalls: dict[str, Callable[[], Any]] = {
        "async get_state/statekeeper": lambda: astore.get_state(sk_key(), USER),
        "async get_state/raw": lambda: asyncio.to_thread(tread, floor_key()),
        "async set_state/statekeeper": lambda: astore.set_state(sk_key(), state, USER),
        "async set_state/raw": lambda: asyncio.to_thread(twrite, floor_key(), json.dumps(state)),
    }

    async def repeat(call: Callable[[], Any], times: int) -> None:
        for _ in range(times):
            await call()

    def batch(label: str, times: int) -> None:
        if label in calls:
            call = calls[label]
            for _ in range(times):
                call()
        else:
            loop.run_until_complete(repeat(acalls[label], times))

    mark("startup")
    for _ in range(rounds):
        for label in [*calls, *acalls]:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            batch(label, warmup)
            gc.collect()
            mark("setup")
            batch(label, ops)
            mark(label)
    loop.run_until_complete(astore.close())
    loop.close()
    threaded.conn.close()
    store.close()
    conn.close()
    labels_file.write_text(json.dumps(labels))
    return 0


# --------------------------------------------------------------------------- parent


def _totals(out: Path, count: int) -> list[int]:
    """The instructions of each of callgrind's ``count`` dumps ``out.1`` ... ``out.COUNT``."""
    totals = []
    for i in range(1, count + 1):
        text = Path(f"{out}.{i}").read_text(errors="replace")
        found = re.search(r"^(?:totals|summary):\s*(\d+)", text, re.M)
        totals.append(int(found.group(1)) if found else 0)
    return totals


def measure(valgrind: str, ops: int, warmup: int, rounds: int, keep: Path | None) -> dict[str, Any]:
    """Run the child under callgrind; return each case's instructions per op, every round."""
    with (
        _common.scratch_dir(durable=True) as folder,
        tempfile.TemporaryDirectory(prefix="statekeeper-callgrind-") as scratch,
    ):
        db = Path(folder) / "bench.db"
        _common.upgrade(f"sqlite:///{db}")
        where = keep or Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        out, labels_file = where / "callgrind.out", where / "labels.json"
        command = [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-before=getppid",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(db),
            *(str(ops), str(warmup), str(rounds), str(labels_file)),
        ]
        env = os.environ | {"PYTHONHASHSEED": "0"}
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"the callgrind run failed:\n{run.stderr[-3000:]}")
        labels = json.loads(labels_file.read_text())
        totals = _totals(out, len(labels))
        storage = _common.storage(folder)
    per_label: dict[str, list[int]] = {}
    for label, total in zip(labels, totals, strict=True):
        if label not in ("startup", "setup"):
            per_label.setdefault(label, []).append(total)
    empty = per_label.pop("empty")
    per_op = {
        label: [(total - e) / ops for total, e in zip(values, empty, strict=True)]
        for label, values in per_label.items()
    }
    return {"per_op": per_op, "empty_per_op": [e / ops for e in empty], "storage": storage}


def rows(per_op: dict[str, list[float]]) -> list[dict[str, Any]]:
    """A row per case: the median instructions per op of each side and their ratio."""
    out = []
    for case, (subject, floor) in CASES.items():
        sk, raw = (statistics.median(per_op[f"{case}/{side}"]) for side in ("statekeeper", "raw"))
        out.append(
            {
                "op": case,
                "statekeeper": subject,
                "floor": floor,
                "statekeeper_instructions": sk,
                "raw_instructions": raw,
                "ratio": sk / raw,
                "target": None
                if case == "encode"
                else ASYNC_TARGET
                if case in ASYNC_CASES
                else TARGET,
                "rounds": {
                    "statekeeper": per_op[f"{case}/statekeeper"],
                    "raw": per_op[f"{case}/raw"],
                },
            }
        )
    raw = {r["op"]: r["raw_instructions"] for r in out}
    for part, (what, floor_of) in PARTS.items():
        value = statistics.median(per_op[f"{part}/sqlalchemy"])
        row = {"op": part, "part": what, "instructions": value}
        row["rounds"] = per_op[f"{part}/sqlalchemy"]
        if floor_of is not None:
            row |= {"raw_op": floor_of, "vs_raw": value / raw[floor_of]}
        out.append(row)
    return out


def _k(value: float) -> str:
    return f"{value / 1000:,.0f}k"


def table(data: dict[str, Any]) -> str:
    """The report: a Markdown table of the cases, then what bounds the store."""
    meta = data["meta"]
    lines = [
        f"Instructions per operation (callgrind), 10 KB state, SQLite file on disk "
        f"({meta['storage']}), {meta['ops']} ops per segment, median of {meta['rounds']} "
        f"round(s); {meta['command']} ({meta['date']})",
        "",
        "| op | statekeeper instr/op | raw instr/op | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        if "ratio" not in r:
            continue
        target = "-" if r["target"] is None else f"≤ {r['target']}x"
        if r["target"] is not None and r["ratio"] > r["target"]:
            target += " **missed**"
        cells = (r["op"], _k(r["statekeeper_instructions"]), _k(r["raw_instructions"]))
        lines.append("| " + " | ".join(cells) + f" | {r['ratio']:.2f}x | {target} |")
    lines += [
        "",
        "What bounds the store: the least a call does on SQLAlchemy's public API, on the "
        "store's engine, with the floor's SQL (as `text`):",
        "",
    ]
    for r in data["rows"]:
        if "part" in r:
            versus = f" ({r['vs_raw']:.2f}x raw {r['raw_op']})" if "vs_raw" in r else ""
            lines.append(f"- {_k(r['instructions'])}{versus}: {r['part']}")
    lines += ["", "Floors: " + "; ".join(f"{op}: {floor}" for op, (_, floor) in CASES.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Count (or load), print and save the instructions per operation."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        path, ops, warmup, rounds, labels = argv[1:6]
        return _child(Path(path), int(ops), int(warmup), int(rounds), Path(labels))
    p = _common.parser(
        __doc__,
        *("quick", "out", "from-json"),
        out={"help": "results JSON (default benchmarks/results/instructions[-quick].json)"},
    )
    p.prog = "python benchmarks/run.py instructions"
    p.add_argument("--ops", type=int, help="calls per segment (default 100; --quick: 20)")
    p.add_argument("--keep", type=Path, help="keep callgrind's files in this folder")
    args = _common.parse(p, argv)
    out = None
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
    else:
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            print("nothing counted: valgrind is not installed (apt-get install valgrind)")
            return 0
        ops = args.ops or (20 if args.quick else 100)
        warmup, rounds = (5, 1) if args.quick else (20, 3)
        measured = measure(valgrind, ops, warmup, rounds, args.keep)
        meta = {
            "command": shlex.join(["python", "benchmarks/run.py", "instructions", *argv]),
            "date": _common.now_text(),
            "quick": args.quick,
            "ops": ops,
            "warmup": warmup,
            "rounds": rounds,
            "state_bytes": _common.json_size(_common.agent_modules(SIZE)),
            "storage": measured["storage"],
            "empty_per_op": measured["empty_per_op"],
            "python": sys.version.split()[0],
            "versions": {n: _common.version(n) for n in ("statekeeper", "sqlalchemy")},
            "valgrind": subprocess.run(
                [valgrind, "--version"], capture_output=True, text=True
            ).stdout.strip(),
        }
        data = {"meta": meta, "rows": rows(measured["per_op"])}
        out = _common.save(data, "instructions", args.out, quick=args.quick)
    print(table(data))
    if out is not None:
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
