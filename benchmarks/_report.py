"""Turn ``results/stores.json`` into the targets, a text table, a Markdown page and a chart."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import _common

SYNC_LIMIT, ASYNC_LIMIT, MERGE_LIMIT, BIG_LIMIT = 1.3, 1.5, 1.5, 1.1
CONCURRENCY_MIN, SCALE_LIMIT, MEMORY_LIMIT = 0.8, 1.2, 3.0
#: An async SQLite call against the same call of the sync store (one thread hop on top).
ASYNC_VS_SYNC_LIMIT = 1.5
DB_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PAGE = _common.REPO / "docs" / "performance.md"


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model named in ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(dist: str) -> str:
    """The installed version of ``dist``, or ``not installed``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(postgres_version: str | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    import statekeeper

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version or "not measured",
        "statekeeper": getattr(statekeeper, "__version__", "?"),
        "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"),
        "aiosqlite": version("aiosqlite"),
        "orjson": version("orjson"),
    }


# --------------------------------------------------------------------------- targets


def _target(name: str, value: float, limit: float, *, at_least: bool = False) -> dict[str, Any]:
    met = value >= limit if at_least else value <= limit
    return {"target": name, "value": value, "limit": limit, "at_least": at_least, "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the performance issue that this run measured, met or not."""
    out: list[dict[str, Any]] = []
    for row in results.get("latency", []):
        db, api, op, size = row["db"], row["api"], row["op"], row["size"]
        where = f"{DB_NAMES[db]} {api} {op} {size}"
        if size == "10KB":
            limit = MERGE_LIMIT if op == "merge" else SYNC_LIMIT if api == "sync" else ASYNC_LIMIT
            out.append(_target(where, row["ratio"], limit))
        elif size == "1MB":
            out.append(_target(where, row["ratio"], BIG_LIMIT))
    sync_times = {
        (r["db"], r["op"], r["size"]): r["statekeeper_s"]
        for r in results.get("latency", [])
        if r["api"] == "sync"
    }
    for row in results.get("latency", []):
        sync_s = sync_times.get((row["db"], row["op"], row["size"]))
        if row["db"] == "sqlite" and row["api"] == "async" and sync_s:
            target = _target(
                f"SQLite async {row['op']} {row['size']} vs the sync store",
                row["statekeeper_s"] / sync_s,
                ASYNC_VS_SYNC_LIMIT,
            )
            target["note"] = f"sync {fmt_time(sync_s)}"
            out.append(target)
    conc = results.get("concurrency")
    if conc:
        out.append(
            _target(
                f"PostgreSQL {conc['writers']} async writers, "
                f"pool {conc['pool_size']} (throughput)",
                conc["ratio"],
                CONCURRENCY_MIN,
                at_least=True,
            )
        )
    for row in results.get("scale", []):
        if row["op"] == "read" and row["vs_smallest"] != 1.0:
            smallest = min(r["sessions"] for r in results["scale"] if r["db"] == row["db"])
            out.append(
                _target(
                    f"{DB_NAMES[row['db']]} read at {row['sessions']:,} vs {smallest:,} sessions",
                    row["vs_smallest"],
                    SCALE_LIMIT,
                )
            )
    for row in results.get("memory", []):
        target = _target(
            f"{DB_NAMES[row['db']]} {row['op']} peak memory, "
            f"{row['json_bytes'] / 1e6:.0f} MB state",
            row["statekeeper_multiple"],
            MEMORY_LIMIT,
        )
        target["note"] = f"floor {row['floor_multiple']:.2f}x"
        if row.get("statekeeper_result_bytes", 0) > row["json_bytes"] / 10:
            above = (row["statekeeper_peak_bytes"] - row["statekeeper_result_bytes"]) / row[
                "json_bytes"
            ]
            target["note"] += f"; {above:.2f}x without the returned dict"
        out.append(target)
    return out


# --------------------------------------------------------------------------- text


def fmt_time(seconds: float | None) -> str:
    """Seconds as µs / ms / s with three significant digits."""
    if seconds is None:
        return "-"
    for unit, scale in (("µs", 1e-6), ("ms", 1e-3)):
        if seconds < 1000 * scale:
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{seconds:.3g} s"


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``1.23x``."""
    return "-" if value is None else f"{value:.2f}x"


def _limit(row: dict[str, Any]) -> str:
    return ("≥ " if row["at_least"] else "≤ ") + f"{row['limit']:g}x"


def sections(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report as (title, headers, rows) tables, shared by the console and Markdown."""
    out: list[tuple[str, list[str], list[list[str]]]] = []

    def add(title: str, headers: list[str], rows: list[list[str]]) -> None:
        if rows:
            out.append((title, headers, rows))

    rows = [
        [
            DB_NAMES[r["db"]],
            r["api"],
            r["op"],
            r["size"],
            fmt_time(r["statekeeper_s"]),
            fmt_time(r["floor_s"]),
            r["floor"],
            fmt_ratio(r["ratio"]),
        ]
        for r in results.get("latency", [])
    ]
    add(
        "Latency per operation (median of batches; floor = raw driver, same SQL work)",
        ["db", "api", "op", "state", "statekeeper", "floor", "floor driver", "ratio"],
        rows,
    )
    conc = results.get("concurrency")
    if conc:
        add(
            f"Throughput, {conc['writers']} concurrent async writers on PostgreSQL, "
            f"pool of {conc['pool_size']}, {conc['state_bytes'] // 1000} KB states",
            ["statekeeper", "floor (psycopg_pool)", "ratio"],
            [
                [
                    f"{conc['statekeeper_ops_s']:,.0f} writes/s",
                    f"{conc['floor_ops_s']:,.0f} writes/s",
                    fmt_ratio(conc["ratio"]),
                ]
            ],
        )
    rows = [
        [
            DB_NAMES[r["db"]],
            r["op"],
            f"{r['sessions']:,}",
            fmt_time(r["statekeeper_s"]),
            fmt_ratio(r["vs_smallest"]),
            fmt_time(r.get("floor_s")),
            fmt_ratio(r.get("floor_ratio")),
        ]
        for r in results.get("scale", [])
    ]
    add(
        "Scale: point read and a 50-row list_sessions page as the table grows",
        ["db", "op", "sessions", "statekeeper", "vs smallest", "floor", "vs floor"],
        rows,
    )
    rows = [
        [
            DB_NAMES[r["db"]],
            r["op"],
            f"{r['json_bytes'] / 1e6:.1f} MB",
            f"{r['statekeeper_peak_bytes'] / 1e6:.1f} MB",
            fmt_ratio(r["statekeeper_multiple"]),
            f"{r['floor_peak_bytes'] / 1e6:.1f} MB",
            fmt_ratio(r["floor_multiple"]),
            f"{r.get('statekeeper_result_bytes', 0) / 1e6:.1f} MB",
        ]
        for r in results.get("memory", [])
    ]
    add(
        "Peak Python memory (tracemalloc) of one call, as a multiple of the state's JSON size",
        [
            "db",
            "op",
            "JSON",
            "statekeeper peak",
            "x JSON",
            "floor peak",
            "floor x JSON",
            "of which the returned dict",
        ],
        rows,
    )
    rows = [
        [
            t["target"],
            fmt_ratio(t["value"]),
            _limit(t),
            "met" if t["met"] else "MISSED",
            t.get("note", ""),
        ]
        for t in results.get("targets", [])
    ]
    add(
        "Targets (ratios to the floor unless said otherwise)",
        ["target", "measured", "limit", "", "note"],
        rows,
    )
    return out


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An aligned plain-text table."""
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, rule, *body])


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def console(results: dict[str, Any]) -> str:
    """The whole report as text for the terminal."""
    parts = []
    for title, headers, rows in sections(results):
        parts.append(f"\n{title}\n\n{text_table(headers, rows)}")
    for reason in results.get("skipped", []):
        parts.append(f"\nSKIPPED: {reason}")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- Markdown


def markdown(results: dict[str, Any], chart: str | None) -> str:
    """``docs/performance.md``: method, machine, every table, the chart."""
    meta = results["meta"]
    m = meta["machine"]
    met = sum(t["met"] for t in results.get("targets", []))
    total = len(results.get("targets", []))
    note = " — a quick smoke run: the numbers are noisy" if meta["settings"]["quick"] else ""
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `python benchmarks/run.py --write-docs` from "
        "benchmarks/results/stores.json; edits are overwritten. -->",
        "",
        "statekeeper is measured beside its *floor*: the bare DB-API driver doing the same work "
        "in autocommit (`json.dumps` + one `INSERT ... ON CONFLICT DO UPDATE`, or one point "
        "`SELECT` + `json.loads`, on the same table). Each statekeeper batch alternates with a "
        "floor batch in the same run; the numbers are medians of the batches and the ratio is "
        "statekeeper / floor (lower is better; 1.00x is the raw driver). See "
        "`benchmarks/README.md` in the source for how to run and read it.",
        "",
        f"Run: `{meta['command']}` on {meta['date']} ({meta['seconds']:.0f} s){note}.",
        "",
        "Setup: "
        + _common.setup_text(
            meta["settings"].get("durable", False),
            results.get("sqlite_storage") or results.get("sqlite_dir"),
        )
        + ".",
        "",
        "## Machine",
        "",
        md_table(
            ["", ""],
            [
                ["CPU", f"{m['cpu']} ({m['cores']} cores)"],
                ["OS", m["platform"]],
                ["Python", m["python"]],
                ["SQLite", m["sqlite"]],
                ["PostgreSQL", f"{m['postgresql']} (same machine as the client)"],
                ["statekeeper", m["statekeeper"]],
                [
                    "SQLAlchemy / psycopg / aiosqlite / orjson",
                    f"{m['sqlalchemy']} / {m['psycopg']} / {m['aiosqlite']} / {m['orjson']}",
                ],
            ],
        ),
        "",
        f"**Targets met: {met} of {total}.**",
        "",
    ]
    if chart:
        lines += [f"![statekeeper against the raw driver]({chart})", ""]
    for title, headers, rows in sections(results):
        lines += [f"## {title}", "", md_table(headers, rows), ""]
    for reason in results.get("skipped", []):
        lines += [f"> Skipped: {reason}", ""]
    purge = _common.RESULTS / "purge.md"
    if purge.exists():  # written by benchmarks/purge.py
        lines += [purge.read_text().strip(), ""]
    durable = meta["settings"].get("durable", False)
    fsync = _common.setup_text(durable, results.get("sqlite_storage") or results.get("sqlite_dir"))
    lines += [
        "## Method",
        "",
        '- States are AgentScope-like: `{"agent": {...}, "memory": {"content": '
        "[messages]}}` with message dicts (ids, roles, some non-ASCII text and an emoji, token "
        "counts, tool calls), sized 1 KB to 1 MB of compact UTF-8 JSON.",
        "- *write* is `set_state`; *merge* is `save_session_state(agent=..., memory=...)`, whose "
        "floor is the same plain upsert (statekeeper also keeps the modules it was not given, "
        "which the floor does not); *read* is `get_state`. Sessions exist before they are "
        "timed, so writes are updates.",
        f"- This run was {fsync}.",
        "- SQLite runs in WAL mode with the pragmas statekeeper sets (busy timeout, foreign keys) "
        "on the floor's connection too. PostgreSQL runs on the same machine as the client, so "
        "they share its cores.",
        "- Concurrency: 64 tasks each write their own session; statekeeper gets "
        '`engine_options={"pool_size": 16, "max_overflow": 0}`, the floor '
        "`psycopg_pool.AsyncConnectionPool(max_size=16)`.",
        "- Scale: each size has its own table, bulk loaded with one `INSERT ... SELECT` "
        '(100 sessions per user, 1 KB states); "vs smallest" alternates batches against the '
        "smallest table. `list_all` is `list_sessions(limit=50)` over every user of the app.",
        "- Memory: `tracemalloc` peak of one call from a collected heap; a load counts the "
        "returned dict (shown in its own column). Allocations inside libpq or SQLite are not "
        "seen.",
        "",
    ]
    analysis = Path(__file__).with_name("analysis.md")
    if analysis.exists():  # hand-written reading of the results, kept as it is
        lines += [analysis.read_text().strip(), ""]
    return "\n".join(lines)


def write_page(results: dict[str, Any], chart: str | None) -> Path:
    """Regenerate ``docs/performance.md``, keeping the other benchmarks' marked sections."""
    PAGE.write_text(_common.keep_blocks(PAGE, markdown(results, chart)))
    return PAGE


# --------------------------------------------------------------------------- chart


def chart(results: dict[str, Any], path: Path) -> None:
    """Draw latency and ratio per backend, plus concurrency, scale and memory, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = results.get("latency", [])
    combos = [
        (db, api)
        for db in DB_NAMES
        for api in ("sync", "async")
        if any(r["db"] == db and r["api"] == api for r in latency)
    ]
    ncols = max(4, len(combos))
    fig, axes = plt.subplots(3, ncols, figsize=(4.4 * ncols, 11), squeeze=False)
    colors = {"write": "tab:blue", "merge": "tab:orange", "read": "tab:green"}
    for col, (db, api) in enumerate(combos):
        top, bottom = axes[0][col], axes[1][col]
        for op, color in colors.items():
            rows = [r for r in latency if r["db"] == db and r["api"] == api and r["op"] == op]
            if not rows:
                continue
            x = [r["json_bytes"] for r in rows]
            top.plot(x, [r["statekeeper_s"] * 1e3 for r in rows], "o-", color=color, label=op)
            top.plot(x, [r["floor_s"] * 1e3 for r in rows], "x--", color=color, alpha=0.6)
            bottom.plot(x, [r["ratio"] for r in rows], "o-", color=color, label=op)
        top.set(
            title=f"{DB_NAMES[db]} {api}: latency",
            xscale="log",
            yscale="log",
            xlabel="state JSON bytes",
            ylabel="ms per op (solid: statekeeper, dashed: floor)",
        )
        limit = SYNC_LIMIT if api == "sync" else ASYNC_LIMIT
        bottom.axhline(1.0, color="black", lw=0.8)
        bottom.axhline(limit, color="red", ls=":", lw=1, label=f"10 KB target {limit}x")
        bottom.axhline(BIG_LIMIT, color="purple", ls=":", lw=1, label=f"1 MB target {BIG_LIMIT}x")
        bottom.set(
            title=f"{DB_NAMES[db]} {api}: ratio to floor",
            xscale="log",
            xlabel="state JSON bytes",
            ylabel="ratio",
        )
        bottom.set_ylim(bottom=0)
        top.legend(fontsize=8)
        bottom.legend(fontsize=7)
    for col in range(len(combos), ncols):
        axes[0][col].axis("off")
        axes[1][col].axis("off")
    extra = axes[2]
    conc = results.get("concurrency")
    if conc:
        bars = extra[0].bar(
            ["statekeeper", "psycopg_pool"],
            [conc["statekeeper_ops_s"], conc["floor_ops_s"]],
            color=["tab:blue", "tab:gray"],
        )
        extra[0].bar_label(bars, fmt="%.0f")
        extra[0].set(
            title=f"{conc['writers']} async writers, pool {conc['pool_size']} (PostgreSQL)",
            ylabel="writes per second",
        )
    else:
        extra[0].axis("off")
    scale = [r for r in results.get("scale", []) if r["vs_smallest"] != 1.0]
    if scale:
        labels = [f"{DB_NAMES[r['db']]} {r['op']} {r['sessions']:,}" for r in scale]
        extra[1].barh(labels, [r["vs_smallest"] for r in scale], color="tab:green")
        extra[1].axvline(
            SCALE_LIMIT, color="red", ls=":", lw=1, label=f"read target {SCALE_LIMIT}x"
        )
        smallest = min(r["sessions"] for r in results["scale"])
        extra[1].set(title=f"latency vs {smallest:,} sessions (log)", xscale="log", xlabel="ratio")
        extra[1].tick_params(axis="y", labelsize=7)
        extra[1].invert_yaxis()
        extra[1].legend(fontsize=8)
    else:
        extra[1].axis("off")
    memory = results.get("memory", [])
    if memory:
        labels = [f"{DB_NAMES[r['db']]} {r['op'].split('(')[-1].rstrip(')')}" for r in memory]
        ys = range(len(memory))
        for shift, side, color in ((-0.2, "statekeeper", "tab:blue"), (0.2, "floor", "tab:gray")):
            widths = [r[f"{side}_multiple"] for r in memory]
            extra[2].barh([y + shift for y in ys], widths, 0.4, label=side, color=color)
        extra[2].set_yticks(list(ys), labels, fontsize=7)
        extra[2].invert_yaxis()
        extra[2].axvline(MEMORY_LIMIT, color="red", ls=":", lw=1, label=f"target {MEMORY_LIMIT}x")
        mb = memory[0]["json_bytes"] / 1e6
        extra[2].set(title=f"peak memory / JSON size ({mb:.0f} MB state)", xlabel="multiple")
        extra[2].legend(fontsize=8)
    else:
        extra[2].axis("off")
    for ax in extra[3:]:
        ax.axis("off")
    m = results["meta"]["machine"]
    fig.suptitle(
        f"statekeeper vs raw driver — {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
