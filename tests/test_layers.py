"""The project's layers and its import graph, read from the source with ``ast`` (every import,
at module level or inside a function; ``if TYPE_CHECKING:`` blocks marked).

Layers: ``gpumesh`` (shared spec types, protocol, SDK) is imported by ``coordinator`` and
``provider_node``, which never import each other, and imports neither. The command line
(``gpumesh.cli``, ``gpumesh.__main__``) launches both processes: it may import them, inside
the command that needs them only (so the SDK and ``gpumesh --help`` stay free of them).

No import cycles among the project's modules, counting imports inside functions; an import
under ``TYPE_CHECKING`` is not run and is left out of that graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpumesh", "coordinator", "provider_node")
ENTRY = ("gpumesh.cli", "gpumesh.__main__")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the nearest project module for ``from m import name``)
    path: Path
    line: int
    in_function: bool
    type_checking: bool


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    """Every import in one module's source, resolved against the ``known`` modules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def resolve(name: str) -> str:
        while name and name not in known and "." in name:
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, resolve(alias.name), path, child.lineno, in_function, type_checking)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    full = f"{source}.{alias.name}"
                    yield Import(module, full if full in known else resolve(source), path, child.lineno,
                                 in_function, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    yield from visit(ast.Module([stmt], []), in_function, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module([stmt], []), in_function, type_checking)
            else:
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from visit(child, inner, type_checking)

    yield from visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)


def project_imports(root: Path) -> list[Import]:
    known = modules(root)
    return [imp for name, path in known.items() for imp in imports(name, path, known)
            if imp.target.split(".")[0] in PACKAGES]


def _layer(module: str) -> str:
    if any(module == e or module.startswith(e + ".") for e in ENTRY):
        return "entry"
    return module.split(".")[0]


def layer_violations(root: Path) -> list[str]:
    """``file:line: source imports target (why)`` for each import against the layer rule."""
    out: set[tuple[str, int, str]] = set()
    for imp in project_imports(root):
        src, dst = _layer(imp.source), imp.target.split(".")[0]
        if dst == "gpumesh" or dst == src:
            continue
        if src == "entry":
            if imp.in_function and not imp.type_checking:
                continue
            why = "the command line imports the processes it launches inside the command only"
        elif src == "gpumesh":
            why = "gpumesh is shared by both sides and imports neither"
        else:
            why = f"{src} and {dst} meet only in gpumesh"
        out.add((str(imp.path.relative_to(root)), imp.line, f"{imp.source} imports {imp.target} ({why})"))
    return [f"{path}:{line}: {what}" for path, line, what in sorted(out)]


def import_cycles(root: Path) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected set of modules in the run-time import
    graph (TYPE_CHECKING imports left out), found with Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for imp in project_imports(root):
        if not imp.type_checking and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        components.append(sorted(members))
    return [_cycle_in(graph, set(c), c[0]) for c in components]


def _cycle_in(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one strongly connected set."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dst in sorted(graph.get(node, ())):
                if dst not in members:
                    continue
                if dst == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if dst not in parent:
                    parent[dst] = node
                    nxt.append(dst)
        frontier = nxt
    raise AssertionError("not strongly connected")


# ---- the project ------------------------------------------------------------------------------------


def test_layers_run_one_way():
    bad = layer_violations(ROOT)
    assert not bad, "cross-layer imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = import_cycles(ROOT)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ---- the checks themselves, on a small tree -----------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


def test_a_cross_layer_import_is_named_by_file_and_line_even_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "coordinator/core.py": "import json\n\n\ndef check():\n    from provider_node.workloads import spec\n",
        "provider_node/workloads/__init__.py": "",
        "provider_node/workloads/spec.py": "from gpumesh import jobspec\n",
        "gpumesh/jobspec.py": "",
        "gpumesh/sdk.py": "from coordinator.core import check\n",
        "gpumesh/cli/__init__.py": "",
        "gpumesh/cli/main.py": "def serve():\n    from coordinator import core\n",
        "gpumesh/cli/eager.py": "from provider_node.workloads import spec\n",
    })
    got = layer_violations(root)
    assert [g.split(" (")[0] for g in got] == [
        "coordinator/core.py:5: coordinator.core imports provider_node.workloads.spec",
        "gpumesh/cli/eager.py:1: gpumesh.cli.eager imports provider_node.workloads.spec",
        "gpumesh/sdk.py:1: gpumesh.sdk imports coordinator.core",
    ]


def test_a_cycle_is_found_through_function_level_imports_but_not_type_checking_ones(tmp_path):
    root = _tree(tmp_path, {
        "coordinator/core.py": "from coordinator import metrics\n",
        "coordinator/metrics.py": "def read():\n    from . import store\n",
        "coordinator/store.py": "import coordinator.core\n",
        "coordinator/models.py": "import typing\nif typing.TYPE_CHECKING:\n    from coordinator.rep import R\n",
        "coordinator/rep.py": "from coordinator.models import M\n",
    })
    assert import_cycles(root) == [["coordinator.core", "coordinator.metrics", "coordinator.store", "coordinator.core"]]
