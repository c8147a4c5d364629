"""The package's layering, read from the source with ``ast`` (nothing is imported).

- no import cycles between geoseg's top-level units (subpackages and shared modules);
- shared modules never import a stage package;
- prediction, vector and scoring never import training;
- no module over 500 lines.

Every import counts, also the lazy ones inside functions and under ``TYPE_CHECKING``:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "geoseg"
STAGES = {"prediction", "vector", "scoring", "training"}
SHARED = {"io", "classmap", "metrics", "errors", "progress", "_atomic", "_raster"}
MAX_LINES = 500

#: Unit -> unit imports allowed although they close a cycle, with the reason.
CYCLE_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Modules allowed over MAX_LINES, with the reason (none today).
LONG_EXCEPTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every geoseg module ``name`` imports (absolute and relative, at any depth)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names  # ``from pkg import mod``
                         if f"{mod}.{a.name}" in MODULES)
    return {m for m in found if m == "geoseg" or m.startswith("geoseg.")}


MODULES = _modules()


def _unit(module: str) -> str:
    """Top-level unit of a module: ``geoseg.scoring.labels.raster`` -> ``scoring``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "geoseg"


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, targets in IMPORTS.items():
        src = _unit(name)
        if src == "geoseg":  # the root re-exports the verbs lazily: above every stage
            continue
        for t in targets:
            dst = _unit(t)
            if dst not in (src, "geoseg") and (src, dst) not in CYCLE_EXCEPTIONS:
                graph[src].add(dst)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_source_is_found() -> None:
    assert {"geoseg.io", "geoseg.training.loop", "geoseg.scoring.labels"} <= set(MODULES)
    assert "geoseg.scoring.labels.grid" in IMPORTS["geoseg.scoring.labels.raster"]


def test_no_import_cycles_between_units() -> None:
    cycle = _find_cycle(_unit_graph())
    assert cycle is None, "import cycle between geoseg's units: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_cycle_exceptions_are_still_needed() -> None:
    for src, dst in CYCLE_EXCEPTIONS:
        assert any(_unit(n) == src and any(_unit(t) == dst for t in ts)
                   for n, ts in IMPORTS.items()), f"drop the exception {src} -> {dst}"


@pytest.mark.parametrize("shared", sorted(SHARED))
def test_shared_modules_never_import_a_stage(shared: str) -> None:
    bad = sorted(t for t in IMPORTS[f"geoseg.{shared}"] if _unit(t) in STAGES)
    assert not bad, f"geoseg.{shared} imports stage modules {bad}"


@pytest.mark.parametrize("stage", ["prediction", "vector", "scoring"])
def test_inference_stages_never_import_training(stage: str) -> None:
    bad = sorted(f"{n} -> {t}" for n, ts in IMPORTS.items() if _unit(n) == stage
                 for t in ts if _unit(t) == "training")
    assert not bad, f"{stage} imports training: {bad}"


def test_no_module_over_500_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES
            and name not in LONG_EXCEPTIONS}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_license_file_is_the_apache_2_text_pyproject_declares() -> None:
    repo = ROOT.parent
    declared = (repo / "pyproject.toml").read_text()
    text = (repo / "LICENSE").read_text()
    assert 'license = { text = "Apache-2.0" }' in declared
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202


def test_readme_says_how_to_install_a_cpu_only_torch() -> None:
    text = (ROOT.parent / "README.md").read_text()
    quick_start = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick"))]
    assert "--index-url https://download.pytorch.org/whl/cpu" in quick_start
    assert "not the set-up the tests" in quick_start
