"""Round trips per operation on PostgreSQL, counted on the wire, not estimated.

Usage::

    python benchmarks/run.py roundtrips               # ~20 s; prints the tables
    python benchmarks/run.py roundtrips --write-docs  # also docs/performance.md's section
    python benchmarks/run.py roundtrips --from-json benchmarks/results/roundtrips.json --write-docs

statekeeper's stores (``SqlSession``, ``AsyncSqlSession``), services
(``SessionService``, ``AsyncSessionService``) and ADK adapter
(``statekeeper.adk.SqlSessionService``), and beside it ADK's own
``DatabaseSessionService`` on psycopg and on asyncpg, each at its default
settings, on a throwaway database. A round trip is a request the server
answered: one ReadyForQuery message. On psycopg it is read from libpq's
protocol trace (``pgconn.trace``) of every connection the engine opens.
asyncpg has no such trace: its connections go through a loopback proxy in
this process that counts the server's ReadyForQuery messages on their way to
the client. Every call is counted by itself (``counts`` in the JSON).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import re
import sys
import tempfile
from types import SimpleNamespace
from typing import Any

import _common
import sqlalchemy as sa

USER, APP = "rtt-user", "rtt"
STATE = {"topic": "refund", "turn": 0}
EVENT = {"author": "user", "text": "where is my order?"}


class Trace:
    """libpq's protocol trace of every connection ``engine`` opens (psycopg)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the engine)
        self.pgconns: list[Any] = []
        self.sent = self.statements = 0  # statements SQLAlchemy sent: so far, at the last take
        sa.event.listen(engine, "connect", self._connect)
        sa.event.listen(engine, "before_cursor_execute", self._sent)

    def _sent(self, *_: Any) -> None:
        self.sent += 1

    def _connect(self, dbapi_connection: Any, _record: Any) -> None:
        pgconn = getattr(dbapi_connection, "driver_connection", dbapi_connection).pgconn
        pgconn.trace(self.file.fileno())
        self.pgconns.append(pgconn)

    def take(self) -> int:
        """The ReadyForQuery messages the server sent since the last ``take``."""
        self.statements, self.sent = self.sent, 0
        self.pgconns = [p for p in self.pgconns if p.status == 0]  # CONNECTION_OK: still open
        for pgconn in self.pgconns:
            pgconn.untrace()  # flushes libpq's buffer into the file
        self.file.seek(0)
        text = self.file.read()
        self.file.seek(0)
        self.file.truncate()
        for pgconn in self.pgconns:
            pgconn.trace(self.file.fileno())
        return len(re.findall(rb"\bB\t\d+\tReadyForQuery\b", text))


class Proxy:
    """A loopback proxy to the server counting the ReadyForQuery messages it forwards."""

    def __init__(self, url: sa.URL) -> None:
        self.upstream, self.count = (url.host or "127.0.0.1", url.port or 5432), 0
        self.statements = None  # not seen here

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer, True))

    async def _pipe(self, reader: Any, writer: Any, count: bool = False) -> None:
        # No SSL (the client is told ssl=False): the server's stream is typed messages
        # from its first byte, each a type byte and a length that counts itself.
        buffer = b""
        while data := await reader.read(65536):
            if count:
                buffer += data
                while len(buffer) >= 5 and len(buffer) > (n := int.from_bytes(buffer[1:5], "big")):
                    self.count += buffer[0] == ord("Z")
                    buffer = buffer[1 + n :]
            writer.write(data)
            await writer.drain()
        writer.close()

    def take(self) -> int:
        taken, self.count = self.count, 0
        return taken


async def _await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


#: A state module, as ``save_session_state`` / ``load_session_state`` take them.
MODULE = SimpleNamespace(state_dict=lambda: {"turn": 1}, load_state_dict=lambda state: None)
MEMORY = {"memory": {"n": 1}}
SCOPED = {"turn": 1, "app:seen": 1, "user:turns": 1}

# Each store's, service's and ADK service's operations: {name: (prepare(i) or None, call(i, p))},
# ``p`` what ``prepare(i)`` returned; only ``call`` is counted.


