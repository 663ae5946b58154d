"""Benchmark the event-log service against the raw driver running the same statements.

    python benchmarks/service.py                 # SQLite and PostgreSQL, sync and async
    python benchmarks/service.py --quick         # smoke run, small logs
    python benchmarks/service.py --no-postgres --only sync

Scenarios (2 KB events, a small state delta): ``create_session``,
``append_event``, ``get_session`` of a 10-event and of a 1,000-event session,
``get_session(recent=10)`` on a 1,000-event and on a 100,000-event session,
and ``list_sessions`` of a user with 1,000 sessions (one page of 1,000).

The **floor** is the bare DB-API driver (``sqlite3``, for async each operation in one
``asyncio.to_thread`` hop; psycopg) running *the same SQL* on one autocommit connection: the text of
the statements statekeeper sends, recorded from the public service's engine
(SQLAlchemy's ``before_cursor_execute`` event, one warm-up call of each
kind), so both sides send identical statements; the same
transaction steps (``BEGIN IMMEDIATE`` ... ``COMMIT`` on SQLite), and
``json.dumps`` / ``json.loads`` of the documents. What the ratio measures is
statekeeper's Python around it: validation, the codec, the operation layer,
the pool, record building. Batches alternate (statekeeper, floor, floor,
statekeeper, ...); figures are medians; ratio = statekeeper / floor. Like
statekeeper, the floor hands back what it read as Python values (JSON
decoded, stored times as aware datetimes).

Only statekeeper's public API is used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import _common
import sqlalchemy as sa
from _common import Settings

from statekeeper import AsyncSessionService, SessionService

APP = "bench-svc"
USER = "bench"
LISTER = "lister"
SECTIONS = ("sync", "async")

#: Most ADK events are small; 2 KB is a model turn with some text.
EVENT: dict[str, Any] = {
    "id": "e-0123456789abcdef",
    "invocation_id": "inv-0123456789",
    "author": "assistant",
    "content": {
        "role": "model",
        "parts": [{"text": ("The weather in Paris is mild today, café au lait. " * 40)[:1900]}],
    },
    "actions": {"state_delta": {"turn": 1}},
}
_EVENT_TEXT = json.dumps(EVENT, separators=(",", ":"))
assert 1900 < len(_EVENT_TEXT) < 2300, len(_EVENT_TEXT)


# --------------------------------------------------------------------------- the floor's SQL


#: A statement as statekeeper sends it: its text, bound defaults, parameter order.
Recorded = tuple[str, dict[str, Any], "tuple[str, ...] | None"]


def _recorded(svc: SessionService, call: Callable[[], object]) -> list[Recorded]:
    """The statements ``call`` sends through ``svc``'s engine, in order."""
    seen: list[Recorded] = []

    def hook(conn: Any, cursor: Any, text: str, params: Any, context: Any, many: bool) -> None:
        compiled = context.compiled
        if compiled is not None:  # BEGIN / COMMIT are not compiled
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            positions = tuple(compiled.positiontup) if compiled.positional else None
            seen.append((text, defaults, positions))

    sa.event.listen(svc.engine, "before_cursor_execute", hook)
    try:
        call()
    finally:
        sa.event.remove(svc.engine, "before_cursor_execute", hook)
    return seen


