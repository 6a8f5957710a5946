"""The import structure of model/ and hpo/, read with ast: layers, no circles.

hpo/ is layered: scheduling < service < readers < report < cli. A module may
import its own layer and the ones below it, never one above; model/ never
imports hpo/. Imports inside functions count too (a circle hidden in a function
is still a circle); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("scheduling", "service", "readers", "report", "cli")
# Circles that another change removes; each entry names the change. A stale entry warns.
KNOWN_CYCLES = {
    frozenset({"model.cache", "model.data"}),  # issue 12: image decoding moves out of both
}


def module_names() -> dict[str, Path]:
    names = {}
    for package in ("model", "hpo"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of this repository that ``name`` imports (anywhere but TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # import a.b.c of a package: a.b
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] in ("model", "hpo"):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "hpo" and len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "hpo.scheduling.rungs" in graph["hpo.scheduling.spec"]
    assert "hpo.service.db" in graph["hpo.service.coordination"]  # from hpo.service import db
    assert "model.train" in graph["hpo.service.trial_runs"]  # a function-local import counts
    assert len(graph) > 40


def test_model_never_imports_hpo():
    graph = import_graph()
    offenders = {m: sorted(t for t in targets if t.startswith("hpo"))
                 for m, targets in graph.items() if m.startswith("model")}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_layer_imports_one_above_it():
    graph = import_graph()
    upward = [(m, t) for m, targets in graph.items() for t in targets
              if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert not upward, upward


def test_scheduling_is_pure():
    """Study files and policies: no storage, no Optuna, no torch."""
    for path in sorted((REPO / "hpo" / "scheduling").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        roots |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom)}
        assert not roots & {"optuna", "sqlalchemy", "torch", "numpy", "pandas"}, path


def test_no_import_circles():
    graph = import_graph()
    cycles = set()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.add(frozenset(stack[stack.index(target):]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    for stale in KNOWN_CYCLES - cycles:
        warnings.warn(f"test_layers: {sorted(stale)} is no longer a circle; drop it from KNOWN_CYCLES")
    assert not cycles - KNOWN_CYCLES, sorted(sorted(c) for c in cycles - KNOWN_CYCLES)
