"""Scoring for the Trainer: `compute_metrics` of each task, always through the task's local
`evaluate` module in metrics/ (named by the task registry)."""

from __future__ import annotations

from collections import Counter

import evaluate
import numpy as np

from modeling_shapca.grids import IGNORE_INDEX, decode_mjere
from modeling_shapca.inference import bio_to_spans
from modeling_shapca.tasks import get_task

from .resources import resource

# The metric module of each task (a folder under metrics/) and what its main `f1` measures.
METRICS = {"ner": ("mner_f1", "entity F1 (conlleval)"), "mre": ("mre_f1", "micro F1 without None"),
           "mjere": ("mjere_f1", "triple F1 (MJERE_j)")}

MISSED, SPURIOUS = "(missed)", "(none)"
TOP_CONFUSIONS = 10


def span_confusions(gold: list[set], predicted: list[set]) -> dict[str, int]:
    """Errors between gold and predicted `(start, end, type)` spans per sentence, as
    `"gold -> predicted"` counts: a type confused on the right span, a gold span missed
    (`PER -> (missed)`), a predicted span that matches no gold span (`(none) -> ORG`)."""
    counts: Counter = Counter()
    for gold_spans, pred_spans in zip(gold, predicted):
        pred_by_span = {(s, e): t for s, e, t in pred_spans}
        gold_by_span = {(s, e): t for s, e, t in gold_spans}
        for span, kind in gold_by_span.items():
            guess = pred_by_span.get(span, MISSED)
            if guess != kind:
                counts[f"{kind} -> {guess}"] += 1
        for span, kind in pred_by_span.items():
            if span not in gold_by_span:
                counts[f"{SPURIOUS} -> {kind}"] += 1
    return dict(counts.most_common(TOP_CONFUSIONS))


def per_type_f1(gold: list[set], predicted: list[set], key=lambda item: item[-1]) -> dict[str, float]:
    """Exact-match F1 per type (the item's last field) over sentences of item sets."""
    correct, pred_n, gold_n = Counter(), Counter(), Counter()
    for gold_items, pred_items in zip(gold, predicted):
        for item in pred_items:
            pred_n[key(item)] += 1
            correct[key(item)] += item in gold_items
        for item in gold_items:
            gold_n[key(item)] += 1
    scores = {}
    for kind in sorted(set(gold_n) | set(pred_n)):
        p = correct[kind] / pred_n[kind] if pred_n[kind] else 0.0
        r = correct[kind] / gold_n[kind] if gold_n[kind] else 0.0
        scores[kind] = 2 * p * r / (p + r) if p + r else 0.0
    return scores


def _mner_metrics(metric, id2label):
    def compute(predictions, labels):
        refs, preds = [], []
        for pred_row, label_row in zip(predictions, labels):
            keep = label_row != IGNORE_INDEX
            refs.append([id2label[int(t)] for t in label_row[keep]])
            preds.append([id2label[int(t)] for t in pred_row[keep]])
        result = metric.compute(predictions=preds, references=refs, mode="conlleval")
        flat = {"precision": result["precision"], "recall": result["recall"], "f1": result["f1"]}
        types = sorted({label.partition("-")[2] for label in id2label.values() if "-" in label})
        flat.update({f"f1_{k}": result[k]["f1"] if k in result else 0.0 for k in types})
        compute.details = {"confusions": span_confusions([set(bio_to_spans(r)) for r in refs],
                                                         [set(bio_to_spans(p)) for p in preds])}
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
        flat.update({f"f1_{label}": result[label]["f1"] if label in result else 0.0
                     for label in names if label != "None"})
        confusions = Counter(f"{g} -> {p}" for g, p in zip(gold, pred) if g != p)
        compute.details = {"confusions": dict(confusions.most_common(TOP_CONFUSIONS))}
        return flat

    return compute


_PAIR = ("head_start", "head_end", "tail_start", "tail_end")


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
        flat = {"precision": result["triple_precision"], "recall": result["triple_recall"], "f1": result["triple_f1"],
                "entity_f1": result["entity_f1"], "pair_f1": result["pair_f1"],
                "mjere_j": result["mjere_j"], "mjere_e": result["mjere_e"]}
        gold_entities = [{(e["start"], e["end"], e["type"]) for e in r["entities"]} for r in refs]
        pred_entities = [{(e["start"], e["end"], e["type"]) for e in p["entities"]} for p in preds]
        gold_triples = [{(*(t[k] for k in _PAIR), t["relation"]) for t in r["triples"]} for r in refs]
        pred_triples = [{(*(t[k] for k in _PAIR), t["relation"]) for t in p["triples"]} for p in preds]
        flat.update({f"f1_{kind}": value for kind, value in per_type_f1(gold_entities, pred_entities).items()})
        flat.update({f"f1_{kind}": value for kind, value in per_type_f1(gold_triples, pred_triples).items()})
        # relations confused on the right entity pair: the pair (4 ints) as the "span"
        pair = [{((t[0], t[1]), (t[2], t[3]), t[4]) for t in rows} for rows in gold_triples]
        pair_pred = [{((t[0], t[1]), (t[2], t[3]), t[4]) for t in rows} for rows in pred_triples]
        compute.details = {"confusions": {**span_confusions(gold_entities, pred_entities),
                                          **{f"relation {k}": v for k, v in span_confusions(pair, pair_pred).items()}}}
        return flat

    return compute


def metric_names(task: str) -> list[str]:
    """The keys `compute_metrics` returns for a task (without per-type keys)."""
    return {"ner": ["precision", "recall", "f1"], "mre": ["precision", "recall", "f1", "accuracy"],
            "mjere": ["precision", "recall", "f1", "entity_f1", "pair_f1", "mjere_j", "mjere_e"]}[get_task(task).name]


def make_compute_metrics(task: str, config) -> tuple:
    """`compute_metrics` for the Trainer and a description of the metric used (for results.json).
    The main score is `f1`: entity F1 (MNER), micro F1 without None (MRE), triple F1 (MJERE)."""
    spec = get_task(task)
    folder, metric_name = METRICS[spec.name]
    metric = evaluate.load(str(resource("metrics", folder)))
    if spec.name == "ner":
        compute, args = _mner_metrics(metric, config.id2label), {"mode": "conlleval"}
    elif spec.name == "mre":
        compute, args = _mre_metrics(metric, config.label_groups), {"none_label": "None"}
    else:
        compute, args = _mjere_metrics(metric, config.label_groups), {"f1": "triple_f1 (MJERE_j)"}

    def compute_metrics(eval_pred):
        scores = compute(eval_pred.predictions, eval_pred.label_ids)
        compute_metrics.details = getattr(compute, "details", {})  # the last evaluation's confusions
        return scores

    return compute_metrics, {"module": f"metrics/{folder}", "name": metric_name, **args}