def store_ops(s: Any) -> dict[str, tuple[Any, Any]]:
    return {
        "get_state": (None, lambda i, p: s.get_state("a", USER)),
        "set_state": (None, lambda i, p: s.set_state("a", STATE, USER)),
        "merge_state": (None, lambda i, p: s.merge_state("a", MEMORY, USER)),
        "merge_state, expected_version": (
            lambda i: s.set_state(f"v{i}", STATE, USER),
            lambda i, p: s.merge_state(f"v{i}", MEMORY, USER, expected_version=p),
        ),
        "save_session_state": (None, lambda i, p: s.save_session_state("m", USER, agent=MODULE)),
        "load_session_state": (None, lambda i, p: s.load_session_state("m", USER, agent=MODULE)),
        "session_exists": (None, lambda i, p: s.session_exists("a", USER)),
        "delete_session": (
            lambda i: s.set_state(f"d{i}", STATE, USER),
            lambda i, p: s.delete_session(f"d{i}", USER),
        ),
        "list_sessions(user_id)": (None, lambda i, p: s.list_sessions(USER)),
    }


async def service_ops(s: Any) -> dict[str, tuple[Any, Any]]:
    for key in ("small", "log", "chat", "pop"):
        await _await(s.create_session(key, USER, state=STATE))
    for _ in range(10):
        await _await(s.append_event("log", EVENT, USER, state_delta={"turn": 1}))
    append = lambda delta: lambda i, p: s.append_event("chat", EVENT, USER, state_delta=delta)  # noqa: E731
    return {
        "create_session": (None, lambda i, p: s.create_session(f"c{i}", USER, state=STATE)),
        "get_session, no events": (None, lambda i, p: s.get_session("small", USER)),
        "get_session, 10 events": (None, lambda i, p: s.get_session("log", USER)),
        "append_event": (None, append({"turn": 1})),
        "append_event, app:/user: delta": (None, append(SCOPED)),
        "list_sessions(user_id)": (None, lambda i, p: s.list_sessions(USER)),
        "delete_session": (
            lambda i: s.create_session(f"d{i}", USER),
            lambda i, p: s.delete_session(f"d{i}", USER),
        ),
        "pop_event": (
            lambda i: s.append_event("pop", EVENT, USER),
            lambda i, p: s.pop_event("pop", USER),
        ),
    }


async def adk_ops(s: Any) -> dict[str, tuple[Any, Any]]:
    from adk_bench import make_event  # ~2 KB, a delta of one session and one user: key

    keys = {"app_name": APP, "user_id": USER}
    make = lambda *_: s.create_session(**keys, state=STATE | {"user:lang": "fr"})  # noqa: E731
    log, chat = await make(), await make()
    for i in range(10):
        await s.append_event(log, make_event(i))
    return {
        "create_session": (None, make),
        "get_session, 10 events": (None, lambda i, p: s.get_session(**keys, session_id=log.id)),
        "append_event, user: delta": (make_event, lambda i, p: s.append_event(chat, p)),
        "list_sessions(user_id)": (None, lambda i, p: s.list_sessions(**keys)),
        "delete_session": (make, lambda i, p: s.delete_session(**keys, session_id=p.id)),
    }


async def count(counter: Any, ops: dict[str, tuple[Any, Any]], repeat: int) -> dict[str, Any]:
    """Each operation ``repeat`` times: the round trips and statements of each call by itself."""
    out: dict[str, Any] = {}
    for name, (prepare, call) in ops.items():
        row: dict[str, list[Any]] = {"counts": [], "statements": []}
        out[name] = row
        for i in range(repeat):
            prepared = await _await(prepare(i)) if prepare else None
            counter.take()
            await _await(call(i, prepared))
            row["counts"].append(counter.take())
            row["statements"].append(counter.statements)
    return out


def _target(group: str, operation: str) -> int | None:
    """The issue's target: 1 round trip, ``get_session`` with events <= 2; none for ADK."""
    if group == "adk":
        return None
    return 2 if "10 events" in operation else 1


