"""The dependency rules of shared/STYLE.md, read from the source with `ast`: no import cycle among rag/ modules,
and rag/ imports nothing from ingest, ui or eval (the CLI may, inside a command body).

Imports inside function bodies count for cycles too: a deferred import does not fail at load time, but the two
modules still depend on each other (the generation <-> generation_openai and factory <-> collections cycles this
test was written against were both deferred on one side, so a module-level-only check passed on them). Imports
under `if TYPE_CHECKING:` count as well. A submodule's implicit load of its own package (`rag.generation.base`
loads `rag.generation` first) is not an edge: a package re-exporting its submodules is not a cycle.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE_RAG = ("ingest", "ui", "eval")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rag_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / "rag").rglob("*.py"))}


def _imports(path: Path, module: str, *, module_level_only: bool) -> list[tuple[str, int]]:
    """(imported module, line) for each import in the file; with `module_level_only`, none from function bodies."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.append((base, child.lineno))
                # `from rag.store import base` imports the submodule rag.store.base.
                found.extend((f"{base}.{alias.name}", child.lineno) for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _rag_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {target for target, _ in _imports(path, name, module_level_only=False) if target in modules}
        # A submodule's own package (and its ancestors) is loaded implicitly, not imported by choice.
        graph[name] = {t for t in targets if t != name and not name.startswith(f"{t}.")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := dfs(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)) is not None:
            return cycle
    return None


def test_no_import_cycle_among_rag_modules() -> None:
    graph = _rag_graph(_rag_modules())
    assert len(graph) > 20, f"too few rag modules found under {ROOT / 'rag'}: {sorted(graph)}"
    assert any(graph.values()), "no imports between rag modules found: the walk is broken"
    cycle = find_cycle(graph)
    assert cycle is None, (
        f"import cycle among rag modules: {' -> '.join(cycle)}; move the shared piece into a module both can "
        "import (shared result types go in rag/types.py, a builder next to what it builds), or pass it in"
    )


def test_rag_imports_nothing_from_ingest_ui_or_eval() -> None:
    violations = []
    for name, path in _rag_modules().items():
        cli = name == "rag.cli" or name.startswith("rag.cli.") or name.startswith("rag.cli_")
        reported: set[int] = set()
        for target, line in _imports(path, name, module_level_only=cli):
            if target.split(".")[0] in OUTSIDE_RAG and line not in reported:
                reported.add(line)  # one line per import statement, not one per imported name
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not violations, (
        "rag must not depend on ingest, ui or eval (only the CLI may, inside a command body); pass what it needs "
        "in from the entry point instead:\n" + "\n".join(violations)
    )


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, False),  # a diamond is not a cycle
    ],
)
def test_find_cycle(graph: dict[str, set[str]], has_cycle: bool) -> None:
    cycle = find_cycle(graph)
    assert (cycle is not None) == has_cycle
    if cycle is not None:
        assert cycle[0] == cycle[-1] and all(b in graph[a] for a, b in itertools.pairwise(cycle))
