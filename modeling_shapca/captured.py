"""The NER head as one compiled region (issue 46): the adaptive fusion (Eqs. 8-11), the classifier
(Eq. 12), the CRF's loss (Eq. 13, its log-depth forward algorithm) and, outside training, its
constrained Viterbi decode, traced once per shape bucket with `torch.compile(fullgraph=True,
dynamic=False)`; on a GPU with `mode="reduce-overhead"` replayed as CUDA graphs.

    model.capture_head()                  # ShapCAForTokenClassification; capture_head(False) undoes it
    out = model(**batch, labels=labels)   # the same loss, emissions and predictions (tested)

Shapes: a region compiled for every input shape would recompile on most batches (the words and
subwords of a batch vary), so the words are padded up to a bucket of `WORD_BUCKETS` and the
encoder states the fusion reads up to one of `TOKEN_BUCKETS` (beyond the last, to a multiple of
it). The word buckets come from the shipped corpora's train splits (words per sentence: median
16-17, 95th percentile 23-25, at most 37 for Twitter-2015, 35 for MNRE, 32 for MJERE; a batch's
longest sentence sets its bucket), so at most 4 graphs serve them, each wasting at most 8 words a
row. Padding changes no value: padded words carry `word_mask` False (the CRF's identity steps,
masked emissions), padded states `context_mask` False (zero weight in the bridging term), and the
fusion treats every word on its own. The outputs are cut back to the batch's words.

Dropout inside the region draws from the compiled graph's random stream, not the eager one: with
dropout, a captured run is reproducible with itself (the equality tests run without dropout).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .encoding import round_up

WORD_BUCKETS = (16, 24, 32, 40)
TOKEN_BUCKETS = (32, 64, 128, 256, 512)


def bucket(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding `length`, else `length` up to a multiple of the largest."""
    for size in buckets:
        if length <= size:
            return size
    return round_up(length, buckets[-1])


def _pad(x: torch.Tensor | None, size: int, value=0) -> torch.Tensor | None:
    """`x` padded along dim 1 to `size` with `value`."""
    if x is None or x.shape[1] == size:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, size - x.shape[1]]
    return F.pad(x, pad, value=value)


class CapturedTokenHead:
    """The compiled fusion + classifier + CRF of a `ShapCAForTokenClassification` (held weakly:
    the model holds this object). `shapes` records the padded shapes compiled so far."""

    def __init__(self, model, backend: str = "inductor", mode: str | None = None,
                 word_buckets: tuple[int, ...] = WORD_BUCKETS, token_buckets: tuple[int, ...] = TOKEN_BUCKETS):
        self._model = weakref.ref(model)
        self.word_buckets, self.token_buckets = tuple(word_buckets), tuple(token_buckets)
        self.shapes: set[tuple] = set()
        self.compiled = torch.compile(self._head, backend=backend, mode=mode, fullgraph=True, dynamic=False)

    def _head(self, word_states, states, context_mask, regions, region_mask, pos_ids, word_mask, tags,
              decode: bool):
        model = self._model()
        base = model.shapca
        fused = base.fusion(word_states, states, context_mask, regions, region_mask)
        batch, words = pos_ids.shape
        position = base.position_embeddings.weight[:words].unsqueeze(0).expand(batch, -1, -1)
        emissions = model.classifier(torch.cat([fused, base.pos_embeddings(pos_ids), position], dim=-1))
        loss = None if tags is None else model.crf(emissions, tags, word_mask, reduction="mean")
        predictions = model.decode(emissions, word_mask) if decode else None
        return loss, emissions, predictions

    def __call__(self, fusion_inputs: tuple, pos_ids, word_mask, tags=None, decode: bool = False):
        """`(loss, emissions, predictions)` of the head for the fusion's inputs (`ShapCAModel`
        with `fuse=False`): the loss when `tags` are given, the Viterbi tags when `decode`."""
        word_states, states, context_mask, regions, region_mask = fusion_inputs
        words = pos_ids.shape[1]
        max_words = self._model().config.max_words
        padded_words = min(bucket(words, self.word_buckets), max(max_words, words))
        padded_states = bucket(states.shape[1], self.token_buckets)
        self.shapes.add((pos_ids.shape[0], padded_words, padded_states, regions.shape[1], tags is not None, decode))
        loss, emissions, predictions = self.compiled(
            _pad(word_states, padded_words), _pad(states, padded_states), _pad(context_mask, padded_states, False),
            regions, region_mask, _pad(pos_ids, padded_words), _pad(word_mask, padded_words, False),
            _pad(tags, padded_words), decode)
        return loss, emissions[:, :words], None if predictions is None else predictions[:, :words]


__all__ = ["TOKEN_BUCKETS", "WORD_BUCKETS", "CapturedTokenHead", "bucket"]
