"""The installed package: metadata, public names, the demo."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import statekeeper


def _requirements() -> list[Requirement]:
    return [Requirement(r) for r in importlib.metadata.requires("statekeeper") or []]


def _required_by(extra: str | None) -> dict[str, Requirement]:
    """The requirements that installing ``statekeeper[extra]`` adds (None: the base ones)."""
    found: dict[str, Requirement] = {}
    for req in _requirements():
        if extra is None:
            wanted = req.marker is None
        else:
            wanted = (
                req.marker is not None
                and req.marker.evaluate({"extra": extra})
                and not req.marker.evaluate({"extra": ""})
            )
        if wanted:
            found[canonicalize_name(req.name)] = req
    return found


def test_metadata_matches_the_package() -> None:
    meta = importlib.metadata.metadata("statekeeper")
    assert meta["Name"] == "statekeeper"
    assert importlib.metadata.version("statekeeper") == statekeeper.__version__
    assert meta["Requires-Python"] == ">=3.10"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(u.startswith("https://github.com/statekeeper/statekeeper") for u in urls.values())


def test_license_is_apache_2_and_its_text_is_installed() -> None:
    meta = importlib.metadata.metadata("statekeeper")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    files = importlib.metadata.files("statekeeper") or []
    (license_file,) = [f for f in files if f.name == "LICENSE"]
    text = license_file.read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_classifiers_name_every_supported_python() -> None:
    classifiers = importlib.metadata.metadata("statekeeper").get_all("Classifier") or []
    versions = {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert versions == {"3.10", "3.11", "3.12", "3.13"}
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it


def test_extras_offer_plain_and_binary_drivers() -> None:
    extras = set(importlib.metadata.metadata("statekeeper").get_all("Provides-Extra") or [])
    assert {"postgres", "postgres-binary", "redis", "bench", "test", "dev"} <= extras
    assert set(_required_by("redis")) == {"redis"}
    base = _required_by(None)
    assert {"sqlalchemy", "alembic", "aiosqlite", "click", "rich"} == set(base)
    plain = _required_by("postgres")
    assert set(plain) == {"psycopg"}
    assert not plain["psycopg"].extras  # no forced binary build, no pool
    assert _required_by("postgres-binary")["psycopg"].extras == {"binary"}
    assert "psycopg-pool" in _required_by("bench")
    # The test suite runs on every driver a caller's engine may use, without libpq headers.
    test = _required_by("test")
    assert {"psycopg2-binary", "asyncpg", "redis", "pytest"} <= set(test)
    assert test["psycopg"].extras == {"binary"}
    assert set(test) | {"mypy", "ruff"} <= set(_required_by("dev"))


def test_every_dependency_has_a_lower_bound() -> None:
    for req in _requirements():
        assert any(s.operator == ">=" for s in req.specifier), req


def _runtime_imports() -> set[str]:
    """Top-level names statekeeper's sources import outside ``if TYPE_CHECKING:`` blocks."""
    package = Path(statekeeper.__file__).parent
    names: set[str] = set()
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text())
        checking_only: set[ast.AST] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                checking_only.update(ast.walk(node))
        for node in ast.walk(tree):
            if node in checking_only:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_module_imported_at_run_time_is_declared() -> None:
    declared = {canonicalize_name(r.name) for r in _requirements()}
    owners = importlib.metadata.packages_distributions()
    undeclared = {}
    for name in _runtime_imports() - set(sys.stdlib_module_names) - {"statekeeper"}:
        if importlib.util.find_spec(name) is None:
            continue  # an extra not installed here (google-adk in CI's lowest-versions run)
        dists = {canonicalize_name(d) for d in owners.get(name, [name])}
        if not dists & declared:
            undeclared[name] = sorted(dists)
    assert undeclared == {}


def test_typed_and_never_imports_agentscope() -> None:
    package = Path(statekeeper.__file__).parent
    assert (package / "py.typed").exists()
    sources = "".join(p.read_text() for p in package.rglob("*.py"))
    assert "import agentscope" not in sources
    assert "from agentscope" not in sources


def test_demo_saves_and_loads_back(tmp_path: Path) -> None:
    for command in (["statekeeper", "demo"], [sys.executable, "-m", "statekeeper", "demo"]):
        out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert "loaded it back in a new store: agent 'Friday', 3 turns" in out.stdout
        assert "Everything in this session." in out.stdout
        assert (tmp_path / "statekeeper-demo.db").exists()
        assert out.stdout.splitlines()[-1].startswith("Documentation: README.md and docs/")
