"""The layout (issue 32): `modeling_shapca/` is exactly the remote-code closure of its
configuration, modeling, processing and pipeline files, knows nothing of training, building or
publishing, and a saved model carries exactly that closure."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from transformers.dynamic_module_utils import get_relative_import_files

from tests.helpers import ROOT, tiny_model

PACKAGE = ROOT / "modeling_shapca"
ENTRY_FILES = ("configuration_shapca.py", "modeling_shapca.py", "processing_shapca.py", "pipeline_shapca.py")
TOOLS = ("shapca_training", "shapca_serving", "datasets_scripts", "push_to_hub", "model_card", "train")


def module_defs(path: Path):
    """A module's top-level definitions (name -> node), its relative imports (name -> (module,
    name or None for a module)) and its other top-level statements."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defs, imports, loose = {}, {}, []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names == ["__all__"]:
                continue
            for n in names:
                defs[n] = node
            if not names:
                loose.append(node)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            for a in node.names:
                if node.module:
                    imports[a.asname or a.name] = (node.module, a.name)
                else:
                    imports[a.asname or a.name] = (a.name, None)  # from . import module
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        else:
            loose.append(node)
    # imports inside functions count too (relative ones)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node not in tree.body:
            for a in node.names:
                imports.setdefault(a.asname or a.name, (node.module, a.name) if node.module else (a.name, None))
    return defs, imports, loose


def references(node, imports):
    """The local names a node refers to, and the `(module, name)` pairs it reaches through
    imports."""
    local, remote = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            local.add(sub.id)
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            target = imports.get(sub.value.id)
            if target and target[1] is None:
                remote.add((target[0], sub.attr))
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.count(".") == 1:
            module, _, name = sub.value.partition(".")  # "modeling_shapca.ShapCAForTokenClassification" in an auto_map
            remote.add((module, name))
    for name in local:
        if name in imports and imports[name][1] is not None:
            remote.add(imports[name])
    return local, remote


def unreachable(roots, package: Path = PACKAGE) -> list[tuple[str, str]]:
    """`(module, name)` of every top-level definition in `package` that the `roots` do not
    reach: following names, relative imports (also inside functions) and `module.Class` strings
    (an `auto_map`), with the module-level statements of each reached module (registration).
    `__init__.py` and `__all__` do not count."""
    modules = {p.stem: module_defs(p) for p in package.glob("*.py") if p.stem != "__init__"}
    seen, todo, reached_modules = set(), list(roots), set()
    while todo:
        module, name = todo.pop()
        if (module, name) in seen or module not in modules:
            continue
        defs, imports, loose = modules[module]
        if name not in defs:
            if name in imports and imports[name][1] is not None:
                todo.append(imports[name])
            continue
        seen.add((module, name))
        nodes = [defs[name]]
        if module not in reached_modules:
            reached_modules.add(module)
            nodes += loose
        for node in nodes:
            local, remote = references(node, imports)
            todo += [(module, n) for n in local if n in defs]
            todo += list(remote)
    return sorted((m, n) for m, (defs, _, _) in modules.items() for n in defs if (m, n) not in seen)


def saved_roots(tmp_path: Path, processor) -> set[tuple[str, str]]:
    """What a downloaded model runs first: the classes of a saved config's and processor's
    `auto_map`, and the registered pipelines, for every task."""
    import json

    roots = set()
    for task in ("ner", "mre", "mjere"):
        folder = tmp_path / task
        tiny_model(task).save_pretrained(folder)
        processor.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        names = list(config["auto_map"].values())
        names += [entry["impl"] for entry in config.get("custom_pipelines", {}).values()]
        names += list(json.loads((folder / "processor_config.json").read_text()).get("auto_map", {}).values())
        roots |= {tuple(name.split(".")) for name in names}
    return roots


def closure() -> set[str]:
    files = set()
    for name in ENTRY_FILES:
        files |= {name, *(Path(p).name for p in get_relative_import_files(str(PACKAGE / name)))}
    return files


def test_the_folder_is_exactly_the_closure():
    assert {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"} == closure()
    assert {"engine.py", "torch_runner.py", "records.py"} <= closure()
    assert not any(p.is_dir() and p.name != "__pycache__" for p in PACKAGE.iterdir())  # flat: no sub-packages


def test_nothing_in_it_names_the_tools():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 1 or node.module.split(".")[0] not in TOOLS + ("modeling_shapca",), \
                    f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in TOOLS for a in node.names), path.name
        text = path.read_text(encoding="utf-8")
        for tool in ("shapca_training", "datasets_scripts", "push_to_hub", "model_card.py"):
            assert tool not in text, f"{path.name} names {tool}"


def test_the_model_does_not_import_its_pipeline():
    tree = ast.parse((PACKAGE / "modeling_shapca.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "pipeline_shapca" not in imported and "engine" in imported


@pytest.mark.parametrize("task", ["ner", "mjere"])
def test_a_saved_model_carries_exactly_the_closure(task, tmp_path, processor):
    model = tiny_model(task)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.glob("*.py")} == closure()


def test_serving_imports_without_torch():
    """The serving package (predictor, CLI) imports modeling_shapca's torch-free modules only."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "import shapca_serving, shapca_serving.predict\n"
            "from shapca_serving import ShapCAOnnxPredictor\n"
            "from modeling_shapca.engine import InferenceEngine\n"
            "assert issubclass(ShapCAOnnxPredictor, InferenceEngine)\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_definition_is_reached_from_what_a_downloaded_model_runs(tmp_path, processor):
    """Issue 42: `modeling_shapca/` holds what a downloaded model runs, definition by definition."""
    roots = saved_roots(tmp_path, processor)
    assert ("pipeline_shapca", "ShapCAPipeline") in roots and ("processing_shapca", "ShapCAProcessor") in roots
    assert unreachable(roots) == []


def test_the_reachability_check_finds_a_dead_definition(tmp_path):
    import shutil

    copy = tmp_path / "modeling_shapca"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "grids.py").open("a") as handle:
        handle.write("\n\ndef only_tests_call_this():\n    return IGNORE_INDEX\n")
    roots = {("configuration_shapca", "ShapCAConfig"), ("modeling_shapca", "ShapCAForTokenClassification"),
             ("modeling_shapca", "ShapCAForWordPairExtraction"), ("processing_shapca", "ShapCAProcessor"),
             ("pipeline_shapca", "ShapCAPipeline")}
    assert unreachable(roots, copy) == [("grids", "only_tests_call_this")]
    # a definition only unreachable code uses is unreachable too
    with (copy / "grids.py").open("a") as handle:
        handle.write("\n\ndef helper_of_dead_code():\n    return 1\n\n\ndef dead():\n    return helper_of_dead_code()\n")
    assert unreachable(roots, copy) == [("grids", "dead"), ("grids", "helper_of_dead_code"),
                                        ("grids", "only_tests_call_this")]
