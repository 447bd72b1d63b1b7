"""What differs between the four datasets: how they load, their labels, how a batch is
encoded for the model, and how predictions are scored (always through the local `evaluate`
modules in metrics/)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import evaluate
import numpy as np

from modeling_shapca import ShapCAForTokenClassification, ShapCAForWordPairExtraction, ShapCAProcessor
from modeling_shapca.word_pair import decode_mjere, encode_mjere, encode_mre

ROOT = Path(__file__).resolve().parents[1]
IGNORE_INDEX = -100
logger = logging.getLogger("shapca.train")


@dataclass(frozen=True)
class Task:
    name: str  # ner | mre | mjere
    raw_folder: str  # default raw folder under data/
    metric: str  # folder under metrics/
    model_class: type


TASKS = {
    "twitter2015": Task("ner", "twitter2015", "mner_f1", ShapCAForTokenClassification),
    "twitter2017": Task("ner", "twitter2017", "mner_f1", ShapCAForTokenClassification),
    "mnre": Task("mre", "mnre", "mre_f1", ShapCAForWordPairExtraction),
    "mjere": Task("mjere", "mnre", "mjere_f1", ShapCAForWordPairExtraction),
}


def get_task(dataset: str) -> Task:
    if dataset not in TASKS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(TASKS)}")
    return TASKS[dataset]


def load_task_dataset(dataset: str, dataset_path=None, raw_dir=None, image_dir=None, contexts=None) -> datasets.DatasetDict:
    """A built dataset (save_to_disk folder or Hub id), or one built now from the raw files."""
    if dataset_path:
        path = Path(dataset_path)
        return datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(dataset_path)
    from datasets_scripts.build import build

    task = get_task(dataset)
    built, report = build(dataset, raw_dir or ROOT / "data" / task.raw_folder, image_dir, contexts)
    logger.info("built %s: %s", dataset, json.dumps({k: v for k, v in report.items() if k != "images"}))
    return built


def label_config(dataset: str, features: datasets.Features) -> dict:
    """Config kwargs describing the labels: id2label for NER, label groups for word pairs."""
    task = get_task(dataset)
    if task.name == "ner":
        names = features["tags"].feature.names
        return {"task": "ner", "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if task.name == "mre":
        return {"task": "word_pair", "word_pair_scheme": "mre", "label_groups": {"relation": features["relation"].names}}
    types = ["None"] + features["entities"].feature["type"].names
    relations = ["None"] + features["triples"].feature["relation"].names
    return {"task": "word_pair", "word_pair_scheme": "mjere",
            "label_groups": {"entity": types, "relation_start": relations, "relation_end": relations}}


class ShapCACollator:
    """Runs the processor on dataset rows, with word labels (NER) or grid labels (word pairs)."""

    def __init__(self, processor: ShapCAProcessor, task: str):
        self.processor, self.task = processor, task

    def labels(self, rows: list[dict]) -> dict:
        if self.task == "ner":
            return {"word_labels": [row["tags"] for row in rows]}
        if self.task == "mre":
            grids = [encode_mre(len(r["words"]), (r["head"]["start"], r["head"]["end"]),
                                (r["tail"]["start"], r["tail"]["end"]), r["relation"]) for r in rows]
        else:
            grids = [encode_mjere(len(r["words"]), r["entities"], r["triples"]) for r in rows]
        return {"pair_labels": grids}

    def __call__(self, rows: list[dict]) -> dict:
        return dict(
            self.processor(
                words=[row["words"] for row in rows],
                contexts=[row.get("context") or "" for row in rows],
                images=[row.get("image") if row.get("has_image") else None for row in rows],
                pos_tags=[row["pos_tags"] for row in rows],
                return_tensors="pt",
                **self.labels(rows),
            )
        )


def _mner_metrics(metric, id2label):
    def compute(predictions, labels):
        refs, preds = [], []
        for pred_row, label_row in zip(predictions, labels):
            keep = label_row != IGNORE_INDEX
            refs.append([id2label[int(t)] for t in label_row[keep]])
            preds.append([id2label[int(t)] for t in pred_row[keep]])
        result = metric.compute(predictions=preds, references=refs, mode="conlleval")
        flat = {"precision": result["precision"], "recall": result["recall"], "f1": result["f1"]}
        flat.update({f"f1_{k}": result[k]["f1"] for k in ("PER", "LOC", "ORG", "MISC") if k in result})
        return flat

    return compute


def _mre_metrics(metric, groups):
    names = groups["relation"]

    def compute(predictions, labels):
        cells = labels[:, 0] != IGNORE_INDEX  # one labelled cell per sample
        gold = [names[int(v)] for v in labels[:, 0][cells]]
        pred = [names[int(v)] for v in predictions[:, 0][cells]]
        result = metric.compute(predictions=pred, references=gold, none_label="None", labels=names)
        return {k: result[k] for k in ("precision", "recall", "f1", "accuracy")}

    return compute


def _mjere_sets(grid: np.ndarray, n: int, types, relations) -> dict:
    entities, triples = decode_mjere(grid, n)
    return {
        "entities": [{"start": e["start"], "end": e["end"], "type": types[e["type"] + 1]} for e in entities],
        "triples": [{**{k: t[k] for k in ("head_start", "head_end", "tail_start", "tail_end")},
                     "relation": relations[t["relation"] + 1]} for t in triples],
    }


def _mjere_metrics(metric, groups):
    types, relations = groups["entity"], groups["relation_start"]

    def compute(predictions, labels):
        preds, refs = [], []
        for pred, gold in zip(predictions, labels):
            n = int((np.diagonal(gold[0]) != IGNORE_INDEX).sum())  # entity cells cover the diagonal
            preds.append(_mjere_sets(pred, n, types, relations))
            refs.append(_mjere_sets(gold, n, types, relations))
        result = metric.compute(predictions=preds, references=refs)
        return {"precision": result["triple_precision"], "recall": result["triple_recall"], "f1": result["triple_f1"],
                "entity_f1": result["entity_f1"], "pair_f1": result["pair_f1"],
                "mjere_j": result["mjere_j"], "mjere_e": result["mjere_e"]}

    return compute


def make_compute_metrics(dataset: str, config) -> tuple:
    """`compute_metrics` for the Trainer and a description of the metric used (for results.json).
    The main score is `f1`: entity F1 (MNER), micro F1 without None (MRE), triple F1 (MJERE)."""
    task = get_task(dataset)
    metric = evaluate.load(str(ROOT / "metrics" / task.metric))
    if task.name == "ner":
        compute, args = _mner_metrics(metric, config.id2label), {"mode": "conlleval"}
    elif task.name == "mre":
        compute, args = _mre_metrics(metric, config.label_groups), {"none_label": "None"}
    else:
        compute, args = _mjere_metrics(metric, config.label_groups), {"f1": "triple_f1 (MJERE_j)"}

    def compute_metrics(eval_pred):
        return compute(eval_pred.predictions, eval_pred.label_ids)

    return compute_metrics, {"module": f"metrics/{task.metric}", **args}
