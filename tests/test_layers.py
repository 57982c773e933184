"""The project's imports point one way and form no cycle.

Layers, lowest first: core <- runtime <- retrieval <- service <- training, evaluation <- webapp <- app.
A module may import its own package and any package of a lower layer (training and evaluation
share a layer, as pipeline and evaluation need each other's results only through files: they may
import each other's functions, but not in a cycle). Imports inside functions count too: a lazy
import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"core": 0, "runtime": 1, "retrieval": 2, "service": 3, "training": 4, "evaluation": 4, "webapp": 5, "app": 6}
SOURCE_DIRS = [p for p in LAYERS if (ROOT / p).is_dir()] + ["app.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods = {}
    for entry in SOURCE_DIRS:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            mods[module_name(f)] = f
    return mods


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules imported by one file (absolute and relative imports, at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        # the longest project module that `target` names or lies in
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                add(full if full in modules else base)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules, if there is any (iterative DFS with colours)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(child) == GREY:
                return path[path.index(child):] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for src, targets in graph.items():
        packages.setdefault(src.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    for name, targets in packages.items():
        targets.discard(name)
    return packages


def test_every_project_package_has_a_layer():
    top = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} - {"tests", "benchmarks"}
    assert top <= set(LAYERS), f"packages without a layer in this test: {sorted(top - set(LAYERS))}"


def test_no_upward_imports():
    upward = sorted(f"{src} -> {dst}" for src, targets in import_graph().items() for dst in targets
                    if layer(dst) > layer(src))
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_between_packages():
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    # The test above must be able to fail: a cycle and an upward edge are found in a toy graph.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("service.engine") > layer("retrieval.faq")
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from service.engine import Assistant\n")
    assert imports_of(fake, "retrieval.m", {"service.engine": fake, "retrieval.m": fake}) == {"service.engine"}


@pytest.mark.parametrize("package", ["core", "runtime", "retrieval"])
def test_lower_layers_do_not_load_the_web_stack(package):
    graph = import_graph()
    mods = [m for m in graph if m.split(".")[0] == package]
    assert mods
    for m in mods:
        assert all(layer(d) <= LAYERS[package] for d in graph[m]), m
