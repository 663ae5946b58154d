"""The layout's rules (CONTRIBUTING.md, "Import rules"), read from the sources' imports."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "statekeeper"

#: Calls that run SQL on a connection. Outside ``_sql/driver.py`` only: Alembic's
#: env (its own DDL and lock), the SQLite connect hook (PRAGMAs on the DBAPI
#: cursor), and the Redis twins (``pipeline.execute`` is redis-py's).
EXECUTES = {"execute", "exec_driver_sql"}
MAY_EXECUTE = {
    "statekeeper._sql.driver",
    "statekeeper._sql.engine",
    "statekeeper.migrations._env",
    "statekeeper.redis",
    "statekeeper.redis_async",
}
#: Modules of the SQL package operations must not import.
NOT_FOR_OPS = {
    f"statekeeper._sql.{name}"
    for name in ("core", "runner", "driver", "engine", "database", "migrate")
}
#: All a statements module imports of statekeeper.
STATEMENT_TERMS = {"statekeeper._sql.schema", "statekeeper._sql.statements.terms"}
#: Backends that never talk SQL.
NO_SQL = {
    "statekeeper.json_file",
    "statekeeper.json_file_async",
    "statekeeper._json_files",
    "statekeeper.redis",
    "statekeeper.redis_async",
    "statekeeper._redis_ops",
}
#: What an importer may import of ``_sql`` when it runs: statekeeper's database is
#: reached through ``database``; ``adk_source`` reads ADK's own tables, a foreign
#: database, through the driver (``Call`` / ``Op`` are the driver's vocabulary).
IMPORTER_SQL = {
    "statekeeper._sql.database",
    "statekeeper._sql.driver",
    "statekeeper._sql.engine",
    "statekeeper._sql.ops.store",
}
FOREIGN_READER = "statekeeper._importers.adk_source"


@dataclass(frozen=True)
class Import:
    """One ``import`` of a statekeeper module by another."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int
    typing_only: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path) -> dict[str, Path]:
    """Every module of the package (revision scripts aside), by dotted name."""
    return {
        module_name(root, p): p
        for p in sorted(root.rglob("*.py"))
        if "versions" not in p.relative_to(root).parts
    }


def _typing_only_nodes(tree: ast.AST) -> set[ast.AST]:
    nodes: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                nodes.update(ast.walk(child))
    return nodes


def imports(root: Path) -> list[Import]:
    """Every import of a statekeeper module, top-level and inside functions alike."""
    modules = sources(root)
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = _typing_only_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "statekeeper":
                        found.append(Import(name, alias.name, (), node.lineno, node in typing_only))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "statekeeper":
                    continue
                for alias in node.names:  # ``from pkg import module`` imports the module
                    sub = f"{target}.{alias.name}"
                    into = sub if sub in modules else target
                    names = () if sub in modules else (alias.name,)
                    found.append(Import(name, into, names, node.lineno, node in typing_only))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``edges`` (strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the statekeeper modules it imports (a package's own ``__init__`` aside)."""
    edges: dict[str, set[str]] = {name: set() for name in sources(root)}
    for imp in imports(root):
        inside = imp.source.startswith(imp.target + ".")  # a module's own parent package
        if imp.target in edges and imp.target != imp.source and not inside:
            edges[imp.source].add(imp.target)
    return edges


def violations(root: Path) -> list[str]:
    """Every broken rule, one line each."""
    found = []
    for imp in imports(root):
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        src, dst = imp.source, imp.target
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private:
            found.append(f"{where}: private name(s) {', '.join(private)} across modules")
        if src.startswith("statekeeper._sql.statements.") and dst not in STATEMENT_TERMS:
            found.append(f"{where}: statements import only the schema and their terms")
        if src.startswith("statekeeper._sql.ops.") and dst in NOT_FOR_OPS:
            found.append(f"{where}: operations never import core, runner, driver, engine")
        if src.startswith("statekeeper._sql") and dst.startswith("statekeeper.migrations"):
            found.append(f"{where}: nothing under _sql imports migrations")
        if dst.startswith("statekeeper._cli") and not (
            src == "statekeeper.cli" or src.startswith("statekeeper._cli")
        ):
            found.append(f"{where}: only statekeeper.cli imports _cli")
        if src in NO_SQL and dst.startswith("statekeeper._sql"):
            found.append(f"{where}: the JSON and Redis stores never import _sql")
        if (
            src.startswith("statekeeper._importers")
            and dst.startswith("statekeeper._sql")
            and not imp.typing_only
        ):
            allowed = IMPORTER_SQL if src == FOREIGN_READER else {"statekeeper._sql.database"}
            if dst not in allowed:
                found.append(f"{where}: importers reach statekeeper's database via _sql.database")
    for cycle in cycles(graph(root)):
        found.append(f"import circle: {' -> '.join(cycle)}")
    for name, path in sources(root).items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            if node.attr in EXECUTES and name not in MAY_EXECUTE:
                found.append(f"{name}:{node.lineno}: executes SQL; only _sql/driver.py does")
            reached = node.value
            if (
                node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(reached, ast.Attribute)
                and isinstance(reached.value, ast.Name)
                and reached.value.id == "self"
            ):
                found.append(f"{name}:{node.lineno}: reaches into self.{reached.attr}.{node.attr}")
            if (
                node.attr in ("_run", "_core", "_sync")
                and isinstance(reached, ast.Name)
                and reached.id not in ("self", "cls")
            ):
                found.append(f"{name}:{node.lineno}: reaches into {reached.id}.{node.attr}")
    return found


def test_the_package_keeps_its_import_rules() -> None:
    assert violations(SRC) == []


def test_every_module_is_seen() -> None:
    names = set(sources(SRC))
    assert {"statekeeper._sql.driver", "statekeeper._cli.sessions", "statekeeper.cli"} <= names
    edges = graph(SRC)
    assert "statekeeper._cli.db" in edges["statekeeper.cli"]
    assert "statekeeper._sql.driver" in edges["statekeeper._sql.runner"]


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_circle_check_can_fail(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_rules_can_fail(tmp_path: Path) -> None:
    package = tmp_path / "statekeeper"
    (package / "_sql" / "ops").mkdir(parents=True)
    (package / "_cli").mkdir()
    for folder in (package, package / "_sql", package / "_sql" / "ops", package / "_cli"):
        (folder / "__init__.py").write_text("")
    (package / "_cli" / "db.py").write_text("")
    (package / "_sql" / "driver.py").write_text("from .ops import store\n")
    (package / "_sql" / "ops" / "store.py").write_text(
        "from ..driver import run\nfrom ... import migrations\n"
    )
    (package / "migrations.py").write_text("from ._sql.ops.store import _hidden\n")
    (package / "json_file.py").write_text(
        "from ._cli import db\nfrom ._sql import driver\n\n"
        "def f(store, conn):\n    conn.execute('x')\n    return store._core\n"
    )
    found = "\n".join(violations(package))
    for broken in (
        "private name(s) _hidden",
        "operations never import",
        "nothing under _sql imports migrations",
        "only statekeeper.cli imports _cli",
        "never import _sql",
        "executes SQL",
        "reaches into store._core",
        "import circle",
    ):
        assert broken in found
