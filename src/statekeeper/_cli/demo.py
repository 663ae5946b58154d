"""``statekeeper demo``: save a small agent's state to SQLite and load it back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import migrations
from ..modules import StateModule
from ..sql import SqlSession

if TYPE_CHECKING:
    from pathlib import Path


class DemoMemory(StateModule):
    """A dialogue memory: a list of messages."""

    def __init__(self) -> None:
        super().__init__()
        self.content: list[dict[str, Any]] = []
        self.register_state("content")


class DemoAgent(StateModule):
    """A tiny agent with a name, a memory (nested module) and a turn counter."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.turns = 0
        self.memory = DemoMemory()
        self.register_state("name")
        self.register_state("turns")


def run(path: Path, echo: Any = print) -> dict[str, Any]:
    """Run the demo on the SQLite file ``path`` and return what was loaded back."""
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    echo(f"migrated {path} to statekeeper revision {migrations.current(url)}")

    agent = DemoAgent("Friday")
    for text in ("Hello!", "What can you remember?", "Everything in this session."):
        agent.memory.content.append(
            {"role": "user" if agent.turns % 2 == 0 else "agent", "text": text}
        )
        agent.turns += 1
    with SqlSession(url, app_name="demo") as store:
        store.save_session_state("session-1", user_id="alice", agent=agent)
        version = store.list_sessions("alice").items[0].version
        echo(
            f"saved agent {agent.name!r} with {agent.turns} turns "
            f"as alice/session-1 (version {version})"
        )

    restored = DemoAgent("nobody")
    with SqlSession(url, app_name="demo") as store:  # a new store, as a new process would make
        store.load_session_state("session-1", user_id="alice", agent=restored)
        echo(f"loaded it back in a new store: agent {restored.name!r}, {restored.turns} turns")
        for message in restored.memory.content:
            echo(f"  {message['role']:>5}: {message['text']}")
        sessions = [f"{i.user_id}/{i.session_id}" for i in store.list_sessions().items]
        echo(f"sessions stored: {', '.join(sessions)}")
    return restored.state_dict()
