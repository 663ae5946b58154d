"""ADK's tooling finds ``SqlSessionService`` by URI: ``adk api_server``, registry, services.yaml.

The server tests start the installed ``adk`` command on a free loopback
port with an agents folder written here, whose agent answers from a canned
model (a ``BaseLlm`` subclass, no network), and talk to it over HTTP.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from google.adk.cli.service_registry import get_service_registry
from google.adk.events.event import Event

import statekeeper
from statekeeper import SessionService, migrations
from statekeeper.adk import SqlSessionService
from statekeeper.errors import SchemaNotReadyError

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_SCHEMA = "adk_sessions"  # the schema conftest's pg_schema_database migrates
STARTUP_TIMEOUT = 120.0  # seconds: importing ADK on a busy machine is slow
HTTP_TIMEOUT = 60.0

AGENT = '''
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.genai import types


class CannedLlm(BaseLlm):
    """Answers "you said: <the user's last text>", without any network."""

    async def generate_content_async(self, llm_request, stream=False):
        said = llm_request.contents[-1].parts[0].text
        reply = types.Content(role="model", parts=[types.Part(text=f"you said: {said}")])
        yield LlmResponse(content=reply)


root_agent = LlmAgent(
    name="helper", model=CannedLlm(model="canned"), instruction="Help.", output_key="last_reply"
)
'''

# What docs/adk.md tells a user to write in the agents folder.
SERVICES_PY = "import statekeeper.adk  # noqa: F401  (registers statekeeper+sqlite:// ...)\n"
# services.yaml takes over ADK's own ``sqlite`` scheme, which statekeeper does not
# register itself: only ADK calling ``SqlSessionService(uri=...)`` serves it.
SERVICES_YAML = """\
services:
  - scheme: sqlite
    type: session
    class: statekeeper.adk.SqlSessionService
"""


def _agents_folder(root: Path, services: str) -> Path:
    agents = root / "agents"
    (agents / "helper").mkdir(parents=True)
    (agents / "helper" / "__init__.py").write_text("from . import agent\n")
    (agents / "helper" / "agent.py").write_text(AGENT)
    if services == "services.py":
        (agents / "services.py").write_text(SERVICES_PY)
    else:
        (agents / "services.yaml").write_text(SERVICES_YAML)
    return agents


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _api_server(agents: Path, session_service_uri: str) -> Iterator[tuple[str, list[str]]]:
    """Run ``adk api_server`` until the block ends; yield its base URL and its log so far."""
    port = _free_port()
    adk = Path(sys.executable).with_name("adk")
    command = [str(adk), "api_server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--session_service_uri", session_service_uri, str(agents)]
    server = subprocess.Popen(
        command, cwd=agents.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump() -> None:  # keeps reading, so the server never blocks on a full pipe
        assert server.stderr is not None
        for line in server.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not log or "Uvicorn running on" not in log[-1]:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"adk api_server not up in {STARTUP_TIMEOUT}s:\n{''.join(log)}")
            if line is None:
                pytest.fail(f"adk api_server exited ({server.wait()}):\n{''.join(log)}")
            log.append(line)
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _call(url: str, body: dict[str, Any] | None = None, log: list[str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        pytest.fail(f"{url}: HTTP {exc.code} {exc.read()!r}\nserver log:\n{''.join(log or [])}")


@pytest.fixture(params=["sqlite services.py", "sqlite services.yaml", "postgres services.py"])
def server_setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, str]:
    """An agents folder, the ``--session_service_uri`` for it, and the database URL it names."""
    backend, services = str(request.param).split()
    agents = _agents_folder(tmp_path, services)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        scheme = "" if services == "services.yaml" else "statekeeper+"
    else:
        empty = sa.make_url(request.getfixturevalue("pg_empty_database"))
        url = empty.set(drivername="postgresql").render_as_string(hide_password=False)
        scheme = "statekeeper+"
    # A database without tables: the URI's auto_migrate option creates them.
    return agents, f"{scheme}{url}?auto_migrate=true", url


@pytest.mark.slow
def test_adk_api_server_keeps_its_sessions_in_statekeeper(
    server_setup: tuple[Path, str, str],
) -> None:
    agents, uri, url = server_setup
    with _api_server(agents, uri) as (base, log):
        sessions_url = f"{base}/apps/helper/users/u1/sessions"
        created = _call(sessions_url, {"state": {"topic": "billing"}}, log)
        session_id = created["id"]
        message = {"role": "user", "parts": [{"text": "hello"}]}
        run = {"app_name": "helper", "user_id": "u1", "session_id": session_id}
        events = _call(f"{base}/run", {**run, "new_message": message}, log)
        assert [e["content"]["parts"][0]["text"] for e in events] == ["you said: hello"], log
        got = _call(f"{sessions_url}/{session_id}", log=log)
        assert [e["author"] for e in got["events"]] == ["user", "helper"]

    # The turn is in statekeeper's tables, readable without ADK's server.
    with SessionService(url, app_name="helper") as sessions:
        stored = sessions.get_session(session_id, "u1")
    assert stored is not None
    texts = [(e.data["author"], e.data["content"]["parts"][0]["text"]) for e in stored.events]
    assert texts == [("user", "hello"), ("helper", "you said: hello")]
    assert stored.state == {"topic": "billing", "last_reply": "you said: hello"}


@pytest.fixture(params=["sqlite", "postgres-schema"])
def registry_uri(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str | None]:
    """A ``statekeeper+`` URI, the database URL it names, and its PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        return f"statekeeper+{url}?auto_migrate=true&ttl=3600", url, None
    database = sa.make_url(request.getfixturevalue("pg_schema_database"))
    url = database.set(drivername="postgresql").render_as_string(hide_password=False)
    return f"statekeeper+{url}?schema={PG_SCHEMA}", url, PG_SCHEMA


