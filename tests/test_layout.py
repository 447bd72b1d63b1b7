"""The layout (issue 32): `modeling_shapca/` is exactly the remote-code closure of its
configuration, modeling, processing and pipeline files, knows nothing of training, building or
publishing, and a saved model carries exactly that closure."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from transformers.dynamic_module_utils import get_relative_import_files

from tests.conftest import ROOT, task_model

PACKAGE = ROOT / "modeling_shapca"
ENTRY_FILES = ("configuration_shapca.py", "modeling_shapca.py", "processing_shapca.py", "pipeline_shapca.py")
TOOLS = ("shapca_training", "shapca_serving", "datasets_scripts", "push_to_hub", "model_card", "train")


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
    model = task_model(task)
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