class Sql:
    """The statements of each service call, recorded once from the public service."""

    def __init__(self, url: str) -> None:
        self.name = sa.make_url(url).get_backend_name()
        pg = self.name == "postgresql"
        with SessionService(url, app_name="bench-recorder") as svc:
            svc.get_app_state()  # the first call's schema check, unrecorded
            create = _recorded(svc, lambda: svc.create_session("r", USER, state={"t": 1}))
            append = _recorded(
                svc,
                lambda: svc.append_event(
                    "r", EVENT, USER, state_delta={"turn": 1, "user:turns": 1}
                ),
            )
            read_all = _recorded(svc, lambda: svc.get_session("r", USER))
            read_recent = _recorded(svc, lambda: svc.get_session("r", USER, recent=10))
            page = _recorded(svc, lambda: svc.list_sessions(USER, limit=1000))
            svc.delete_session("r", USER)
        assert len(create) == (1 if pg else 2), create
        assert len(append) == (1 if pg else 3), append
        assert len(read_all) == len(read_recent) == 2, (read_all, read_recent)
        assert len(page) == 1, page
        self.create = create[0]
        self.clear_events = None if pg else create[1]
        self.append = append[0]
        self.event_insert, self.user_upsert = (None, None) if pg else (append[1], append[2])
        self.read, self.events, self.recent = read_all[0], read_all[1], read_recent[1]
        self.pages = page[0]

    def __call__(self, statement: Recorded | None, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL text and DB-API parameters of ``statement`` with ``params``."""
        assert statement is not None
        text, defaults, positions = statement
        values = {**defaults, **params}
        if positions is None:
            return text, values
        return text, tuple(values[name] for name in positions)


Step = Any  # ("BEGIN" | "COMMIT") or (sql, params)


_UTC = dt.timezone.utc


def _when(sql: Sql, value: Any) -> Any:
    """A stored time as an aware datetime (psycopg already returns one)."""
    if value is None or sql.name != "sqlite":
        return value
    return dt.datetime.fromisoformat(value).replace(tzinfo=_UTC)


def _stamp(sql: Sql, when: Any) -> Any:
    return _common.sqlite_stamp(when) if sql.name == "sqlite" else when


def _key(sql: Sql, session_id: str, user_id: str) -> dict[str, Any]:
    now = _stamp(sql, _common.utcnow())
    return {"p_app": APP, "p_user": user_id, "p_session": session_id, "p_now": now}


def _members(text: str | None) -> dict[str, Any]:
    return {} if text is None else dict(json.loads("{" + text + "}"))


def _merged(session_text: str, app: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    state = json.loads(session_text)
    state.update({"app:" + k: v for k, v in app.items()})
    state.update({"user:" + k: v for k, v in user.items()})
    return dict(state)


def floor_create(sql: Sql, session_id: str, user_id: str) -> Generator[Step, Any, dict[str, Any]]:
    """Create a session with a small state: the same statements as ``create_session``."""
    params = _key(sql, session_id, user_id)
    params.update(p_state=json.dumps({"topic": "weather"}), p_expires=None, p_time=time.time())
    if sql.name == "postgresql":
        params.update(p_akeys=[], p_avalues=[], p_ukeys=[], p_uvalues=[])
        rows = yield sql(sql.create, params)
    else:  # no scoped keys: no transaction needed
        rows = yield sql(sql.create, params)
        yield sql(sql.clear_events, params)
    version, app, user = rows[0]
    return {"version": version, "state": _merged(params["p_state"], _members(app), _members(user))}


def floor_append(sql: Sql, session_id: str, turn: int) -> Generator[Step, Any, int]:
    """Append the 2 KB event with ``{"turn": n, "user:turns": n}``, as ``append_event`` does."""
    params = _key(sql, session_id, USER)
    event = dict(EVENT, timestamp=time.time())
    params.update(p_expires=None, p_time=event["timestamp"], p_event=json.dumps(event))
    turn_text = json.dumps(turn)
    if sql.name == "postgresql":
        params.update(p_akeys=[], p_avalues=[], p_ukeys=["turns"], p_uvalues=[turn_text])
        params.update(p_state='{"turn":' + turn_text + "}", p_keys=["turn"])
        rows = yield sql(sql.append, params)
        return int(rows[0][0])
    params.update(p_path0='$."turn"', p_value0=turn_text)
    yield "BEGIN IMMEDIATE"
    rows = yield sql(sql.append, params)
    params["p_seq"] = rows[0][1]
    yield sql(sql.event_insert, params)
    yield sql(
        sql.user_upsert, {"p_app": APP, "p_user": USER, "p_key": "turns", "p_value": turn_text}
    )
    yield "COMMIT"
    return int(rows[0][0])


def floor_get(
    sql: Sql, session_id: str, recent: int | None
) -> Generator[Step, Any, dict[str, Any]]:
    """Read a session with its scoped state, then its (last ``recent``) events."""
    params = _key(sql, session_id, USER)
    (row,) = yield sql(sql.read, params)
    state = _merged(row[0], _members(row[7]), _members(row[8]))
    params["p_count"] = row[2]
    if recent is not None:
        params["p_recent"] = recent
    rows = yield sql(sql.events if recent is None else sql.recent, params)
    if recent is not None:
        rows = rows[::-1]
    events = [(seq, ts, json.loads(doc)) for seq, ts, doc in rows]
    times = [_when(sql, v) for v in row[4:7]]
    return {"version": row[1], "state": state, "events": events, "times": times}


def floor_list(sql: Sql, user_id: str, limit: int) -> Generator[Step, Any, list[dict[str, Any]]]:
    """One page of a user's sessions with merged state, as ``list_sessions``: one statement."""
    params = _key(sql, "", user_id)
    params["p_limit"] = limit + 1
    rows = (yield sql(sql.pages, params))[:limit]
    app = _members(rows[0][9]) if rows else {}
    return [
        {
            "session_id": r[1],
            "state": _merged(r[2], app, _members(r[10])),
            "version": r[3],
            "times": [_when(sql, v) for v in r[6:9]],
        }
        for r in rows
    ]


def drive(conn: Any, op: Generator[Step, Any, Any]) -> Any:
    """Run a floor operation on a sync DB-API connection (sqlite3 or psycopg, autocommit)."""
    try:
        step = next(op)
        while True:
            if isinstance(step, str):
                conn.execute(step)
                step = op.send(None)
            else:
                cur = conn.execute(*step)
                rows = cur.fetchall() if cur.description is not None else []
                step = op.send(rows)
    except StopIteration as stop:
        return stop.value


async def adrive(conn: Any, op: Generator[Step, Any, Any]) -> Any:
    """Run a floor operation on an async connection: on SQLite, whole in one thread
    (:class:`_common.ThreadedSqlite`); else a psycopg ``AsyncConnection``."""
    if isinstance(conn, _common.ThreadedSqlite):
        return await asyncio.to_thread(drive, conn.conn, op)
    one_hop = getattr(conn, "execute_fetchall", None)
    try:
        step = next(op)
        while True:
            if isinstance(step, str):
                await conn.execute(step)
                step = op.send(None)
            elif one_hop is not None:
                step = op.send(list(await one_hop(*step)))
            else:
                cur = await conn.execute(*step)
                rows = await cur.fetchall() if cur.description is not None else []
                step = op.send(rows)
    except StopIteration as stop:
        return stop.value


# --------------------------------------------------------------------------- data


def load(url: str, settings: Settings) -> dict[str, int]:
    """Create the sessions the read scenarios use; return their log lengths."""
    sizes = {"log10": 10, "log1k": 1_000 if not settings.quick else 200}
    sizes["log100k"] = 100_000 if not settings.quick else 2_000
    with SessionService(url, app_name=APP) as svc:
        svc.create_session("log10", USER, state={"topic": "weather", "user:turns": 0})
        for i in range(10):
            svc.append_event("log10", EVENT, USER, state_delta={"turn": i})
        engine = svc.engine
        for name in ("log1k", "log100k"):
            svc.create_session(name, USER, state={"topic": "weather"})
            _common.bulk_events(engine, (APP, USER, name), sizes[name], _EVENT_TEXT, 1e9)
        _bulk_sessions(engine, 1_000 if not settings.quick else 100)
    return sizes


def _series(engine: sa.Engine, n: int) -> str:
    if engine.dialect.name == "postgresql":
        return f"generate_series(1, {int(n)}) AS g(n)"
    return (
        "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {int(n)}) SELECT n FROM s) AS g"
    )


def _bulk_sessions(engine: sa.Engine, n: int) -> None:
    now = _common.utcnow()
    pg = engine.dialect.name == "postgresql"
    stamp = "CAST(:now AS timestamptz)" if pg else ":now"
    state = "CAST(:state AS json)" if pg else ":state"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO statekeeper_sessions (app_name, user_id, session_id, state, version, "
                "created_at, updated_at, expires_at, update_time, event_count) "
                f"SELECT :app, :user, 'l' || n, {state}, 1, {stamp}, {stamp}, NULL, 1.0e9, 0 "
                f"FROM {_series(engine, n)}"
            ),
            {
                "app": APP,
                "user": LISTER,
                "now": now if pg else _common.sqlite_stamp(now),
                "state": json.dumps({"topic": "weather", "turn": 3, "notes": "x" * 100}),
            },
        )


