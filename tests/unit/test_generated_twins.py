"""The sync twins are what ``tools/gen_sync.py`` writes from their async sources."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_sync", ROOT / "tools" / "gen_sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_sync"] = module
    spec.loader.exec_module(module)
    return module


gen_sync = _tool()


@pytest.mark.parametrize(("source", "target"), sorted(gen_sync.TWINS.items()))
def test_the_sync_twin_is_generated_from_the_async_source(source: str, target: str) -> None:
    written = (gen_sync.PACKAGE / target).read_text()
    assert written.startswith(gen_sync.header(source))
    assert written == gen_sync.generate(source, target), (
        f"src/statekeeper/{target} is stale: edit {source}, then run python tools/gen_sync.py"
    )


def test_the_rewrite_turns_async_code_into_sync_code() -> None:
    source = (
        '"""From async code: an ``AsyncEngine``."""\n'
        "async def f(self) -> AsyncSqlSession:\n"
        "    async with self._lock:\n"
        "        await self._client.aclose()\n"
        "    return await redis.asyncio.Redis.from_url(x)\n"
    )
    assert gen_sync.unasync(source) == (
        '"""From sync code: an ``Engine``."""\n'
        "def f(self) -> SqlSession:\n"
        "    with self._lock:\n"
        "        self._client.close()\n"
        "    return redis.Redis.from_url(x)\n"
    )
