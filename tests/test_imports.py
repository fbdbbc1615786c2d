"""The package's shape: every module imports on its own, the import graph has no cycle, the harness
never imports the server, and only one room each imports ``mcp`` and ``discord``."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dvm"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Every dvm module ``path`` imports, at module level or inside a function (both count: a function-
    level import is still a dependency, and hiding a cycle behind one is what this test forbids).
    Imports under ``if TYPE_CHECKING:`` are left out: they are annotations, never executed."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    known = set(MODULES)
    return {name for name in found if name in known and name != this}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def _parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first: those edges are implicit, not listed."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    edges = {m: {d for d in deps if d not in _parents(m)} for m, deps in graph().items()}
    # a package's __init__ importing its own submodules is how it offers them: not a cycle in itself
    edges = {m: {d for d in deps if not d.startswith(m + ".")} if m in _packages() else deps for m, deps in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def _packages() -> set[str]:
    return {module_name(p) for p in PACKAGE.rglob("__init__.py")}


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_harness_never_imports_the_server():
    offenders = {m: sorted(d for d in deps if d.startswith("dvm.server"))
                 for m, deps in graph().items() if m.startswith("dvm.harness")}
    assert not {m: d for m, d in offenders.items() if d}


def _third_party_importers(top: str) -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == top or n.startswith(top + ".") for n in names):
                found.add(module_name(path))
    return found


def test_mcp_and_discord_each_stay_in_one_room():
    assert all(m.startswith("dvm.server.app") for m in _third_party_importers("mcp")), _third_party_importers("mcp")
    assert all(m.startswith("dvm.server.voice") for m in _third_party_importers("discord")), _third_party_importers("discord")


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_on_its_own(name):
    """Fresh import of each module with no other dvm module loaded first (third-party ones stay cached)."""
    saved = {k: v for k, v in sys.modules.items() if k == "dvm" or k.startswith("dvm.")}
    for key in saved:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    finally:
        for key in [k for k in sys.modules if k == "dvm" or k.startswith("dvm.")]:
            del sys.modules[key]
        sys.modules.update(saved)
