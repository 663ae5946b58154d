"""What the transaction-pooler setting costs: prepares on and off, direct and through PgBouncer.

Usage::

    python benchmarks/pooler.py                 # starts its own PgBouncer (pool_mode = transaction)
    python benchmarks/pooler.py --quick         # smoke run
    python benchmarks/pooler.py --pgbouncer-url postgresql://postgres@127.0.0.1:6432/DB

``get_state`` and ``set_state`` of a 1 KB state on ``SqlSession``, and
``append_event`` of a 2 KB event on ``SessionService`` (sync, psycopg 3), on a
throwaway database at the server's default settings (a commit waits for the
WAL flush, as users run it), each beside its floor on the same route: a raw
psycopg connection in autocommit running the same SQL (the floors of
``run.py`` and ``service.py``), with the same ``prepare_threshold`` as
statekeeper's side. Batches alternate (statekeeper, floor, floor, statekeeper,
...); times are medians of the batches, ratios statekeeper / floor. Routes:
the direct connection with prepares on (the default) and off
(``prepare_threshold=None``, the pooler setting), and a PgBouncer in
transaction mode (one server connection per pool, on the same machine) with
prepares off, the only way that works there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common
import sqlalchemy as sa
from _common import Settings, measure_pair
from service import APP, EVENT, USER, Sql, drive, floor_append

from statekeeper import SessionService, SqlSession

STATE = _common.agent_modules(1_000)
OFF: dict[str, Any] = {"connect_args": {"prepare_threshold": None}}

_INI = """\
[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
pool_mode = transaction
default_pool_size = 1
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


@contextlib.contextmanager
def pgbouncer(server: sa.URL) -> Iterator[int]:
    """Run a PgBouncer in transaction mode on a free loopback port; yield the port."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    folder = tempfile.mkdtemp(prefix="sk-bench-pgbouncer-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    Path(folder, "pgbouncer.ini").write_text(
        _INI.format(host=server.host, port=server.port or 5432, listen=port, dir=folder)
    )
    Path(folder, "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    command = [binary, str(Path(folder, "pgbouncer.ini"))]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        for path in (folder, *(str(p) for p in Path(folder).iterdir())):
            shutil.chown(path, "postgres")
        command[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(Path(folder, "pgbouncer.log").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _route(url: str, prepares: bool, sql: Sql, settings: Settings) -> dict[str, dict[str, Any]]:
    """Measure the three calls on ``url`` against the raw driver with the same prepares.

    ``sql``: the service's statements, recorded on the direct connection.
    """
    import psycopg

    options = None if prepares else OFF
    threshold = 5 if prepares else None  # psycopg's default, or never
    select, upsert = _common.select_sql("format"), _common.upsert_sql("format")
    text = json.dumps(STATE)
    results: dict[str, dict[str, Any]] = {}
    with (
        SqlSession(url, app_name=APP, engine_options=options) as store,
        SessionService(url, app_name=APP, engine_options=options) as svc,
        psycopg.connect(url, autocommit=True, prepare_threshold=threshold) as raw,
    ):
        store.set_state("s", STATE)
        svc.delete_session("e", USER)
        svc.create_session("e", USER, state={"topic": "weather"})
        turn = iter(range(sys.maxsize))

        def raw_get() -> object:
            row = raw.execute(select, (APP, "", "s", _common.utcnow())).fetchone()
            return json.loads(row[0]) if row else None

        def raw_set() -> object:
            now = _common.utcnow()
            return raw.execute(upsert, (APP, "", "s", text, now, now)).fetchone()

        cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "get_state": (lambda: store.get_state("s"), raw_get),
            "set_state": (lambda: store.set_state("s", STATE), raw_set),
            "append_event": (
                lambda: svc.append_event("e", EVENT, USER, state_delta={"turn": next(turn)}),
                lambda: drive(raw, floor_append(sql, "e", next(turn))),
            ),
        }
        for name, (ours, floor) in cases.items():
            results[name] = measure_pair(ours, floor, settings).summary()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run every route and print one line per call."""
    parser = _common.parser(
        __doc__, "pg-url", "quick", "out", out={"help": "write the results as JSON"}
    )
    parser.add_argument("--pgbouncer-url", help="an existing PgBouncer (transaction mode)")
    args = parser.parse_args(argv)
    settings = Settings.make(quick=args.quick, million=False)
    if _common.postgres_skipped(args) is not None:
        return 0
    data: dict[str, Any] = {"meta": {"quick": args.quick, "rounds": settings.rounds}}
    with _common.postgres_database(args.pg_url) as url:  # default settings, as users run
        _common.upgrade(url)  # migrations on the direct connection
        sql = Sql(url)
        parsed = sa.make_url(url)
        with (
            contextlib.nullcontext(None)
            if args.pgbouncer_url
            else pgbouncer(sa.make_url(args.pg_url)) as port
        ):
            pooled = args.pgbouncer_url or parsed.set(host="127.0.0.1", port=port)
            pooled = sa.make_url(pooled).set(database=parsed.database)
            routes = {
                "direct, prepares on": (url, True),
                "direct, prepares off": (url, False),
                "PgBouncer, prepares off": (_common.libpq_url(pooled), False),
            }
            for route, (target, prepares) in routes.items():
                data[route] = _route(target, prepares, sql, settings)
    print(f"{'route':<26} {'call':<13} {'statekeeper':>12} {'floor':>10} {'ratio':>6}")
    for route in routes:
        for call, row in data[route].items():
            print(
                f"{route:<26} {call:<13} {row['statekeeper_s'] * 1e3:9.3f} ms"
                f" {row['floor_s'] * 1e3:7.3f} ms {row['ratio']:5.2f}x"
            )
    on, off = data["direct, prepares on"], data["direct, prepares off"]
    for call in on:
        cost = off[call]["statekeeper_s"] / on[call]["statekeeper_s"]
        print(f"prepares off on the direct connection, {call}: {cost:.2f}x the time")
    if args.out:
        _common.save(data, "pooler", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
