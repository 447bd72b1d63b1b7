"""Scoring for the Trainer: `compute_metrics` of each task, always through the task's local
`evaluate` module in metrics/ (named by the task registry)."""

from __future__ import annotations

from pathlib import Path

import evaluate
import numpy as np

from modeling_shapca.tasks import get_task
from modeling_shapca.word_pair import decode_mjere

ROOT = Path(__file__).resolve().parents[1]
IGNORE_INDEX = -100


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
        flat = {k: result[k] for k in ("precision", "recall", "f1", "accuracy")}
        flat.update({f"f1_{label}": result[label]["f1"] for label in names if label in result})
        return flat

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


def metric_names(task: str) -> list[str]:
    """The keys `compute_metrics` returns for a task (without per-type keys)."""
    return {"ner": ["precision", "recall", "f1"], "mre": ["precision", "recall", "f1", "accuracy"],
            "mjere": ["precision", "recall", "f1", "entity_f1", "pair_f1", "mjere_j", "mjere_e"]}[get_task(task).name]


def make_compute_metrics(task: str, config) -> tuple:
    """`compute_metrics` for the Trainer and a description of the metric used (for results.json).
    The main score is `f1`: entity F1 (MNER), micro F1 without None (MRE), triple F1 (MJERE)."""
    spec = get_task(task)
    metric = evaluate.load(str(ROOT / "metrics" / spec.metric))
    if spec.name == "ner":
        compute, args = _mner_metrics(metric, config.id2label), {"mode": "conlleval"}
    elif spec.name == "mre":
        compute, args = _mre_metrics(metric, config.label_groups), {"none_label": "None"}
    else:
        compute, args = _mjere_metrics(metric, config.label_groups), {"f1": "triple_f1 (MJERE_j)"}

    def compute_metrics(eval_pred):
        return compute(eval_pred.predictions, eval_pred.label_ids)

    return compute_metrics, {"module": f"metrics/{spec.metric}", "name": spec.metric_name, **args}
