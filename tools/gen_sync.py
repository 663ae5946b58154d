"""Generate the sync twins from their async sources: the async module is the one to edit.

    python tools/gen_sync.py            # rewrite sql.py, service.py and redis.py
    python tools/gen_sync.py --check    # exit 1 if one of them is not what it would write

The rewrite works on tokens, so the layout and comments of the source stay:
``async def`` / ``async with`` / ``async for`` lose their ``async``,
``await x`` becomes ``x``, the names of :data:`NAMES` are renamed (in code;
the words of :data:`WORDS` in strings and docstrings), ``redis.asyncio.X``
is ``redis.X``, lines listed in :data:`DROP` go, and ruff sorts the imports and formats the result.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "statekeeper"

#: async source -> generated sync module, both in ``src/statekeeper``.
TWINS = {
    "sql_async.py": "sql.py",
    "service_async.py": "service.py",
    "redis_async.py": "redis.py",
}

#: Names in code: the async name and its sync twin.
NAMES = {
    "AsyncSqlSession": "SqlSession",
    "AsyncSessionService": "SessionService",
    "AsyncRedisSession": "RedisSession",
    "AsyncSessionBase": "SessionBase",
    "AsyncRunner": "Runner",
    "AsyncEngine": "sa.Engine",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "loop_scope": "process_scope",
}

#: Words in strings (docstrings, messages): a regex and its replacement.
WORDS = [
    (r"\bAsync(SqlSession|SessionService|RedisSession|SessionBase|Engine)\b", r"\1"),
    (r"\bredis\.asyncio\.Redis\b", "redis.Redis"),
    (r"\basync code\b", "sync code"),
    (r"\bthe async\b", "the sync"),
]

#: Code the renames above leave doubled: the sync text.
COLLAPSE = {"sa.Engine | sa.Engine": "sa.Engine"}

#: Source lines that have no sync counterpart.
DROP = {"from sqlalchemy.ext.asyncio import AsyncEngine"}

#: In code, ``module.asyncio.X`` is ``module.X`` for these modules.
ASYNCIO_OF = {"redis"}


def header(source: str) -> str:
    """The comment a generated module starts with."""
    return (
        f"# generated from {source} by tools/gen_sync.py: edit {source},\n"
        "# then run python tools/gen_sync.py\n"
    )


def _offsets(text: str) -> list[int]:
    starts, total = [0], 0
    for line in text.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def unasync(text: str) -> str:
    """Return the sync rewrite of the async module ``text`` (before formatting)."""
    text = "".join(line for line in text.splitlines(keepends=True) if line.strip() not in DROP)
    starts = _offsets(text)
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    edits: list[tuple[int, int, str]] = []

    def at(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1]

    for i, tok in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.type == tokenize.NAME and following is not None:
            if tok.string == "async" and following.string in ("def", "with", "for"):
                edits.append((at(tok.start), at(following.start), ""))
                continue
            if tok.string == "await":
                edits.append((at(tok.start), at(following.start), ""))
                continue
        if (
            tok.type == tokenize.NAME
            and tok.string == "asyncio"
            and i >= 2
            and tokens[i - 1].string == "."
            and tokens[i - 2].string in ASYNCIO_OF
        ):
            edits.append((at(tokens[i - 1].start), at(tok.end), ""))
        elif tok.type == tokenize.NAME and tok.string in NAMES:
            edits.append((at(tok.start), at(tok.end), NAMES[tok.string]))
        elif tok.type == tokenize.STRING:
            new = tok.string
            for pattern, repl in WORDS:
                new = re.sub(pattern, repl, new)
            if new != tok.string:
                edits.append((at(tok.start), at(tok.end), new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    for doubled, single in COLLAPSE.items():
        text = text.replace(doubled, single)
    return text


def _ruff(args: list[str], text: str, path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise SystemExit(f"ruff failed on {path.name}:\n{done.stderr}")
    return done.stdout


def generate(source: str, target: str) -> str:
    """The text ``target`` should hold: ``source`` rewritten, imports sorted, formatted."""
    path = PACKAGE / target
    text = header(source) + unasync((PACKAGE / source).read_text())
    text = _ruff(["check", "--quiet", "--fix", "--select", "I,F401"], text, path)
    return _ruff(["format", "--quiet"], text, path)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every generated twin; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a twin is stale")
    args = parser.parse_args(argv)
    stale = []
    for source, target in TWINS.items():
        wanted = generate(source, target)
        path = PACKAGE / target
        if path.exists() and path.read_text() == wanted:
            continue
        if args.check:
            stale.append(target)
        else:
            path.write_text(wanted)
            print(f"wrote src/statekeeper/{target} from {source}")
    for target in stale:
        source = next(s for s, t in TWINS.items() if t == target)
        print(
            f"src/statekeeper/{target} is stale: edit {source}, then run python tools/gen_sync.py",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
