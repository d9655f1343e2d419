"""The package's import structure: the plugin module is light, and no module imports itself back.

pytest imports ``pytest_saliency.plugin`` in every run of an environment where the package is
installed, so it must not pull in torch, captum or Ray. And an import cycle (two modules that
need each other, even through an import inside a function) works only as long as nobody reorders
the imports; every module should have one place in a layering.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_saliency"
HEAVY = ("torch", "captum", "torchvision", "ray")


def test_importing_the_plugin_loads_neither_torch_nor_captum() -> None:
    """A fresh interpreter, run from the repository root so that this checkout's package is the
    one imported."""
    probe = (
        "import json, sys\n"
        "import pytest_saliency.plugin\n"
        f"print(json.dumps({{'file': pytest_saliency.plugin.__file__, "
        f"'heavy': sorted(name for name in {HEAVY!r} if name in sys.modules)}}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    )
    loaded = json.loads(completed.stdout)
    assert Path(loaded["file"]) == PACKAGE / "plugin.py"
    assert loaded["heavy"] == []


# --- the graph of imports inside the package --------------------------------------------------


def module_name(path: Path) -> str:
    """``pytest_saliency.report.html`` for ``pytest_saliency/report/html.py``; a package's
    ``__init__.py`` is the package itself."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def type_checking_blocks(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``, which never run."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return guarded


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """The package's modules that ``name`` imports when it runs, at module level or inside a
    function, with the line of each import (``from . import x`` names the submodule ``x`` when
    there is one, else the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    guarded = type_checking_blocks(tree)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.extend((target, node.lineno) for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the (first) import}."""
    modules = package_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imported_modules(name, path, modules):
            edges.setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module: each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``a:12 -> b`` steps (``12``:
    the line of ``a`` that imports ``b``)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in graph[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                path.reverse()
                steps = list(zip(path, path[1:] + [start], strict=True))
                return [f"{a}:{graph[a][b]} -> {b}" for a, b in steps]
            if target in members and target not in previous:
                previous[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # a component of two or more always has one


def test_the_import_graph_sees_relative_lazy_and_package_imports() -> None:
    """The graph is built right: edges this package is known to have, of each import form."""
    graph = import_graph()
    assert "pytest_saliency.collect" in graph["pytest_saliency.plugin"]  # from .collect import ...
    assert "pytest_saliency.engine" in graph["pytest_saliency.session"]  # inside a function
    assert "pytest_saliency.metrics.shared_interest" in graph["pytest_saliency.streaming"]  # from .metrics import x
    assert all(target in graph for edges in graph.values() for target in edges)


def test_no_import_cycle_inside_the_package() -> None:
    """Module-level and function-level imports count (the ones under ``if TYPE_CHECKING:`` never
    run and do not)."""
    graph = import_graph()
    cycles = [" ; ".join(one_cycle(graph, component)) for component in strongly_connected(graph)]
    assert not cycles, "import cycles inside pytest_saliency/:\n" + "\n".join(cycles)


# --- the layering between the packages --------------------------------------------------------

LAYERS: dict[str, set[str]] = {
    # a package (or top-level module) -> what else of pytest_saliency it may import at run time;
    # "pkg.module" allows one module of a package. The README's "Package layout" shows this table.
    "pytest_saliency": set(),
    "_constants": set(),
    "_io": set(),
    "errors": set(),
    "signals": set(),
    "memory": {"errors"},
    "tokens": {"errors"},
    "speed": {"errors"},
    "memo": set(),
    "metrics": {"_constants", "_io", "errors", "memo", "tokens"},
    "spec": {"_constants", "_io", "errors", "loaders.readers", "loaders.annotations", "loaders.model_sources"}
    | {"loaders.object_annotations"},
    "loaders": {"_constants", "_io", "errors", "memory", "metrics", "speed", "spec.schema", "spec.validate"},
    "targets": {"errors", "loaders", "metrics"},
    "attention": {"errors", "tokens"},
    "attribution": {"attention", "errors", "loaders", "memory", "metrics", "spec", "targets", "tokens"},
    "streaming": {"attribution", "errors", "loaders", "memory", "metrics", "spec", "speed", "targets"},
    "baselines": {"pytest_saliency", "_constants", "_io", "errors", "metrics", "spec"},
    "report": {"pytest_saliency", "_constants", "_io", "errors", "memo", "metrics", "spec.schema"},
    # checks reach the baselines only through their interface, and report only for the document's types
    "checks": {"_constants", "_io", "attribution", "errors", "loaders", "memory", "metrics", "spec", "streaming"}
    | {"baselines.settings", "baselines.reference", "memo", "report.results", "targets"},
    "dispatch": {"checks", "loaders", "streaming"},
    "cache": {"_constants", "_io", "streaming"},
    "engine": {
        "_io",
        "baselines.store",
        "cache",
        "dispatch",
        "errors",
        "loaders",
        "report.boxes",
        "report.format",
        "spec",
        "targets",
        "streaming",
    },
    "cluster": {"cache", "dispatch", "errors", "streaming"},
    "train": {"metrics"},
}
"""What each layer may use; the plugin's own modules (plugin, collect, session, cli) use any."""
TOP = {"plugin", "collect", "session", "cli"}


def layer_of(module: str) -> str:
    """``checks`` for ``pytest_saliency.checks.drift``; ``pytest_saliency`` for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_belongs_to_a_layer() -> None:
    assert {layer_of(name) for name in package_modules()} <= set(LAYERS) | TOP


def test_each_layer_imports_only_what_it_may() -> None:
    """Every run-time import between two layers is one the table allows (the whole layer, or the
    named module): e.g. checks reach the baselines only through ``baselines.reference``."""
    broken = []
    for module, edges in import_graph().items():
        layer = layer_of(module)
        if layer in TOP:
            continue
        for target, line in edges.items():
            other = layer_of(target)
            inner = target.removeprefix("pytest_saliency.")
            if other != layer and other not in LAYERS[layer] and inner not in LAYERS[layer]:
                broken.append(f"{module}:{line} imports {target}")
    assert not broken, "imports the layering does not allow:\n" + "\n".join(broken)


def test_the_layering_check_sees_a_forbidden_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is not vacuous: a check that imported the baselines' store would be refused."""
    graph = import_graph()
    graph["pytest_saliency.checks.drift"]["pytest_saliency.baselines.store"] = 1
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match=r"checks.drift:1 imports pytest_saliency.baselines.store"):
        test_each_layer_imports_only_what_it_may()
