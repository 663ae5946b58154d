"""Every Python code block of README.md and docs/*.md runs, as a reader would run it.

How a block is run:

* Each ```` ```python ```` block is a whole program: it runs alone, in a fresh
  namespace, in an empty working directory where ``sqlite:///sessions.db`` has
  already been migrated (the pages tell the reader to run
  ``statekeeper db upgrade`` first). A block that fails, raises or leaves an
  unawaited coroutine fails the test named after its file and line.
* An HTML comment on the line right above a block changes how it runs. The
  comment is part of the Markdown source, so a reader of the source sees it;
  the rendered site hides it. Known comments:

  - ``<!-- docs-test: postgres -->``: the block's ``postgresql://app@db/app``
    URLs point at a fresh, migrated database on the test server
    (``STATEKEEPER_TEST_POSTGRES_URL``, see tests/conftest.py).
  - ``<!-- docs-test: stand-ins agentscope -->``: the block imports a package
    the test suite does not install; it runs with small stand-ins of that
    package's names, defined below (the stand-ins behave like AgentScope 1.x's
    agents: state modules with ``state_dict`` / ``load_state_dict``).
  - ``<!-- docs-test: compile-only REASON -->``: the block is only compiled
    (a fragment of a file the reader edits, such as Alembic's ``env.py``);
    REASON must say why.

  Any other ``docs-test`` comment fails the collection test, and no block is
  skipped silently: every block is listed in this module's parametrization.
"""

from __future__ import annotations

import os
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from statekeeper import migrations

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_PG_URL = "postgresql://app@db/app"
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    source: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of ``page``, with the docs-test comment above each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, lang = fence["indent"], fence["lang"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang != "python":
            continue
        above = lines[start - 1] if start > 0 else ""
        marker = _MARKER.match(above)
        found.append(Block(page, start + 1, "\n".join(body) + "\n", marker and marker["what"]))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def test_every_page_block_is_collected_and_markers_are_known() -> None:
    assert len(ALL_BLOCKS) >= 10, [b.name for b in ALL_BLOCKS]
    for block in ALL_BLOCKS:
        marker = block.marker
        if marker is None or marker in ("postgres", "stand-ins agentscope"):
            continue
        assert marker.startswith("compile-only "), f"{block.name}: unknown {marker!r}"
        reason = marker.removeprefix("compile-only ")
        assert len(reason) > 10, f"{block.name}: say why the block is only compiled"


# --------------------------------------------------------------------------- stand-ins


def _agentscope_stand_ins() -> dict[str, types.ModuleType]:
    """Small stand-ins of the AgentScope 1.x names the pages import."""
    root = types.ModuleType("agentscope")
    message = types.ModuleType("agentscope.message")
    agent = types.ModuleType("agentscope.agent")
    model = types.ModuleType("agentscope.model")
    formatter = types.ModuleType("agentscope.formatter")
    memory = types.ModuleType("agentscope.memory")

    class Msg:
        def __init__(self, name: str, content: str, role: str) -> None:
            self.name, self.content, self.role = name, content, role

        def to_dict(self) -> dict[str, Any]:
            return {"name": self.name, "content": self.content, "role": self.role}

    class InMemoryMemory:
        def __init__(self) -> None:
            self.content: list[dict[str, Any]] = []

        def state_dict(self) -> dict[str, Any]:
            return {"content": list(self.content)}

        def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
            self.content = list(state["content"])

    class ReActAgent:
        def __init__(self, name: str, sys_prompt: str, model: Any, formatter: Any, **_: Any):
            self.name, self.sys_prompt = name, sys_prompt
            self.memory = InMemoryMemory()

        async def __call__(self, msg: Msg) -> Msg:
            self.memory.content.append(msg.to_dict())
            reply = Msg(self.name, f"({len(self.memory.content)} messages so far)", "assistant")
            self.memory.content.append(reply.to_dict())
            return reply

        def state_dict(self) -> dict[str, Any]:
            return {"name": self.name, "memory": self.memory.state_dict()}

        def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
            self.name = state["name"]
            self.memory.load_state_dict(state["memory"])

    class DashScopeChatModel:
        def __init__(self, model_name: str, api_key: str, **_: Any) -> None:
            self.model_name = model_name

    class DashScopeChatFormatter:
        pass

    message.Msg = Msg  # type: ignore[attr-defined]
    agent.ReActAgent = ReActAgent  # type: ignore[attr-defined]
    model.DashScopeChatModel = DashScopeChatModel  # type: ignore[attr-defined]
    formatter.DashScopeChatFormatter = DashScopeChatFormatter  # type: ignore[attr-defined]
    memory.InMemoryMemory = InMemoryMemory  # type: ignore[attr-defined]
    modules = {
        "agentscope": root,
        "agentscope.message": message,
        "agentscope.agent": agent,
        "agentscope.model": model,
        "agentscope.formatter": formatter,
        "agentscope.memory": memory,
    }
    for name, module in modules.items():
        if "." in name:
            setattr(root, name.split(".")[1], module)
    return modules


# --------------------------------------------------------------------------- running


def _run(block: Block, source: str, cwd: Path) -> None:
    # Padded so that a traceback names the page's own line numbers.
    code = compile("\n" * block.line + source, str(block.page), "exec")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        old = Path.cwd()
        os.chdir(cwd)
        try:
            exec(code, namespace)
        finally:
            os.chdir(old)
            namespace.clear()


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_block_runs(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = block.source
    marker = block.marker or ""
    if marker.startswith("compile-only"):
        compile(source, block.name, "exec")
        return
    if "google.adk" in source or "statekeeper.adk" in source:
        # Installed by the dev extra; CI's lowest-versions run goes without it.
        pytest.importorskip("google.adk", reason="the adk extra is not installed here")
    if "statekeeper.openai_agents" in source:
        pytest.importorskip("agents", reason="the openai-agents extra is not installed here")
    migrations.upgrade(f"sqlite:///{tmp_path / 'sessions.db'}")
    if marker == "postgres":
        assert DOC_PG_URL in source, f"{block.name}: a postgres block names {DOC_PG_URL}"
        url: str = request.getfixturevalue("pg_empty_database")
        migrations.upgrade(url)
        source = source.replace(DOC_PG_URL, url)
    if marker == "stand-ins agentscope":
        for name, module in _agentscope_stand_ins().items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setenv("DASHSCOPE_API_KEY", "not-a-key")
    _run(block, source, tmp_path)