async def test_adks_registry_builds_the_service_from_a_statekeeper_uri(
    registry_uri: tuple[str, str, str | None], app_name: str, tmp_path: Path
) -> None:
    uri, url, schema = registry_uri
    # What get_fast_api_app(session_service_uri=..., session_db_kwargs=...) calls.
    built = get_service_registry().create_session_service(
        uri, agents_dir=str(tmp_path), engine_options={"pool_size": 2}
    )
    assert isinstance(built, SqlSessionService)
    async with built as service:
        session = await service.create_session(app_name=app_name, user_id="u")
        await service.append_event(session, Event(author="user", actions={"state_delta": {"k": 1}}))
    with SessionService(url, app_name=app_name, schema=schema) as sessions:
        stored = sessions.get_session(session.id, "u")
    assert stored is not None
    assert stored.state == {"k": 1}
    assert [e.data["author"] for e in stored.events] == ["user"]


async def test_the_uri_settings_reach_the_service(sqlite_url: str) -> None:
    uri = f"statekeeper+{sqlite_url}"
    async with SqlSessionService(uri=uri) as service:
        with pytest.raises(SchemaNotReadyError, match="statekeeper db upgrade"):
            await service.create_session(app_name="a", user_id="u")
    async with SqlSessionService(uri=f"{uri}?ttl=0.001&auto_migrate=yes") as service:
        session = await service.create_session(app_name="a", user_id="u")
        await asyncio.sleep(0.01)
        assert await service.get_session(app_name="a", user_id="u", session_id=session.id) is None
    assert migrations.current(sqlite_url) == migrations.head()


@pytest.mark.parametrize(
    ("uri", "kwargs", "message"),
    [
        ("statekeeper+sqlite:///x.db?auto_migrate=maybe", {}, "auto_migrate must be true or false"),
        ("statekeeper+sqlite:///x.db?ttl=soon", {}, "ttl must be a number of seconds"),
        ("statekeeper+sqlite:///x.db?ttl=-5", {}, "ttl"),
        ("statekeeper+sqlite:///x.db?ttl=5", {"ttl": 5}, "ttl given both in the URI"),
        ("statekeeper+sqlite:///x.db?schema=a&schema=b", {}, "'schema' more than once"),
        ("statekeeper+mysql://app:secret@db/app", {}, "SQLite and PostgreSQL"),
        ("not a uri", {}, "not a session-service URI"),
        ("statekeeper+sqlite:///x.db", {"url_or_engine": "sqlite:///y.db"}, "not both"),
    ],
)
def test_a_bad_uri_is_refused_up_front(uri: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        SqlSessionService(uri=uri, **kwargs)
    assert "secret" not in str(caught.value)


def test_a_service_without_a_database_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a database"):
        SqlSessionService()


def test_only_the_adk_module_imports_adk_and_importing_statekeeper_does_not() -> None:
    package = Path(statekeeper.__file__).parent
    importers = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(name == "google.adk" or name.startswith("google.adk.") for name in names):
                importers.add(source.relative_to(package).as_posix())
    assert importers == {"adk.py"}
    code = (
        "import sys, statekeeper, statekeeper.cli, statekeeper.service\n"
        "print(sorted(m for m in sys.modules if m.startswith('google.adk')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"