# --------------------------------------------------------------------------- scenarios


def _counter(prefix: str) -> Callable[[], str]:
    it: Iterator[int] = iter(range(sys.maxsize))
    return lambda: f"{prefix}{next(it)}"


def _cases(
    svc: Any, drive: Callable[[Any, Any], Any], raw: Any, sql: Sql, sizes: dict[str, int], tag: str
) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """Each scenario: its name, the service's call and the floor's, on ``svc`` and ``raw``.

    With the async service and :func:`adrive` each call returns the coroutine to await.
    ``tag`` keeps the sessions the sync and the async run create apart.
    """
    turn = iter(range(sys.maxsize))
    a_id, b_id = _counter(f"{tag}create-a-"), _counter(f"{tag}create-b-")
    cases = [
        (
            "create_session",
            lambda: svc.create_session(a_id(), USER, state={"topic": "weather"}),
            lambda: drive(raw, floor_create(sql, b_id(), USER)),
        ),
        (
            "append_event 2KB",
            lambda: svc.append_event(
                f"{tag}append-a",
                dict(EVENT, timestamp=time.time()),
                USER,
                state_delta={"turn": (t := next(turn)), "user:turns": t},
            ),
            lambda: drive(raw, floor_append(sql, f"{tag}append-b", next(turn))),
        ),
    ]
    reads = [
        ("get_session 10 events", "log10", None),
        (f"get_session {sizes['log1k']} events", "log1k", None),
        (f"recent=10 of {sizes['log1k']}", "log1k", 10),
        (f"recent=10 of {sizes['log100k']}", "log100k", 10),
    ]
    for name, session, recent in reads:
        cases.append(
            (
                name,
                lambda s=session, r=recent: svc.get_session(s, USER, recent=r),
                lambda s=session, r=recent: drive(raw, floor_get(sql, s, r)),
            )
        )
    lister = (
        "list_sessions of 1,000",
        lambda: svc.list_sessions(LISTER, limit=1000),
        lambda: drive(raw, floor_list(sql, LISTER, 1000)),
    )
    return [*cases, lister]


