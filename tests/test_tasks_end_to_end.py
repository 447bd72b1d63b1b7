"""Every task end to end: train.py trains a tiny model, push_to_hub.py stages it, and a fresh
process in another folder, with this repository hidden, gets identical records from
`pipeline(...)`, `model.predict(...)` and the prediction CLI, with scores in [0, 1]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import push_to_hub
import train
from datasets_scripts.presets import DATASETS, get_dataset
from modeling_shapca.tasks import TASKS
from tests.helpers import base_args

INPUTS = {
    "ner": [{"text": "Kevin Durant scores for the Warriors in Oakland"}, {"words": ["Go", "#Bears", "!"]},
            {"text": ""}, {"text": "Paris floods", "context": "A flooded street in a city."}],
    "mre": [{"text": "Kevin Durant joins the Golden State Warriors", "pairs": [[[0, 2], [4, 7]], [[4, 7], [0, 2]]]},
            {"words": ["Obama", "visits", "Paris"], "pairs": [[[0, 1], [2, 3]]]}, {"text": "", "pairs": []}],
    "mjere": [{"text": "Kevin Durant joins the Golden State Warriors"}, {"words": ["Obama", "visits", "Paris"]},
              {"text": "   "}],
}

FRESH = textwrap.dedent("""
    import importlib.abc, json, sys

    class HideRepository(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_shapca", "datasets_scripts", "shapca_training", "model_card",
                                      "train", "push_to_hub"):
                raise ImportError(name + " is hidden")
            return None

    sys.meta_path.insert(0, HideRepository())
    from transformers import AutoModel, pipeline
    folder, task, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    pipe = pipeline(task, model=folder, trust_remote_code=True)
    batched = pipe(inputs, batch_size=2)
    one_by_one = [pipe(record) for record in inputs]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    texts = [r.get("text", r.get("words")) for r in inputs]
    pairs = [r["pairs"] for r in inputs] if "pairs" in inputs[0] else None
    contexts = [r.get("context") for r in inputs]
    predicted = model.predict(texts, contexts=contexts, pairs=pairs, batch_size=3, is_split_into_words=False)
    print(json.dumps({"pipeline": batched, "single": one_by_one, "predict": predicted,
                      "class": type(pipe).__name__, "module": type(model).__module__}))
""")


def scores(records, task):
    if task == "ner":
        return [e["score"] for per_input in records for e in per_input]
    if task == "mre":
        return [r["score"] for per_input in records for r in per_input]
    return [x["score"] for per_input in records for key in ("entities", "relations") for x in per_input[key]]


@pytest.fixture(scope="module")
def staged(tiny_text_model, tmp_path_factory):
    """One tiny trained and staged model per task."""
    out = {}
    for dataset in ("twitter2015", "mnre", "mjere"):
        run = tmp_path_factory.mktemp(f"run-{dataset}")
        args = base_args(tiny_text_model, run, "--num_train_epochs", "1", "--head_learning_rate", "1e-3")
        args[0] = str(train.ROOT / "configs" / f"{dataset}-minilm.yaml")
        train.main(args)
        folder = tmp_path_factory.mktemp(f"staged-{dataset}") / "upload"
        push_to_hub.main([str(run), "--repo-id", f"someone/shapca-{dataset}", "--dry-run", str(folder)])
        out[get_dataset(dataset).task] = (run, folder)
    return out


def test_registry_is_the_one_list():
    assert sorted(TASKS) == ["mjere", "mre", "ner"]
    assert {d.task for d in DATASETS.values()} == set(TASKS)
    assert [TASKS[t].pipeline_task for t in ("ner", "mre", "mjere")] == [
        "multimodal-ner", "multimodal-relation-extraction", "multimodal-joint-extraction"]


@pytest.mark.parametrize("task", ["ner", "mre", "mjere"])
def test_pipeline_predict_and_cli_agree_from_a_fresh_process(staged, task, tmp_path):
    run, folder = staged[task]
    config = json.loads((folder / "config.json").read_text())
    spec = TASKS[task]
    assert config["task"] == task
    assert config["custom_pipelines"][spec.pipeline_task]["impl"] == "pipeline_shapca.ShapCAPipeline"
    assert (folder / "pipeline_shapca.py").exists() and (folder / "tasks.py").exists()
    card = (folder / "README.md").read_text()
    assert f"pipeline_tag: {spec.hub_pipeline_tag}" in card and spec.description in card.lower()
    assert f'pipeline("{spec.pipeline_task}", model="someone/shapca-' in card

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    inputs = INPUTS[task]
    done = subprocess.run([sys.executable, "-c", FRESH, str(folder), spec.pipeline_task, json.dumps(inputs)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["class"] == "ShapCAPipeline" and got["module"].startswith("transformers_modules")
    assert got["pipeline"] == got["single"] == got["predict"]
    values = scores(got["pipeline"], task)
    assert values and all(0.0 <= s <= 1.0 for s in values)
    empty = next(i for i, r in enumerate(inputs) if not r.get("text", "x").strip())
    assert got["pipeline"][empty] == ({"entities": [], "relations": []} if task == "mjere" else [])

    # the CLI, from another folder, reads JSONL records with the same fields
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(inputs)))
    env_cli = dict(env, PYTHONPATH=str(train.ROOT))
    done = subprocess.run([sys.executable, "-m", "shapca_serving.predict", str(folder), "--input", "in.jsonl",
                           "--output", "out.jsonl", "--batch-size", "2"],
                          cwd=tmp_path, env=env_cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == list(range(len(inputs)))
    if task == "mjere":
        assert [{k: line[k] for k in ("entities", "relations")} for line in lines] == got["pipeline"]
    else:
        assert [line[spec.output_key] for line in lines] == got["pipeline"]
