"""No import cycle (issue 42): between the project's packages, and between the modules of each,
built from the source's AST. An import inside a function counts; only imports under
`if TYPE_CHECKING:` are exempt. Layers import downward: modeling_shapca at the bottom, serving
and training above it, tools on top."""

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("modeling_shapca", "shapca_serving", "shapca_training", "shapca_app", "datasets_scripts")
MODULES = ("train", "push_to_hub")


def project_modules(root: Path = ROOT, packages=PACKAGES, modules=MODULES) -> dict[str, Path]:
    found = {name: root / f"{name}.py" for name in modules if (root / f"{name}.py").is_file()}
    for package in packages:
        for path in sorted((root / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _imported(module: str, path: Path, node, known) -> set[str]:
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:
            base = module.split(".") if path.stem == "__init__" else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        names = {target} | {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere but under `if TYPE_CHECKING:`)."""
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                  and "TYPE_CHECKING" in ast.unparse(node.test) for sub in ast.walk(node)}
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in exempt:
                graph[module] |= _imported(module, path, node, modules)
        graph[module].discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    top = {}
    for module, targets in graph.items():
        top.setdefault(module.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    return {name: targets - {name} for name, targets in top.items()}


def test_no_cycle_between_modules():
    assert cycles(import_graph(project_modules())) == []


def test_no_cycle_between_packages():
    assert cycles(package_graph(import_graph(project_modules()))) == []


def test_the_model_folder_imports_no_other_package():
    graph = package_graph(import_graph(project_modules()))
    assert graph["modeling_shapca"] == set()
    assert graph["shapca_serving"] == {"modeling_shapca"}  # serving never imports training or the builders


def test_a_cycle_through_a_function_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import x\n")
    (package / "b.py").write_text("def x():\n    from .a import y\n    return y\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n")
    (package / "d.py").write_text("from . import c\n")
    graph = import_graph(project_modules(tmp_path, packages=("pkg",), modules=()))
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg", "pkg.c"}
