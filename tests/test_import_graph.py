"""The import graph of ``src/keyhouse``: layered, and without a cycle.

Read with ``ast``, not by importing: every ``import`` and ``from`` statement
counts, including those under ``if TYPE_CHECKING:`` and inside functions (a
cycle that only mypy or a late import walks is still a cycle in the design).

* No cycle at all between modules.
* The lower layers (``db/``, ``config``, ``errors``, ``ids``, ``logs``,
  ``timeutil``, ``models``) import no domain package.
* ``keys`` and ``limits`` import each other in one direction only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "keyhouse"

LOWER_LAYERS = (
    "keyhouse.db",
    "keyhouse.config",
    "keyhouse.errors",
    "keyhouse.ids",
    "keyhouse.logs",
    "keyhouse.timeutil",
    "keyhouse.models",
)
DOMAINS = (
    "keyhouse.keys",
    "keyhouse.limits",
    "keyhouse.accounts",
    "keyhouse.audit",
    "keyhouse.environments",
    "keyhouse.idempotency",
    "keyhouse.verify",
)

Graph = dict[str, set[str]]


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / ROOT).rglob("*.py"))}


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from`` statement names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The keyhouse modules ``module`` imports, wherever the statement stands."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node)
            for alias in node.names:
                # ``from keyhouse.x import y``: module keyhouse.x.y if there is one.
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {name for name in found if name in known and name != module}


def build_graph(src: Path = SRC) -> Graph:
    modules = modules_of(src)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def in_package(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def package_edges(graph: Graph, source: str, target: str) -> list[str]:
    return sorted(
        f"{module} -> {imported}"
        for module, imported_set in graph.items()
        if in_package(module, [source])
        for imported in imported_set
        if in_package(imported, [target])
    )


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_the_graph_is_read(graph: Graph) -> None:
    # A walk that finds nothing passes every check below: make sure it finds.
    assert "keyhouse.runtime" in graph
    assert "keyhouse.db.engine" in graph["keyhouse.runtime"]
    assert "keyhouse.keys.cache" in graph["keyhouse.runtime"]


def test_no_import_cycle(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_lower_layers_import_no_domain(graph: Graph) -> None:
    wrong = sorted(
        f"{module} -> {imported}"
        for module, imported_set in graph.items()
        if in_package(module, LOWER_LAYERS)
        for imported in imported_set
        if in_package(imported, DOMAINS)
    )
    assert wrong == [], "a lower layer imports a domain package:\n" + "\n".join(wrong)


def test_keys_and_limits_depend_one_way(graph: Graph) -> None:
    keys_to_limits = package_edges(graph, "keyhouse.keys", "keyhouse.limits")
    limits_to_keys = package_edges(graph, "keyhouse.limits", "keyhouse.keys")
    assert not (keys_to_limits and limits_to_keys), (
        "keys and limits import each other:\n" + "\n".join(keys_to_limits + limits_to_keys)
    )


class TestTheCheckerItself:
    """Each check can fail: a graph with the fault is caught."""

    def test_finds_a_cycle(self) -> None:
        cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
        assert cycle is not None
        assert cycle[0] == cycle[-1]
        assert set(cycle) == {"a", "b", "c"}

    def test_finds_no_cycle_in_a_dag(self) -> None:
        assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None

    def test_reads_type_checking_and_function_imports(self, tmp_path: Path) -> None:
        pkg = tmp_path / ROOT
        (pkg / "db").mkdir(parents=True)
        (pkg / "keys").mkdir()
        for init in (pkg, pkg / "db", pkg / "keys"):
            (init / "__init__.py").write_text("")
        (pkg / "db" / "engine.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from keyhouse.keys.cache import KeyCache\n"
        )
        (pkg / "keys" / "cache.py").write_text(
            "def f() -> None:\n    from keyhouse.db import engine\n"
        )
        (pkg / "keys" / "verify.py").write_text("from . import cache\nfrom .. import db\n")
        graph = build_graph(tmp_path)
        assert graph["keyhouse.db.engine"] == {"keyhouse.keys.cache"}
        assert graph["keyhouse.keys.cache"] == {"keyhouse.db.engine"}
        assert graph["keyhouse.keys.verify"] == {"keyhouse.keys.cache", "keyhouse.db"}
        assert find_cycle(graph) is not None
