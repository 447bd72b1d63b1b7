"""Word-pair contrastive layer (paper section 3.6, Eqs. 14-18), its loss and the grid argmax.
The grid codecs (encode a sample's labels, decode a grid) live in `grids.py`, NumPy only.

The grid holds one or more *label groups*; each group is a separate classification of every
cell with its own softmax, and cells a group does not label are `-100`:

* MRE (MNRE): one group `relation` (23 labels incl. `None`); the only labelled cell is
  `(first word of head, first word of tail)`, directed (row = head). A diagonal cell is fine
  (head and tail may share their first word).
* MJERE: three groups.
  - `entity` (`None` + 4 types): every upper-triangle cell `(i, j)`, `i <= j`, is labelled;
    an entity `[s, e)` puts its type on its boundary cell `(s, e - 1)`. (Interpretation: one
    cell per entity, so nested and overlapping entities, which MJERE has, stay representable;
    filling the whole span block as EEGA does would make them collide.)
  - `relation_start` / `relation_end` (`None` + 21 relations): all `n x n` cells are labelled;
    a triple puts its relation on `(head start, tail start)` and on `(head end - 1, tail end - 1)`,
    directed. The second cell tells apart entities that share a first word.
  Decoding: entities from the boundary cells; a triple for every ordered pair of decoded
  entities `(A, B)` whose two relation cells carry the same relation. Conflicts: when two
  triples write different relations to one cell (nested entities sharing a first or a last
  word: 4 of 3,618 MJERE train samples, none in validation or test), the later triple wins
  the cell and the decoder recovers the other from its second cell (see `decode_mjere`).

Memory: the pair features are `(batch, n, n, hidden_dim)` per channel, so the activations a
training step keeps for backward grow with the square of the sentence length. Three things keep
them down: the GELU of Eq. 14 is recomputed in backward from the per-word projections
(`broadcast_gelu`), MLP3 reads the three channels without their concatenation being built,
and `model.gradient_checkpointing_enable()` (Trainer: `--gradient_checkpointing`) recomputes the
whole grid in backward, keeping only its inputs. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from .grids import IGNORE_INDEX


class _BroadcastGelu(torch.autograd.Function):
    """`gelu(rows[:, :, None] + cols[:, None, :])` that saves only `rows` and `cols` `(b, n, d)`
    for backward and recomputes the `(b, n, n, d)` pre-activation there."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, cols)
        return F.gelu(rows.unsqueeze(2) + cols.unsqueeze(1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, cols = ctx.saved_tensors
        grad_pre = torch.ops.aten.gelu_backward(grad, rows.unsqueeze(2) + cols.unsqueeze(1))
        return grad_pre.sum(2), grad_pre.sum(1)


def broadcast_gelu(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`GELU(rows_i + cols_j)` for every pair `(i, j)`: `(b, n, d)` x2 -> `(b, n, n, d)`."""
    return _BroadcastGelu.apply(rows, cols)


class PairFeatures(nn.Module):
    """Eq. 14: `X_ij = GELU(W [M_i; M_j; M_i - M_j] + b)` without building the concatenation:
    `W [a; b; a - b] = (W_a + W_c) a + (W_b - W_c) b`, so each word is projected once and the
    `n x n` grid is a broadcast sum."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(3 * in_dim, out_dim)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        w_a, w_b, w_c = self.linear.weight.chunk(3, dim=1)
        rows = F.linear(words, w_a + w_c, self.linear.bias)  # term of M_i
        cols = F.linear(words, w_b - w_c)  # term of M_j
        return broadcast_gelu(rows, cols)


class WordPairContrastiveLayer(nn.Module):
    """Eqs. 14-17 for every cell of the grid and every label group.

    `log P^t = log_softmax(MLP2(X^t))`, `log P^tsp = log_softmax(MLP3([X^t; X^s; X^p]))`,
    `P_final = softmax(P^tsp + lambda * (log P^tsp - log P^t))`, each softmax taken within a
    label group. Returns `log P_final`, `(batch, n, n, sum(group sizes))`.

    The first channel is the text channel `X^t`. With `gradient_checkpointing` set (by
    `PreTrainedModel.gradient_checkpointing_enable`) the grid is recomputed in backward.
    """

    gradient_checkpointing = False

    def __init__(self, channel_dims: dict[str, int], hidden_dim: int, group_sizes: Sequence[int],
                 refinement_scale: float = 1.0, dropout: float = 0.1):
        super().__init__()
        self.channels = nn.ModuleDict({name: PairFeatures(dim, hidden_dim) for name, dim in channel_dims.items()})
        total = sum(group_sizes)
        self.group_sizes = list(group_sizes)
        self.dropout = nn.Dropout(dropout)
        self.text_head = nn.Linear(hidden_dim, total)  # MLP2
        self.joint_head = nn.Linear(hidden_dim * len(channel_dims), total)  # MLP3
        self.refinement_scale = refinement_scale
        self._gradient_checkpointing_func = torch.utils.checkpoint.checkpoint

    def _group_log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.log_softmax(part, dim=-1) for part in logits.split(self.group_sizes, dim=-1)], dim=-1)

    def forward(self, channels: dict[str, torch.Tensor]) -> torch.Tensor:
        words = [channels[name] for name in self.channels]
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(self._grid, *words)
        return self._grid(*words)

    def _grid(self, *words: torch.Tensor) -> torch.Tensor:
        pairs = [self.dropout(module(x)) for module, x in zip(self.channels.values(), words)]
        log_p_text = self._group_log_softmax(self.text_head(pairs[0]).float())
        # MLP3 on [X^t; X^s; X^p], one weight slice per channel: no (b, n, n, 3d) concatenation.
        weights = self.joint_head.weight.split([p.shape[-1] for p in pairs], dim=1)
        joint = self.joint_head.bias + sum(F.linear(p, w) for p, w in zip(pairs, weights))
        log_p_joint = self._group_log_softmax(joint.float())
        refined = log_p_joint.exp() + self.refinement_scale * (log_p_joint - log_p_text)  # Eq. 17
        return self._group_log_softmax(refined)


def word_pair_loss(log_probs: torch.Tensor, labels: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """Eq. 18: cross-entropy over the labelled cells, averaged per group, summed over groups.

    `log_probs` `(batch, n, n, sum(sizes))`, `labels` `(batch, groups, n, n)` with -100 elsewhere.
    """
    total = log_probs.new_zeros(())
    for g, part in enumerate(log_probs.split(list(group_sizes), dim=-1)):
        target = labels[:, g]
        mask = target != IGNORE_INDEX
        picked = part.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total = total - (picked * mask).sum() / mask.sum().clamp(min=1)
    return total


def grid_predictions(log_probs: torch.Tensor, group_sizes: Sequence[int], word_mask: torch.Tensor) -> torch.Tensor:
    """Argmax label per group and cell, `(batch, groups, n, n)`, -100 outside real words (on the
    device; `decoding.grid_predictions` is the same in NumPy)."""
    cells = word_mask.bool().unsqueeze(2) & word_mask.bool().unsqueeze(1)
    best = [part.argmax(-1) for part in log_probs.split(list(group_sizes), dim=-1)]
    return torch.stack(best, dim=1).masked_fill(~cells.unsqueeze(1), IGNORE_INDEX)

