"""The ONNX predictor's decoding in NumPy (no torch):

* `NumpyCRF` (and the functions `viterbi_decode`, `crf_marginals`): the constrained CRF decode
  and posterior marginals over emissions `(batch, n, T)`, the textbook sequential recursions
  (one step per word, vectorised over the batch and the tags) in float64, with the constrained
  scores computed once per model. The marginals run forward-backward in probability space, each
  step renormalised (a (T, T) product per word instead of a log-sum-exp: one short sentence a
  call pays per step); the renormalisation leaves each position's marginals, which sum to 1,
  unchanged. `modeling_shapca/crf.py` computes the same quantities in log depth for the PyTorch
  model; tests check that the two agree (tags equal, marginals within 1e-5);
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


class NumpyCRF:
    """A linear-chain CRF's decode and marginals (`start`, `end` `(T,)`, `transitions` `(T, T)`
    `[from, to]`, with optional allowed starts / transitions), its constants computed once."""

    def __init__(self, start, end, transitions, allowed_start=None, allowed_transitions=None):
        self.start, self.transitions = constrained(start, transitions, allowed_start, allowed_transitions)
        self.end = np.asarray(end, np.float64)
        self._exp_transitions = np.exp(self.transitions - self.transitions.max())  # forbidden: exactly 0
        self._exp_end = np.exp(self.end - self.end.max())
        self._exp_transitions_t = self._exp_transitions.T.copy()

    def decode(self, emissions, mask, pad_value: int = IGNORE_INDEX) -> np.ndarray:
        """Best tag sequence `(batch, n)` (`pad_value` on padding); `mask` `(batch, n)` marks
        real positions (a prefix, the first real)."""
        emissions, mask = np.asarray(emissions, np.float64), np.asarray(mask, bool)
        batch, length, num_tags = emissions.shape
        full = bool(mask.all())  # every position real (one sentence a call): no per-step masking
        transitions = self.transitions[None]
        score = self.start + emissions[:, 0]
        identity = np.broadcast_to(np.arange(num_tags), (batch, num_tags))
        pointers = []
        for t in range(1, length):
            candidates = score[:, :, None] + transitions  # (batch, from, to)
            best = candidates.argmax(1)
            if full:
                score = candidates.max(1) + emissions[:, t]
                pointers.append(best)
                continue
            real = mask[:, t, None]
            score = np.where(real, candidates.max(1) + emissions[:, t], score)
            pointers.append(np.where(real, best, identity))
        tags = np.empty((batch, length), dtype=np.int64)
        tags[:, -1] = (score + self.end).argmax(-1)
        rows = np.arange(batch)
        for t in range(length - 1, 0, -1):
            tags[:, t - 1] = pointers[t - 1][rows, tags[:, t]]
        return tags if full else np.where(mask, tags, pad_value)

    def marginals(self, emissions, mask) -> np.ndarray:
        """Posterior marginals `p(y_t = k | x)` `(batch, n, T)` (0 on padding) by forward-backward.
        A row whose renormalised mass at some step falls below `UNDERFLOW` (scores spanning
        hundreds of nats, far outside a trained CRF's) is computed again in log space."""
        emissions, mask = np.asarray(emissions, np.float64), np.asarray(mask, bool)
        batch, length, num_tags = emissions.shape
        full = bool(mask.all())
        weights = np.exp(emissions - emissions.max(-1, keepdims=True))  # a constant per step cancels
        totals = np.ones((batch, 2 * length))  # each step's mass before renormalising
        alpha, beta = np.empty((batch, length, num_tags)), np.empty((batch, length, num_tags))
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):  # rows that underflow are redone
            first = self.start + emissions[:, 0]
            a = np.exp(first - first.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            alpha[:, 0] = a
            for t in range(1, length):
                step = (a @ self._exp_transitions) * weights[:, t]
                total = step.sum(-1, keepdims=True)
                totals[:, t] = total[:, 0]
                step /= total
                a = step if full else np.where(mask[:, t, None], step, a)
                alpha[:, t] = a
            b = np.broadcast_to(self._exp_end / self._exp_end.sum(), (batch, num_tags))
            beta[:, -1] = b
            for t in range(length - 2, -1, -1):
                step = (b * weights[:, t + 1]) @ self._exp_transitions_t
                total = step.sum(-1, keepdims=True)
                totals[:, length + t] = total[:, 0]
                step /= total
                b = step if full else np.where(mask[:, t + 1, None], step, b)
                beta[:, t] = b
            joint = alpha * beta
            total = joint.sum(-1, keepdims=True)
            marginals = joint / total
        # (steps of padded positions are not read; NaN, from a mass of 0, counts as low)
        stepped = np.concatenate([mask[:, :1], mask[:, 1:], mask[:, 1:], mask[:, :1]], axis=1)
        low = ((~(totals >= UNDERFLOW)) & stepped).any(1) | ((~(total[..., 0] >= UNDERFLOW)) & mask).any(1)
        if low.any():
            marginals[low] = _log_marginals(emissions[low], mask[low], self.start, self.end, self.transitions)
        if not full:
            marginals *= mask[:, :, None]
        return marginals.astype(np.float32)


UNDERFLOW = 1e-250  # a step's mass below this (of at most 1): the row is recomputed in log space


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(values - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


def _log_marginals(emissions, mask, start, end, transitions) -> np.ndarray:
    """Forward-backward in log space (constrained scores given): the fallback of rows whose
    probabilities underflow."""
    batch, length, num_tags = emissions.shape
    alpha = np.empty((batch, length, num_tags))
    alpha[:, 0] = start + emissions[:, 0]
    for t in range(1, length):
        step = _logsumexp(alpha[:, t - 1, :, None] + transitions[None], 1) + emissions[:, t]
        alpha[:, t] = np.where(mask[:, t, None], step, alpha[:, t - 1])
    beta = np.empty((batch, length, num_tags))
    beta[:, -1] = end
    for t in range(length - 2, -1, -1):
        step = _logsumexp(transitions[None] + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :], 2)
        beta[:, t] = np.where(mask[:, t + 1, None], step, beta[:, t + 1])
    log_z = _logsumexp(alpha[:, 0] + beta[:, 0], 1)
    return np.exp(alpha + beta - log_z[:, None, None])


def viterbi_decode(emissions, mask, start, end, transitions, allowed_start=None, allowed_transitions=None,
                   pad_value: int = IGNORE_INDEX) -> np.ndarray:
    """Best tag sequence `(batch, n)` (`pad_value` on padding) of a linear-chain CRF.

    `emissions` `(batch, n, T)`; `mask` `(batch, n)` real positions (a prefix, the first real);
    `start`, `end` `(T,)`; `transitions` `(T, T)` `[from, to]`."""
    return NumpyCRF(start, end, transitions, allowed_start, allowed_transitions).decode(emissions, mask, pad_value)


def crf_marginals(emissions, mask, start, end, transitions, allowed_start=None, allowed_transitions=None) -> np.ndarray:
    """Posterior marginals `p(y_t = k | x)` `(batch, n, T)` (0 on padding) by forward-backward,
    under the same constraints as `viterbi_decode`."""
    return NumpyCRF(start, end, transitions, allowed_start, allowed_transitions).marginals(emissions, mask)


def grid_predictions(log_probs, group_sizes: Sequence[int], word_mask) -> np.ndarray:
    """Argmax label per group and cell, `(batch, groups, n, n)`, -100 outside real words."""
    log_probs, word_mask = np.asarray(log_probs), np.asarray(word_mask, bool)
    cells = word_mask[:, :, None] & word_mask[:, None, :]
    bounds = np.cumsum([0, *group_sizes])
    best = np.stack([log_probs[..., a:b].argmax(-1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    return np.where(cells[:, None], best, IGNORE_INDEX)


__all__ = ["NumpyCRF", "constrained", "crf_marginals", "grid_predictions", "viterbi_decode"]