def sync_scenarios(
    url: str, raw: Any, sql: Sql, sizes: dict[str, int], settings: Settings
) -> list[dict[str, Any]]:
    """Every scenario on the sync service beside the sync driver."""
    rows = []
    with SessionService(url, app_name=APP) as svc:
        svc.create_session("append-a", USER)
        drive(raw, floor_create(sql, "append-b", USER))
        for name, a, b in _cases(svc, drive, raw, sql, sizes, ""):
            rows.append({"scenario": name, **_common.measure_pair(a, b, settings).summary()})
            _print(sql.name, "sync", rows[-1])
    return rows


async def async_scenarios(
    url: str, raw: Any, sql: Sql, sizes: dict[str, int], settings: Settings
) -> list[dict[str, Any]]:
    """Every scenario on the async service beside the async driver."""
    rows = []
    async with AsyncSessionService(url, app_name=APP) as svc:
        await svc.create_session("aappend-a", USER)
        await adrive(raw, floor_create(sql, "aappend-b", USER))
        for name, a, b in _cases(svc, adrive, raw, sql, sizes, "a"):
            rows.append(
                {"scenario": name, **(await _common.ameasure_pair(a, b, settings)).summary()}
            )
            _print(sql.name, "async", rows[-1])
    return rows


def _print(backend: str, facade: str, row: dict[str, Any]) -> None:
    print(
        f"{backend:<10} {facade:<5} {row['scenario']:<28} "
        f"{row['statekeeper_s'] * 1e6:>10.1f} µs {row['floor_s'] * 1e6:>10.1f} µs "
        f"{row['ratio']:>6.2f}x",
        flush=True,
    )


# --------------------------------------------------------------------------- main


def _measure(url: str, settings: Settings, only: set[str]) -> list[dict[str, Any]]:
    """The scenarios of ``only`` (sync, async) on a fresh database at ``url``."""
    _common.upgrade(url)
    sizes = load(url, settings)
    sql = Sql(url)
    results = []
    if "sync" in only:
        raw = _common.connect(url)
        try:
            rows = sync_scenarios(url, raw, sql, sizes, settings)
        finally:
            raw.close()
        results += [dict(r, backend=sql.name, facade="sync") for r in rows]
    if "async" in only:

        async def body() -> list[dict[str, Any]]:
            raw = await _common.aconnect(url)
            try:
                return await async_scenarios(url, raw, sql, sizes, settings)
            finally:
                await raw.close()

        results += [dict(r, backend=sql.name, facade="async") for r in asyncio.run(body())]
    return results


