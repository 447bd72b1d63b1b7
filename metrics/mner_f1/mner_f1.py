"""Entity-level precision / recall / F1 for (multimodal) NER, computed with seqeval."""

import warnings

import datasets
import evaluate
from seqeval.metrics import classification_report
from seqeval.metrics import f1_score
from seqeval.metrics import precision_score
from seqeval.metrics import recall_score
from seqeval.scheme import IOB2

_CITATION = """\
@inproceedings{luo2024shapca,
  title={Shapley Value-based Contrastive Alignment for Multimodal Information Extraction},
  author={Luo, Wen and Xia, Yu and Shen, Tianshu and Li, Sujian},
  booktitle={Proceedings of the 32nd ACM International Conference on Multimedia},
  year={2024}
}
@inproceedings{ramshaw-marcus-1995-text, title={Text Chunking using Transformation-Based Learning},
  author={Ramshaw, Lance and Marcus, Mitch}, booktitle={Third Workshop on Very Large Corpora}, year={1995}}
"""

_DESCRIPTION = """\
Micro-averaged entity precision, recall and F1 over word-level BIO tag sequences, plus the same
per entity type, computed with the `seqeval` package. An entity is correct when its start, end
and type all match. `mode="conlleval"` (default, the convention of the paper's baselines) reads
an `I-X` after `O` or another type as the start of a new entity, like conlleval.perl;
`mode="strict"` uses IOB2 strictly, where such an `I-X` opens no entity.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted tag sequences, one list of strings per sentence.
    references: list of gold tag sequences, aligned word for word with the predictions.
    mode: "conlleval" (default) or "strict".
Returns:
    precision, recall, f1 (micro, entity level), number_of_entities (gold), and per type
    a dict {precision, recall, f1, number}.
Examples:
    >>> metric = evaluate.load("metrics/mner_f1")
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["f1"]
    1.0
"""

_MODES = ("conlleval", "strict")


def _check_tags(sequences, name):
    for i, sequence in enumerate(sequences):
        for tag in sequence:
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise ValueError(f"{name}[{i}]: tag {tag!r} is not O, B-X or I-X")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MnerF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, mode="conlleval"):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(r)} gold tags")
        _check_tags(predictions, "predictions")
        _check_tags(references, "references")
        kwargs = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
        with warnings.catch_warnings():  # numpy warns on empty means when there are no entities
            warnings.simplefilter("ignore", RuntimeWarning)
            report = classification_report(references, predictions, output_dict=True, zero_division=0, **kwargs)
            scores = {
                "precision": float(precision_score(references, predictions, zero_division=0, **kwargs)),
                "recall": float(recall_score(references, predictions, zero_division=0, **kwargs)),
                "f1": float(f1_score(references, predictions, zero_division=0, **kwargs)),
            }
        result = {
            **scores,
            "number_of_entities": int(sum(v["support"] for k, v in report.items() if not k.endswith(" avg"))),
            "mode": mode,
        }
        for kind, scores in report.items():
            if kind.endswith(" avg"):
                continue
            result[kind] = {
                "precision": float(scores["precision"]),
                "recall": float(scores["recall"]),
                "f1": float(scores["f1-score"]),
                "number": int(scores["support"]),
            }
        return result