async def run(url: str, repeat: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Count every subject's operations on the database ``url``; return rows and skips."""
    from statekeeper import AsyncSessionService, AsyncSqlSession, SessionService, SqlSession

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    def options(name: str) -> dict[str, Any]:  # an engine of its own: traced from its start
        return {"connect_args": {"application_name": f"rtt-{name}"}}

    async def measure(group: str, subject: str, counter: Any, ops: Any) -> None:
        for operation, counted in (await count(counter, ops, repeat)).items():
            row = {"group": group, "operation": operation, "subject": subject} | counted
            rows.append(row | {"target": _target(group, operation)})

    kinds = {
        "store": (SqlSession, AsyncSqlSession),
        "service": (SessionService, AsyncSessionService),
    }
    for group, (sync_kind, async_kind) in kinds.items():
        for facade, kind in (("sync", sync_kind), ("async", async_kind)):
            s: Any = kind(
                url, app_name=f"{APP}-{facade}", engine_options=options(f"{group}-{facade}")
            )
            trace = Trace(s.engine if facade == "sync" else s.engine.sync_engine)
            await _await(s.set_state("a", STATE, USER)) if group == "store" else None
            ops = store_ops(s) if group == "store" else await service_ops(s)
            await measure(group, facade, trace, ops)
            await _await(s.close())

    if importlib.util.find_spec("google.adk") is None:
        skipped.append("ADK: google-adk is not installed (pip install 'statekeeper[adk]')")
        return rows, skipped
    from google.adk.sessions import DatabaseSessionService

    from statekeeper.adk import SqlSessionService

    parsed = sa.make_url(url)
    sk = SqlSessionService(url, engine_options=options("adk"))
    await measure("adk", "statekeeper.adk", Trace(sk.engine.sync_engine), await adk_ops(sk))
    await sk.close()
    adk = DatabaseSessionService(_common.libpq_url(parsed, "postgresql+psycopg"))
    await measure("adk", "ADK, psycopg", Trace(adk.db_engine.sync_engine), await adk_ops(adk))
    await adk.close()
    if importlib.util.find_spec("asyncpg") is None:
        skipped.append("ADK on asyncpg: asyncpg is not installed (pip install asyncpg)")
        return rows, skipped
    proxy = Proxy(parsed)
    port = await proxy.start()
    via = parsed.set(drivername="postgresql+asyncpg", host="127.0.0.1", port=port)
    adk = DatabaseSessionService(
        via.render_as_string(hide_password=False), connect_args={"ssl": False}
    )
    await measure("adk", "ADK, asyncpg", proxy, await adk_ops(adk))
    await adk.close()
    proxy.server.close()
    return rows, skipped


def _steady(counts: list[int]) -> int:
    """The round trips most calls took (the others: psycopg preparing, see the docs)."""
    return max(set(counts), key=counts.count)


def _cell(counts: list[int] | None) -> str:
    if not counts:
        return "-"
    steady, other = _steady(counts), sorted(set(counts) - {_steady(counts)})
    return str(steady) + "".join(
        f", once {n}" if counts.count(n) == 1 else f", {counts.count(n)} times {n}" for n in other
    )


def markdown(data: dict[str, Any]) -> str:
    """The "round trips" section of ``docs/performance.md``."""
    meta, rows = data["meta"], data["rows"]
    by = {(r["group"], r["operation"], r["subject"]): r for r in rows}
    v = meta["versions"]
    lines = [
        "## Round trips per operation on PostgreSQL (counted on the wire)",
        "",
        "A round trip is a request the server answered: one `ReadyForQuery` message. On "
        "psycopg it is counted in libpq's protocol trace (`pgconn.trace`) of every connection "
        "the engine opens; asyncpg has no trace, so ADK's service on asyncpg connects "
        "through a loopback proxy that counts the `ReadyForQuery` messages it forwards. "
        f"Each operation runs {meta['repeat']} times, each call counted by itself. Every "
        "service at its default settings, "
        f"PostgreSQL {meta['postgresql']}, psycopg {v['psycopg']}, SQLAlchemy "
        f"{v['sqlalchemy']}. Regenerate with `python benchmarks/run.py roundtrips "
        f"--write-docs` (this run: {meta['date']}{', `--quick`' if meta['quick'] else ''}).",
        "",
        "A cell `1, once 2` is a steady 1 and one call of 2: the call on which psycopg "
        "prepares a statement (at its 6th run on a connection, after `prepare_threshold` = 5) "
        "sends the `Parse` and waits for it before the statement itself, once per statement "
        "and connection. `statements`: what statekeeper sent through SQLAlchemy, `BEGIN` and "
        "`COMMIT` included (the `before_cursor_execute` event); the targets are of the issue "
        "(1, `get_session` with events ≤ 2), judged on the steady count.",
        "",
        "| API | operation | sync | async | statements | target |",
        "|---|---|---:|---:|---:|---:|",
    ]
    apis = {"store": "SqlSession", "service": "SessionService"}
    for group, api in apis.items():
        for op in dict.fromkeys(r["operation"] for r in rows if r["group"] == group):
            sync, other = (by.get((group, op, f), {}) for f in ("sync", "async"))
            target = _target(group, op) or 0
            worst = max(_steady(r["counts"]) for r in (sync, other) if r)
            goal = ("≤ " if target > 1 else "") + str(target)
            goal += "" if worst <= target else " **missed**"
            sent = _steady(sync["statements"]) if sync else "-"
            cells = (api, op, _cell(sync.get("counts")), _cell(other.get("counts")), sent, goal)
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    for r in rows:  # what bounds a miss: the statements sent, each answered before the next
        if r["subject"] == "sync" and _steady(r["counts"]) > (r["target"] or 0):
            lines += [
                "",
                f"`{r['operation']}` misses: it sends {_steady(r['statements'])} statements "
                "(a transaction), each answered before the next is sent; one round trip needs "
                "them in one statement (or pipelined).",
            ]
            if r["operation"] == "pop_event":
                lines[-1] += (
                    " It stays a transaction: in one statement under READ COMMITTED, the "
                    "DELETE would read the snapshot taken before a concurrent append's commit "
                    "while the UPDATE (after its row lock) sees that append's count, and the "
                    "pop would lose the event it counted off."
                )
    subjects = ("statekeeper.adk", "ADK, psycopg", "ADK, asyncpg")
    lines += [
        "",
        "`statekeeper.adk.SqlSessionService` beside ADK's `DatabaseSessionService` "
        f"(google-adk {v['google-adk']}; on psycopg, and on asyncpg {v['asyncpg']}) on the "
        "same server, the same calls (a 2 KB event with a session and a `user:` key in its "
        "delta; sessions created with a `user:` key). ADK's engine on PostgreSQL has "
        "`pool_pre_ping=True` (its default): a `SELECT 1` round trip on each checkout. On "
        "asyncpg it connects to the proxy without SSL (`ssl=False`), which changes no count.",
        "",
        "| operation | statekeeper.adk | DatabaseSessionService, psycopg | ..., asyncpg |",
        "|---|---:|---:|---:|",
    ]
    for op in dict.fromkeys(r["operation"] for r in rows if r["group"] == "adk"):
        cells = [_cell(by.get(("adk", op, s), {}).get("counts")) for s in subjects]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += [f"\nLeft out: {s}." for s in meta["skipped"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Count (or load), print, save and document the round trips."""
    p = _common.parser(
        __doc__,
        *("quick", "out", "write-docs", "from-json", "pg-url"),
        out={"help": "results JSON (default benchmarks/results/roundtrips[-quick].json)"},
        write_docs={"help": "put the tables into docs/performance.md"},
    )
    p.prog = "python benchmarks/run.py roundtrips"
    argv = sys.argv[1:] if argv is None else argv
    args = _common.parse(p, argv)
    out = None
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
    elif (reason := _common.postgres_skipped(args)) is not None:
        print(f"nothing counted: the round trips are PostgreSQL's ({reason})")
        return 0
    else:
        repeat = 3 if args.quick else 8  # 8: past psycopg's prepare_threshold (5)
        with _common.postgres_database(args.pg_url) as url:
            _common.upgrade(url)
            rows, skipped = asyncio.run(run(url, repeat))
            version = _common.server_setting(url)
        names = ("statekeeper", "sqlalchemy", "psycopg", "asyncpg", "google-adk")
        meta = {
            "command": "python benchmarks/run.py roundtrips " + " ".join(argv),
            "date": _common.now_text(),
            "quick": args.quick,
            "repeat": repeat,
            "postgresql": version,
            "versions": {name: _common.version(name) for name in names},
            "skipped": skipped,
        }
        data = {"meta": meta, "rows": rows}
        out = _common.save(data, "roundtrips", args.out, quick=args.quick)
    print(markdown(data))
    if out is not None:
        print(f"results: {out}")
    if args.write_docs:
        doc = _common.REPO / "docs" / "performance.md"
        _common.put_block(doc, "roundtrips", markdown(data))
        print(f"docs: {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
