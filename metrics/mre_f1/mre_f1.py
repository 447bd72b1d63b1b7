"""Micro precision / recall / F1 for multimodal relation extraction (MNRE convention)."""

import datasets
import evaluate

_CITATION = """\
@inproceedings{zheng2021mnre,
  title={MNRE: A Challenge Multimodal Dataset for Neural Relation Extraction with Visual Evidence in Social Media Posts},
  author={Zheng, Changmeng and Wu, Zhiwei and Feng, Junhao and Fu, Ze and Cai, Yi},
  booktitle={ICME}, year={2021}}
"""

_DESCRIPTION = """\
One relation label per sample (head/tail pair). Micro precision = correct non-`None` predictions
/ non-`None` predictions; recall = correct non-`None` predictions / non-`None` gold labels; F1
their harmonic mean. The `None` label is excluded from the positives (the MNRE convention): a
`None` predicted for a `None` gold counts only towards accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted relation labels (strings), one per sample.
    references: list of gold relation labels.
    none_label: the "no relation" label (default "None").
    labels: optional full label set; a label outside it is an error.
Returns:
    precision, recall, f1 (micro over non-None), accuracy (all samples), and per relation
    {precision, recall, f1, number}.
Examples:
    >>> metric = evaluate.load("metrics/mre_f1")
    >>> metric.compute(predictions=["/per/per/peer", "None"], references=["/per/per/peer", "None"])["f1"]
    1.0
"""


def _prf(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MreF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/thecharm/MNRE"],
        )

    def _compute(self, predictions, references, none_label="None", labels=None):
        if labels is not None:
            known = set(labels)
            for name, values in (("predictions", predictions), ("references", references)):
                unknown = sorted(set(values) - known)
                if unknown:
                    raise ValueError(f"{name}: unknown labels {unknown}")
        pairs = list(zip(predictions, references))
        correct = sum(p == r and r != none_label for p, r in pairs)
        predicted = sum(p != none_label for p in predictions)
        gold = sum(r != none_label for r in references)
        precision, recall, f1 = _prf(correct, predicted, gold)
        result = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "accuracy": sum(p == r for p, r in pairs) / len(pairs) if pairs else 0.0,
            "number_of_relations": gold,
        }
        for label in sorted((set(predictions) | set(references)) - {none_label}):
            p, r, f = _prf(
                sum(a == b == label for a, b in pairs),
                sum(a == label for a in predictions),
                sum(b == label for b in references),
            )
            result[label] = {"precision": p, "recall": r, "f1": f, "number": sum(b == label for b in references)}
        return result
