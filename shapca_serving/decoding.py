"""The ONNX predictor's decoding in NumPy (no torch):

* `viterbi_decode` and `crf_marginals`: the constrained CRF decode and posterior marginals over
  emissions `(batch, n, T)`, the textbook sequential recursions (one step per word, vectorised
  over the batch and the tags) in float64. `modeling_shapca/crf.py` computes the same quantities
  in log depth for the PyTorch model; tests check that the two agree (tags equal, marginals
  within 1e-5);
* `grid_predictions`: the argmax label of every word-pair cell per label group.

Constraints (`modeling_shapca.decoding.bio_constraints`) are applied exactly as `crf.py` does: a
forbidden start or transition scores `FORBIDDEN`, and padded positions carry the previous
position's scores unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from modeling_shapca.decoding import FORBIDDEN
from modeling_shapca.grids import IGNORE_INDEX


def constrained(start: np.ndarray, transitions: np.ndarray, allowed_start=None, allowed_transitions=None):
    """float64 start and transition scores with the forbidden ones set to `FORBIDDEN`."""
    start, transitions = np.asarray(start, np.float64), np.asarray(transitions, np.float64)
    if allowed_start is not None:
        start = np.where(allowed_start, start, FORBIDDEN)
    if allowed_transitions is not None:
        transitions = np.where(allowed_transitions, transitions, FORBIDDEN)
    return start, transitions


def viterbi_decode(emissions, mask, start, end, transitions, allowed_start=None, allowed_transitions=None,
                   pad_value: int = IGNORE_INDEX) -> np.ndarray:
    """Best tag sequence `(batch, n)` (`pad_value` on padding) of a linear-chain CRF.

    `emissions` `(batch, n, T)`; `mask` `(batch, n)` real positions (a prefix, the first real);
    `start`, `end` `(T,)`; `transitions` `(T, T)` `[from, to]`."""
    emissions, mask = np.asarray(emissions, np.float64), np.asarray(mask, bool)
    start, transitions = constrained(start, transitions, allowed_start, allowed_transitions)
    batch, length, num_tags = emissions.shape
    score = start + emissions[:, 0]
    identity = np.broadcast_to(np.arange(num_tags), (batch, num_tags))
    pointers = []
    for t in range(1, length):
        candidates = score[:, :, None] + transitions[None]  # (batch, from, to)
        best = candidates.argmax(1)
        real = mask[:, t, None]
        score = np.where(real, candidates.max(1) + emissions[:, t], score)
        pointers.append(np.where(real, best, identity))
    tags = np.empty((batch, length), dtype=np.int64)
    tags[:, -1] = (score + np.asarray(end, np.float64)).argmax(-1)
    rows = np.arange(batch)
    for t in range(length - 1, 0, -1):
        tags[:, t - 1] = pointers[t - 1][rows, tags[:, t]]
    return np.where(mask, tags, pad_value)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(values - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


def crf_marginals(emissions, mask, start, end, transitions, allowed_start=None, allowed_transitions=None) -> np.ndarray:
    """Posterior marginals `p(y_t = k | x)` `(batch, n, T)` (0 on padding) by forward-backward,
    under the same constraints as `viterbi_decode`."""
    emissions, mask = np.asarray(emissions, np.float64), np.asarray(mask, bool)
    start, transitions = constrained(start, transitions, allowed_start, allowed_transitions)
    batch, length, num_tags = emissions.shape
    alpha = np.empty((batch, length, num_tags))
    alpha[:, 0] = start + emissions[:, 0]
    for t in range(1, length):
        step = _logsumexp(alpha[:, t - 1, :, None] + transitions[None], 1) + emissions[:, t]
        alpha[:, t] = np.where(mask[:, t, None], step, alpha[:, t - 1])
    beta = np.empty((batch, length, num_tags))
    beta[:, -1] = np.asarray(end, np.float64)
    for t in range(length - 2, -1, -1):
        step = _logsumexp(transitions[None] + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :], 2)
        beta[:, t] = np.where(mask[:, t + 1, None], step, beta[:, t + 1])
    log_z = _logsumexp(alpha[:, 0] + beta[:, 0], 1)
    marginals = np.exp(alpha + beta - log_z[:, None, None])
    return (marginals * mask[:, :, None]).astype(np.float32)


def grid_predictions(log_probs, group_sizes: Sequence[int], word_mask) -> np.ndarray:
    """Argmax label per group and cell, `(batch, groups, n, n)`, -100 outside real words."""
    log_probs, word_mask = np.asarray(log_probs), np.asarray(word_mask, bool)
    cells = word_mask[:, :, None] & word_mask[:, None, :]
    bounds = np.cumsum([0, *group_sizes])
    best = np.stack([log_probs[..., a:b].argmax(-1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    return np.where(cells[:, None], best, IGNORE_INDEX)


__all__ = ["FORBIDDEN", "bio_constraints", "crf_marginals", "grid_predictions", "viterbi_decode"]


__all__ = ["constrained", "crf_marginals", "grid_predictions", "viterbi_decode"]
