"""The package as a user gets it: a wheel (not editable) installed in a fresh virtual
environment, used from an empty folder where the checkout is not importable. The console
scripts train on the shipped data by config name, predict, stage for the Hub; the staged folder
loads with `pipeline(<its card's pipeline_tag>, ...)`; the Space folder starts as a Space
starts it. Dependencies come from the test's own environment (a path entry), so nothing is
downloaded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY_VISION

TASK_CONFIGS = {"ner": "twitter2015-minilm", "mre": "mnre-minilm", "mjere": "mjere-minilm"}
INPUTS = {"ner": {"text": "Kevin Durant joins the Warriors"},
          "mre": {"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]]},
          "mjere": {"text": "Kevin Durant joins the Warriors"}}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(env bin folder, environment variables): the wheel installed in a new venv."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(base / "dist"), str(ROOT)], check=True, cwd=base, capture_output=True)
    (wheel,) = (base / "dist").glob("shapca-*.whl")
    env_dir = base / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (torch, transformers, ...) of this test's environment, after the wheel's own files
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
               PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}")
    return env_dir / "bin", env


def run(bin_dir: Path, env: dict, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_installed_package_comes_from_the_wheel(installed, tmp_path):
    bin_dir, env = installed
    out = run(bin_dir, env, tmp_path, "python", "-c",
              "import modeling_shapca, shapca_training.resources as r; print(modeling_shapca.__file__); "
              "print(r.resource('data', 'twitter2015', 'train.txt')); print(r.resource('model_card.md'))").stdout
    assert str(ROOT) not in out and "site-packages" in out
    assert all(Path(line).exists() for line in out.splitlines())
    start = time.perf_counter()
    help_text = run(bin_dir, env, tmp_path, "shapca-train", "--help").stdout
    assert time.perf_counter() - start < 30  # measured ~5 s alone on 2 cores (docs/benchmarks.md)
    options = help_text[help_text.index("\noptions:"):]
    groups = [line for line in options.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert groups == ["options:", "Data and run control:",
                          "Shap-CA model (ShapCAConfig fields; unset keeps the config default):", "Backbones:",
                          "Trainer (transformers.TrainingArguments):"]


def side_by_side(bin_dir: Path, env: dict, commands: dict) -> dict[str, str]:
    """Run `{task: (folder, command...)}` at once (one thread each); their outputs, each checked."""
    processes = {task: subprocess.Popen([str(bin_dir / command[0]), *command[1:]], cwd=work, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for task, (work, *command) in commands.items()}
    outputs = {}
    for task, process in processes.items():
        outputs[task] = process.communicate(timeout=600)[0]
        assert process.returncode == 0, f"{commands[task][1]} ({task}) failed:\n{outputs[task][-3000:]}"
    return outputs


@pytest.fixture(scope="module")
def used(installed, tiny_text_model, tmp_path_factory):
    """`{task: (folder, the staged pipeline's records)}` after, for each task in its own empty
    folder (the three tasks side by side): `shapca-train CONFIG_NAME`, `shapca-predict`,
    `shapca-push --dry-run`, then `pipeline(<the staged card's pipeline_tag>, ...)` in a fresh
    process."""
    bin_dir, env = installed
    work = {task: tmp_path_factory.mktemp(f"empty-{task}") for task in TASK_CONFIGS}
    side_by_side(bin_dir, env, {task: (work[task], "shapca-train", config, "--text_model", tiny_text_model,
                                       "--vision_config", TINY_VISION, "--projection_dim", "16", "--fusion_dim", "16",
                                       "--fusion_heads", "2", "--hidden_dim", "16", "--max_train_samples", "16",
                                       "--max_eval_samples", "8", "--max_steps", "2", "--eval_strategy", "steps",
                                       "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                                       "--output_dir", "run", "--disable_tqdm", "true")
                                for task, config in TASK_CONFIGS.items()})
    for task in TASK_CONFIGS:
        (work[task] / "in.jsonl").write_text(json.dumps(INPUTS[task]) + "\n")
    side_by_side(bin_dir, env, {task: (work[task], "shapca-predict", "run", "--input", "in.jsonl", "--output",
                                       "out.jsonl") for task in TASK_CONFIGS})
    side_by_side(bin_dir, env, {task: (work[task], "shapca-push", "run", "--repo-id", "user/shapca-test",
                                       "--dry-run", "staged") for task in TASK_CONFIGS})
    tags = {task: re.search(r"^pipeline_tag: (\S+)$", (work[task] / "staged" / "README.md").read_text(), re.M).group(1)
            for task in TASK_CONFIGS}
    outputs = side_by_side(bin_dir, env, {task: (
        work[task], "python", "-c", f"from transformers import pipeline; import json; p = pipeline({tags[task]!r}, "
                                    f"model='staged', trust_remote_code=True); print(json.dumps(p({INPUTS[task]!r})))")
        for task in TASK_CONFIGS})
    return {task: (work[task], tags[task], json.loads(outputs[task].strip().splitlines()[-1])) for task in TASK_CONFIGS}


@pytest.mark.parametrize("task", ["ner", "mre", "mjere"])
def test_train_predict_stage_and_load_by_the_cards_tag(used, tiny_text_model, task):
    work, tag, records = used[task]
    results = json.loads((work / "run" / "results.json").read_text())
    assert results["schedule"]["max_steps"] == 2 and results["schedule"]["num_train_epochs"] is None
    assert results["schedule"]["eval_strategy"] == "steps"
    card = (work / "run" / "README.md").read_text()
    assert "| max_steps | 2 |" in card and "evaluated every step." in card and "num_train_epochs" not in card
    assert len((work / "out.jsonl").read_text().splitlines()) == 1
    for path in (work / "staged").rglob("*"):  # no local path in any staged file, config.json included
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert str(work) not in text and tiny_text_model not in text, path
    assert tag == {"ner": "token-classification", "mre": "text-classification", "mjere": "token-classification"}[task]
    if task == "mre":
        assert [r["head"]["word"] for r in records] == ["Kevin Durant"]
    elif task == "mjere":
        assert set(records) == {"entities", "relations"}
    else:
        assert isinstance(records, list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_space_folder_starts_as_a_space_does(installed, trained_model_dir, tmp_path):
    """A copy of demo/ with a models.yaml, `python app.py` and no arguments, SPACE_ID set: it
    serves on 0.0.0.0 (reached here on 127.0.0.1 only) and removes its uploads on SIGTERM."""
    bin_dir, env = installed
    space = tmp_path / "space"
    shutil.copytree(ROOT / "demo", space)
    shutil.copytree(trained_model_dir, space / "model")
    (space / "models.yaml").write_text("models:\n  - model\n")
    port = _free_port()
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    process = subprocess.Popen([str(bin_dir / "python"), "app.py"], cwd=space, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**env, "SPACE_ID": "user/shapca-demo", "GRADIO_SERVER_PORT": str(port),
                                    "TMPDIR": str(uploads)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the app did not start in 120 s"
                time.sleep(1)
        folders = list(uploads.glob("shapca-demo-*"))
        assert len(folders) == 1
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        assert not folders[0].exists()  # the upload folder is removed on SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
