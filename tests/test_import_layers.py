"""The project's own import graph: no cycles, counting the imports hidden inside functions too, no
function-level imports of the project's own modules, and two layers (issue 21): the definitions layer
(`empathy_dag.defs`, `empathy_dag.definitions`) imports the library layer, never the other way round.

A function-level import can hide a cycle: the modules load, but they depend on each other, so none can be
understood, tested or moved alone. Heavy third-party libraries (torch, transformers) may still be imported
lazily; this test looks only at `empathy_dag.*` imports. Pure `ast`, so it runs in well under a second."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "empathy_dag"

# The project's own modules import each other at module level only. Heavy third-party libraries (torch,
# transformers, peft, trl, lingua, matplotlib) stay lazy inside the functions that need them, which is
# what keeps `import empathy_dag.definitions` light (test_definitions_import_no_heavy_library).
FUNCTION_LEVEL_IMPORT_BUDGET = 0
DEFINITIONS_LAYER = ("empathy_dag.defs", "empathy_dag.definitions")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "_shipped" not in p.parts}


def _targets(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]
) -> list[str]:
    """The project modules one import statement loads (`from pkg import mod` names the module itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return [n for n in names if n in modules]


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """module -> project modules it imports (anywhere in the file), and the function-level ones as
    (module, target, line)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    function_level = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path, node, modules):
                    if target == module:
                        continue
                    graph[module].add(target)
                    if id(node) in inside:
                        function_level.append((module, target, node.lineno))
    return graph, function_level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_project_has_no_import_cycle_even_through_function_level_imports():
    graph, _ = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == [], (
        "import cycle (function-level imports included): move the shared code down a layer"
    )


def test_no_function_level_imports_of_the_project():
    _, function_level = import_graph()
    where = "\n".join(f"{m}:{line} -> {t}" for m, t, line in sorted(function_level))
    assert len(function_level) <= FUNCTION_LEVEL_IMPORT_BUDGET, (
        f"{len(function_level)} function-level imports of empathy_dag modules (budget "
        f"{FUNCTION_LEVEL_IMPORT_BUDGET}); import at module level instead:\n{where}"
    )


def _in_definitions_layer(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in DEFINITIONS_LAYER)


def test_the_library_layer_never_imports_the_definitions_layer():
    graph, _ = import_graph()
    assert any(_in_definitions_layer(m) for m in graph), "the walk found the definitions layer"
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if not _in_definitions_layer(m)
        for t in targets
        if _in_definitions_layer(t)
    )
    # The command line is the one entry point above both layers: it launches the definitions.
    upward = [edge for edge in upward if not edge.startswith("empathy_dag.cli ")]
    assert upward == [], "library modules importing the definitions layer:\n" + "\n".join(upward)


def test_definitions_import_no_heavy_library():
    """Loading the code location (the webserver, the daemon, every run's process) must not pay for torch."""
    import subprocess
    import sys

    heavy = (
        "torch",
        "transformers",
        "peft",
        "trl",
        "lingua",
        "matplotlib",
        "sentence_transformers",
        "bert_score",
    )
    code = f"import sys, empathy_dag.definitions; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"import empathy_dag.definitions loaded {out.stdout.strip()}"


# Library modules that still import Dagster, each for a reason that a later step can remove; the list may
# only shrink. `resources.py`: the resource classes (ModelStore, CorpusSources...) are `ConfigurableResource`s,
# and the Pipes external side (`pipes.py`) rebuilds a ModelStore. `train/config.py`: the training configs
# are Dagster `Config`s that the Pipes step rebuilds from JSON. `cli.py`, `demo.py`: the command line, which launches the
# definitions.
LIBRARY_MODULES_IMPORTING_DAGSTER = {
    "empathy_dag.resources",
    "empathy_dag.train.config",
    "empathy_dag.cli",
    "empathy_dag.demo",
}


def _imports_dagster(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and not node.level
            else []
        )
        if any(n == "dagster" or n.startswith("dagster.") for n in names):  # dagster_pipes, dagster_aws: fine
            return True
    return False


def test_the_library_layer_is_dagster_free_but_for_the_listed_modules():
    importing = {
        m for m, path in _modules().items() if not _in_definitions_layer(m) and _imports_dagster(path)
    }
    assert importing <= LIBRARY_MODULES_IMPORTING_DAGSTER, (
        f"library modules importing dagster: {sorted(importing - LIBRARY_MODULES_IMPORTING_DAGSTER)}; "
        "put the Dagster side in empathy_dag/defs/<stage>/"
    )
    assert importing == LIBRARY_MODULES_IMPORTING_DAGSTER, (
        f"{sorted(LIBRARY_MODULES_IMPORTING_DAGSTER - importing)} no longer import dagster: shrink the list"
    )