def markdown(data: dict[str, Any]) -> str:
    """The "event-log service vs raw driver" section of ``docs/performance.md``."""
    meta, results = data["meta"], data["results"]
    lines = [
        "## Event-log service vs the raw driver (same statements)",
        "",
        "`SessionService` / `AsyncSessionService` beside the bare driver (`sqlite3`, async: "
        "each operation in one `asyncio.to_thread` hop; psycopg 3) running the same SQL — "
        "statekeeper's statements compiled once — on one autocommit connection, with the "
        "same transaction steps and the same "
        "JSON work (2 KB events, a delta `{turn, user:turns}`). Medians of alternating "
        "batches; ratio = statekeeper / raw driver; target <= 1.50x. Regenerate with "
        "`python benchmarks/service.py --write-docs`"
        + (" (this run: `--quick`, noisy)." if meta.get("quick") else "."),
        "",
        "This run was "
        + _common.setup_text(meta.get("durable", False), meta.get("sqlite_storage"))
        + ".",
        "",
        "`best` is the ratio of each side's fastest batch: on a busy machine it is the",
        "steadier estimate of what statekeeper itself adds.",
        "",
        "| database | API | scenario | statekeeper | raw driver | ratio | best |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        best = min(r["statekeeper_batches_s"]) / min(r["floor_batches_s"])
        lines.append(
            f"| {r['backend']} | {r['facade']} | {r['scenario']} | "
            f"{_common.fmt_us(r['statekeeper_s'])} | {_common.fmt_us(r['floor_s'])} | "
            f"{r['ratio']:.2f}x | {best:.2f}x |"
        )
    lines += ["", '"The last 10 events" on a long log against a short one (statekeeper side):', ""]
    lines += ["| database | API | recent=10 of 1,000 | recent=10 of 100,000 | ratio |"]
    lines += ["|---|---|---:|---:|---:|"]
    by = {(r["backend"], r["facade"], r["scenario"]): r["statekeeper_s"] for r in results}
    for backend, facade in sorted({(r["backend"], r["facade"]) for r in results}):
        recent = sorted(
            (n, v) for (b, f, n), v in by.items() if (b, f) == (backend, facade) and "recent" in n
        )
        if len(recent) == 2:  # "recent=10 of 1000" sorts before "... of 100000"
            (_, small), (_, big) = recent
            cells = (
                backend,
                facade,
                _common.fmt_us(small),
                _common.fmt_us(big),
                f"{big / small:.2f}x",
            )
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "What the ratio holds: the raw driver sends each statement straight to the DB-API",
        "cursor; statekeeper sends it through SQLAlchemy's public `Connection.execute`",
        "(so echo, events and tracing see it) on a pooled connection checked out per",
        "call. Small operations are two to five statements (SQLite appends are",
        "`BEGIN IMMEDIATE`, the session row, the event, the scoped keys, `COMMIT`), so",
        "that per-statement cost, not the SQL, decides the small ratios; large reads",
        "are bounded by JSON decoding on both sides. A cProfile of `get_session` (10",
        "events, SQLite, sync; 2026-12-01) split statekeeper's time as: SQLAlchemy's",
        "execution path 41%, JSON 18%, statekeeper's own code 15%, the sqlite3 driver",
        "and builtins the rest. On PostgreSQL the checkout no longer pings the server",
        '(see "What bounds the targets still missed"); when it did (`pool_pre_ping`,',
        "one more round trip, before 2026-12-03), `get_session(recent=10)` took",
        "1.46 ms with it and 0.92 ms without (best of 7 batches, same machine, same",
        "hour).",
    ]
    if meta.get("postgres_skipped"):
        lines += ["", f"PostgreSQL skipped: {meta['postgres_skipped']}"]
    lines += ["", f"Machine load during the run (1-min load average): {meta.get('load', '?')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON results."""
    p = _common.parser(
        __doc__,
        *("quick", "no-fsync", "no-postgres", "pg-url", "write-docs", "from-json", "out"),
        only=SECTIONS,
        out={"help": "results JSON (default benchmarks/results/service[-quick].json)"},
    )
    args = _common.parse(p, argv)
    only = args.only
    if args.from_json is not None:
        _write_docs(json.loads(args.from_json.read_text()))
        return 0
    settings = Settings.make(quick=args.quick, million=False, durable=not args.no_fsync)
    head = ("backend", "api", "scenario", "statekeeper", "raw driver", "ratio")
    print(f"{head[0]:<10} {head[1]:<5} {head[2]:<28} {head[3]:>13} {head[4]:>13} {head[5]:>7}")
    with _common.scratch_dir(durable=settings.durable) as folder:
        storage = _common.storage(folder)
        results = _measure(f"sqlite:///{Path(folder) / 'service.db'}", settings, only)
    if (skipped := _common.postgres_skipped(args)) is None:
        with _common.postgres_database(args.pg_url, durable=settings.durable) as url:
            results += _measure(url, settings, only)
    meta = {
        "load": round(os.getloadavg()[0], 2),
        "quick": args.quick,
        "durable": settings.durable,
        "sqlite_storage": storage,
        "python": sys.version.split()[0],
        "postgres_skipped": skipped,
    }
    out = _common.save({"meta": meta, "results": results}, "service", args.out, quick=args.quick)
    if args.write_docs:
        _write_docs({"meta": meta, "results": results})
    worst = max((r["ratio"] for r in results), default=0.0)
    print(f"worst ratio {worst:.2f}x (target <= 1.5x); results in {out}")
    return 0


def _write_docs(data: dict[str, Any]) -> None:
    doc = _common.REPO / "docs" / "performance.md"
    _common.put_block(doc, "service", markdown(data))
    print(f"docs: {doc}")


if __name__ == "__main__":
    raise SystemExit(main())
