"""Entity, pair and triple F1 for multimodal joint entity-relation extraction (MJERE)."""

import datasets
import evaluate

_CITATION = """\
@inproceedings{yuan2023eega,
  title={Joint Multimodal Entity-Relation Extraction Based on Edge-Enhanced Graph Alignment Network and Word-Pair Relation Tagging},
  author={Yuan, Li and Cai, Yi and Wang, Jin and Li, Qing}, booktitle={AAAI}, year={2023}}
"""

_DESCRIPTION = """\
Per sentence, a set of entities (start, end, type) and a set of triples (head span, tail span,
relation); spans are word indices with `end` exclusive. Micro F1 over all sentences of:
entities (exact start, end and type: the paper's MJERE_e), pairs (both spans exact, relation
ignored) and triples (both spans exact and the relation: the paper's MJERE_j). Duplicates in a
sentence count once.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions / references: one dict per sentence with
        "entities": list of {"start": int, "end": int, "type": str}
        "triples": list of {"head_start": int, "head_end": int, "tail_start": int, "tail_end": int, "relation": str}
Returns:
    entity_precision/recall/f1, pair_precision/recall/f1, triple_precision/recall/f1,
    and mjere_e (= entity_f1), mjere_j (= triple_f1).
Examples:
    >>> metric = evaluate.load("metrics/mjere_f1")
    >>> sentence = {"entities": [{"start": 0, "end": 1, "type": "per"}], "triples": []}
    >>> metric.compute(predictions=[sentence], references=[sentence])["entity_f1"]
    1.0
"""

_ENTITY = {"start": datasets.Value("int32"), "end": datasets.Value("int32"), "type": datasets.Value("string")}
_TRIPLE = {
    "head_start": datasets.Value("int32"),
    "head_end": datasets.Value("int32"),
    "tail_start": datasets.Value("int32"),
    "tail_end": datasets.Value("int32"),
    "relation": datasets.Value("string"),
}
_SENTENCE = {"entities": datasets.List(_ENTITY), "triples": datasets.List(_TRIPLE)}


def _rows(columns):
    """datasets stores a sequence of dicts as a dict of lists: back to rows."""
    if isinstance(columns, dict):
        keys = list(columns)
        return [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
    return list(columns)


def _check_span(start, end, where):
    if not 0 <= start < end:
        raise ValueError(f"{where}: span [{start}, {end}) is empty or negative")


def _sets(sentence, where):
    entities, pairs, triples = set(), set(), set()
    for e in _rows(sentence["entities"]):
        _check_span(e["start"], e["end"], where)
        entities.add((e["start"], e["end"], e["type"]))
    for t in _rows(sentence["triples"]):
        _check_span(t["head_start"], t["head_end"], where)
        _check_span(t["tail_start"], t["tail_end"], where)
        pair = (t["head_start"], t["head_end"], t["tail_start"], t["tail_end"])
        pairs.add(pair)
        triples.add(pair + (t["relation"],))
    return entities, pairs, triples


def _prf(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MjereF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _SENTENCE, "references": _SENTENCE}),
            reference_urls=["https://github.com/YuanLi95/EEGA-for-JMERE"],
        )

    def _compute(self, predictions, references):
        counts = {name: [0, 0, 0] for name in ("entity", "pair", "triple")}  # correct, predicted, gold
        for i, (pred, gold) in enumerate(zip(predictions, references)):
            for name, p, g in zip(counts, _sets(pred, f"predictions[{i}]"), _sets(gold, f"references[{i}]")):
                counts[name][0] += len(p & g)
                counts[name][1] += len(p)
                counts[name][2] += len(g)
        result = {}
        for name, (correct, predicted, gold) in counts.items():
            p, r, f = _prf(correct, predicted, gold)
            result.update({f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1": f})
        result["mjere_e"] = result["entity_f1"]
        result["mjere_j"] = result["triple_f1"]
        return result
