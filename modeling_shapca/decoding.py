"""The IOB2 constraints of a label set, in NumPy: the CRF layer (`crf.py`) takes them as
tensors from here, and the torch-free ONNX predictor's decoding (`shapca_serving/decoding.py`)
uses them as they are, so both backends forbid the same moves. A forbidden start or transition
scores `FORBIDDEN` (-1e4), a score no path can overcome."""

from __future__ import annotations

from typing import Mapping

import numpy as np

FORBIDDEN = -1e4


def bio_constraints(id2label: Mapping[int, str], num_tags: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Allowed start tags `(T,)` and allowed transitions `(T, T)` (`[from, to]`) under IOB2.

    Labels are `O`, `B-X` or `I-X`; any other label (another scheme, or an id missing from
    `id2label`) is left unconstrained. Keys may be ints or their strings (a JSON config).
    """
    num = len(id2label) if num_tags is None else num_tags
    by_id = {int(k): v for k, v in id2label.items()}
    labels = [by_id.get(i, "") for i in range(num)]

    def parse(label: str) -> tuple[str, str | None]:
        if label.startswith(("B-", "I-")):
            return label[0], label[2:]
        return ("O", None) if label == "O" else ("?", None)

    parsed = [parse(label) for label in labels]
    start = np.array([prefix != "I" for prefix, _ in parsed], dtype=bool)
    transitions = np.ones((num, num), dtype=bool)
    for j, (prefix, kind) in enumerate(parsed):
        if prefix != "I":
            continue
        for i, (prev_prefix, prev_kind) in enumerate(parsed):
            if prev_prefix == "?":
                continue
            transitions[i, j] = prev_prefix in ("B", "I") and prev_kind == kind
    return start, transitions


__all__ = ["FORBIDDEN", "bio_constraints"]
