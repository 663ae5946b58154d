"""What only the JSON-file store must guarantee: safe names, atomic writes, cross-process locks."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from statekeeper import (
    AsyncJSONSession,
    ConflictError,
    JSONSession,
    StatekeeperError,
    StoreClosedError,
)
from statekeeper import _json_files as _files

HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    "/etc/passwd",
    "C:\\Windows\\system32",
    "\\\\server\\share",
    "a/b",
    "CON",
    "nul",
    "aux.txt",
    "COM1",
    "trailing.",
    "trailing ",
    " leading",
    'x:y*z?<>|"',
    "~000041",
    "^a",
    "A",
    "a",
    "日本語",
    "\t\n\r",
]


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_hostile_ids_stay_inside_save_dir_and_never_share_a_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "outside" / "sessions"
    store = JSONSession(root)
    pairs = [(u, s) for u in ["", "u", *HOSTILE[:8]] for s in HOSTILE]
    for i, (user, session) in enumerate(pairs):
        store.set_state(session, {"i": i}, user_id=user)
    for i, (user, session) in enumerate(pairs):
        assert store.get_state(session, user_id=user) == {"i": i}
    files = _all_files(outside)
    assert len(files) == len(pairs)  # one file per (user, session), none shared
    for file in files:
        assert root.resolve() in file.resolve().parents
        for part in file.relative_to(root).parts:
            stem = part.split(".")[0].upper()
            assert stem not in {"CON", "NUL", "AUX", "PRN", "COM1", "LPT1", ""}
            assert not part.endswith((" ", ".")), part
            assert part == part.lower()  # case-insensitive file systems cannot merge two
    assert not (tmp_path / "etc").exists()


def test_pairs_agentscope_confused_get_their_own_files(tmp_path: Path) -> None:
    # AgentScope named files f"{user_id}_{session_id}.json": these pairs collided.
    store = JSONSession(tmp_path)
    store.set_state("b_c", {"who": 1}, user_id="a")
    store.set_state("c", {"who": 2}, user_id="a_b")
    store.set_state("a_b_c", {"who": 3})
    assert store.get_state("b_c", user_id="a") == {"who": 1}
    assert store.get_state("c", user_id="a_b") == {"who": 2}
    assert store.get_state("a_b_c") == {"who": 3}


def test_longest_ids_of_wide_characters_fit_file_system_limits(tmp_path: Path) -> None:
    store = JSONSession(tmp_path, app_name="🚀" * 255)
    user, session = "日" * 255, "🚀" * 254 + "x"
    store.set_state(session, {"a": 1}, user_id=user)
    store.set_state(session[:-1] + "y", {"a": 2}, user_id=user)
    assert store.get_state(session, user_id=user) == {"a": 1}
    assert [i.session_id for i in store.list_sessions(user).items] == [session[:-1] + "y", session]
    for file in _all_files(tmp_path):
        assert all(len(part) <= 255 for part in file.relative_to(tmp_path).parts)


def test_ids_too_long_to_spell_out_are_named_by_their_hash(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)
    long = "X" * (_files.LONGEST // 2 + 1)  # each X is spelled "^x"
    store.set_state(long, {"a": 1}, user_id=long)
    store.set_state(long.lower(), {"a": 2}, user_id=long)
    [hashed] = [p for p in _all_files(tmp_path) if p.name.startswith("s~")]
    assert len(hashed.name) == len("s~") + 64 + len(".json")
    assert store.get_state(long, user_id=long) == {"a": 1}
    assert store.get_state(long.lower(), user_id=long) == {"a": 2}


def test_a_file_moved_under_another_name_is_refused(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)
    store.set_state("a", {"mine": "a"})
    os.replace(
        _files.session_path(str(tmp_path), "", "", "a"),
        _files.session_path(str(tmp_path), "", "", "b"),
    )
    with pytest.raises(StatekeeperError, match="moved or copied"):
        store.get_state("b")
    with pytest.raises(StatekeeperError, match="moved or copied"):
        store.set_state("b", {"x": 1})


def test_a_foreign_file_in_the_folder_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JSONSession(tmp_path)
    store.set_state("s", {"a": 1})
    app = Path(_files.app_dir(str(tmp_path), ""))
    (app / "stray.json").write_text('{"not": "ours"}')
    with caplog.at_level(logging.WARNING, logger="statekeeper"):
        assert [i.session_id for i in store.list_sessions().items] == ["s"]
    assert "stray.json" in caplog.text


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)
    store.set_state("s", {"a": 1})
    store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        store.get_state("s")
    with pytest.raises(StoreClosedError):
        store.list_sessions()


# --------------------------------------------------------------------------- atomic writes


def _rewrite_forever(root: str, ready: Any) -> None:
    store = JSONSession(root)
    while True:
        last = store.get_state("s")
        i = 1 if last is None else last["i"] + 1
        store.set_state("s", {"i": i, "blob": [str(i) * 1000] * 300})
        ready.set()


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_a_whole_state(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    store = JSONSession(tmp_path)
    for delay in (0.0, 0.013, 0.031, 0.057, 0.089):
        ready = ctx.Event()
        proc = ctx.Process(target=_rewrite_forever, args=(str(tmp_path), ready))
        proc.start()
        assert ready.wait(60)
        time.sleep(delay)  # kill it at a different point of a write each time
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        state = store.get_state("s")
        assert state is not None
        assert state["blob"] == [str(state["i"]) * 1000] * 300
        assert store.list_sessions().items[0].version == state["i"]
    # Temp files of killed writers are not sessions and do not break anything.
    assert [i.session_id for i in store.list_sessions().items] == ["s"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JSONSession(tmp_path)
    store.set_state("s", {"a": 1})

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files, "_sync_data", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        store.merge_state("s", {"b": 2})
    monkeypatch.undo()
    assert store.get_state("s") == {"a": 1}
    assert [p.name for p in _all_files(tmp_path)] == [
        Path(_files.session_path(str(tmp_path), "", "", "s")).name
    ]


def test_purge_removes_temp_files_of_dead_writers(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)
    store.set_state("s", {"a": 1})
    folder = Path(_files.session_path(str(tmp_path), "", "", "s")).parent
    old, fresh = folder / ".tmp-old", folder / ".tmp-fresh"
    old.write_text("torn")
    fresh.write_text("being written")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.purge_expired() == 0
    assert not old.exists()
    assert fresh.exists()  # maybe a live writer's
    assert store.get_state("s") == {"a": 1}


# --------------------------------------------------------------------------- concurrency

WRITERS, ROUNDS = 4, 15


class Counter:
    def __init__(self, value: int) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "padding": "x" * 2000}


def _writer(root: str, index: int, start: Any) -> None:
    store = JSONSession(root, app_name="concurrency")
    start.wait()
    for i in range(1, ROUNDS + 1):
        store.save_session_state("shared", user_id="u", **{f"m{index}": Counter(i)})


@pytest.mark.slow
def test_processes_saving_different_modules_lose_nothing(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, start)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    store = JSONSession(tmp_path, app_name="concurrency")
    state = store.get_state("shared", user_id="u")
    assert state is not None
    assert {name: s["value"] for name, s in state.items()} == {
        f"m{i}": ROUNDS for i in range(WRITERS)
    }
    assert store.list_sessions("u").items[0].version == WRITERS * ROUNDS


def test_threads_merging_one_session_lose_nothing(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)

    def write(index: int) -> None:
        for i in range(1, 6):
            store.merge_state("s", {f"m{index}": {"i": i, "nul": "\x00"}})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_state("s") == {f"m{i}": {"i": 5, "nul": "\x00"} for i in range(8)}
    assert store.list_sessions().items[0].version == 40


def test_compare_and_swap_lets_exactly_one_thread_win(tmp_path: Path) -> None:
    store = JSONSession(tmp_path)
    version = store.set_state("s", {"n": 0})
    results: list[Any] = []

    def write(n: int) -> None:
        try:
            results.append(store.set_state("s", {"n": n}, expected_version=version))
        except ConflictError as exc:
            results.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if isinstance(r, int)] == [version + 1]
    assert sum(isinstance(r, ConflictError) for r in results) == 7


async def test_async_store_keeps_the_event_loop_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AsyncJSONSession(tmp_path)
    unblock = threading.Event()
    real_write = _files.write

    def slow_write(*args: Any) -> None:
        assert unblock.wait(120), "the loop never ran while the file was written"
        real_write(*args)

    monkeypatch.setattr(_files, "write", slow_write)

    async def release() -> None:
        unblock.set()  # runs only if the save left the loop free

    await asyncio.gather(store.set_state("s", {"a": 1}), release())
    assert await store.get_state("s") == {"a": 1}
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.get_state("s")
