"""Linear-chain CRF for the MNER head (Eq. 13): negative log-likelihood, IOB2 constraints and
Viterbi decoding, all in log depth.

The textbook forward algorithm and Viterbi walk the sentence one word at a time: a handful
of small operations per word, forward and backward. On a GPU each is a kernel launch, so a
24-word batch costs hundreds of launches and the head becomes launch-bound. Here both run as
products of per-word transition matrices in a semiring, combined pairwise in a tree (log
partition) or by a Hillis-Steele scan (Viterbi), so a sentence of `n` words costs
`O(log n)` batched operations and no host-device sync:

    M_t[i, j] = transitions[i, j] + emissions[t, j]      (t >= 1; identity on padding)
    log Z     = logsumexp(start + e_0  (x)  M_1 (x) ... (x) M_{n-1}  (x)  end)   (log semiring)
    alpha_t   = (start + e_0) (x) M_1 (x) ... (x) M_t                           (max-plus)

The Viterbi path is then recovered from `alpha` (backpointers of every position at once) by
composing the backpointer maps with a second scan. The price is work: a semiring matrix
product costs `T^3` where a sequential step costs `T^2`, and the largest intermediate is
`(batch, n/2, T, T, T)` (NER's 9 tags: 729 numbers per word pair; fine up to a few dozen tags). Results equal the sequential algorithms
(tested against pytorch-crf and brute force); only the floating-point summation order differs.

Parameter names and initialisation follow pytorch-crf (`start_transitions`, `end_transitions`,
`transitions` `[from, to]`, uniform in [-0.1, 0.1]), so checkpoints trained with it load as is.
Training is unconstrained; decoding can forbid the transitions that are invalid under IOB2
(`O -> I-X`, `B-X -> I-Y`, `I-X -> I-Y`, `I-X` first): the gold sequences are normalised to
IOB2 when the datasets are built, so no gold path is forbidden, and the hard constraint only
guarantees well-formed output.

Masks: `mask` marks the real words of each row, a prefix; the first position of every row is
taken as real (a sentence has at least one word: empty sentences are rejected upstream). This
is not checked at run time, since a check would sync the host with the device.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from .decoding import FORBIDDEN
from .decoding import bio_constraints as _bio_constraints

# Off-diagonal of the log-semiring identity used for padded positions in the partition
# function. Finite (unlike -inf) so that no gradient turns into NaN; exp(-1e4) is 0 in fp32.
_LOG_ZERO = -1e4


def bio_constraints(id2label: Mapping[int, str], num_tags: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed start tags `(T,)` and allowed transitions `(T, T)` (`[from, to]`) under IOB2, as
    tensors (the rule lives in `decoding.bio_constraints`, shared with the ONNX predictor).

    Labels are `O`, `B-X` or `I-X`; any other label (another scheme, or an id missing from
    `id2label`) is left unconstrained.
    """
    start, transitions = _bio_constraints(id2label, num_tags)
    return torch.from_numpy(start), torch.from_numpy(transitions)


def _identity(num_tags: int, zero: float, like: torch.Tensor) -> torch.Tensor:
    """Semiring identity `(T, T)`: 0 on the diagonal, `zero` (the semiring's zero) elsewhere."""
    eye = torch.eye(num_tags, dtype=torch.bool, device=like.device)
    return torch.full((num_tags, num_tags), zero, dtype=like.dtype, device=like.device).masked_fill(eye, 0.0)


def _step_matrices(emissions: torch.Tensor, mask: torch.Tensor, transitions: torch.Tensor, zero: float) -> torch.Tensor:
    """`M_t = transitions + e_t` for t = 1..n-1, `(batch, n-1, T, T)`; the semiring identity
    where position t is padding."""
    steps = transitions + emissions[:, 1:, None, :]
    return torch.where(mask[:, 1:, None, None], steps, _identity(emissions.shape[-1], zero, steps))


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product in the log semiring: `logsumexp_k a[..., i, k] + b[..., k, j]`."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def _max_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product in the max-plus semiring: `max_k a[..., i, k] + b[..., k, j]`."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).amax(dim=-2)


def _tree_product(matrices: torch.Tensor, matmul: Callable, zero: float) -> torch.Tensor:
    """Ordered product of `(batch, m, T, T)` matrices along dim 1 by pairwise reduction:
    `ceil(log2 m)` batched products. `m` must be >= 1."""
    identity = _identity(matrices.shape[-1], zero, matrices).expand(matrices.shape[0], 1, -1, -1)
    while matrices.shape[1] > 1:
        if matrices.shape[1] % 2:  # pad an odd count with the identity
            matrices = torch.cat([matrices, identity], dim=1)
        matrices = matmul(matrices[:, 0::2], matrices[:, 1::2])
    return matrices[:, 0]


def _prefix_scan(items: torch.Tensor, combine: Callable) -> torch.Tensor:
    """Inclusive Hillis-Steele scan along dim 1: `out[:, t] = items[:, 0] . ... . items[:, t]`
    for an associative `combine(earlier, later)`; `ceil(log2 m)` batched steps."""
    length, offset = items.shape[1], 1
    while offset < length:
        items = torch.cat([items[:, :offset], combine(items[:, :-offset], items[:, offset:])], dim=1)
        offset *= 2
    return items


def crf_log_partition(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start_transitions: torch.Tensor,
    end_transitions: torch.Tensor,
    transitions: torch.Tensor,
) -> torch.Tensor:
    """`log Z` of every sentence, `(batch,)`: the forward algorithm as a log-depth tree product."""
    first = start_transitions + emissions[:, 0]  # (batch, T)
    if emissions.shape[1] == 1:
        return torch.logsumexp(first + end_transitions, dim=-1)
    total = _tree_product(_step_matrices(emissions, mask, transitions, _LOG_ZERO), _log_matmul, _LOG_ZERO)
    return torch.logsumexp(first[:, :, None] + total + end_transitions[None, None, :], dim=(1, 2))


def crf_path_score(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    mask: torch.Tensor,
    start_transitions: torch.Tensor,
    end_transitions: torch.Tensor,
    transitions: torch.Tensor,
) -> torch.Tensor:
    """Unnormalised score of the tag sequence `tags` `(batch, n)` of every sentence, `(batch,)`."""
    maskf = mask.to(emissions.dtype)
    emitted = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # (batch, n)
    moved = transitions[tags[:, :-1], tags[:, 1:]]  # (batch, n-1)
    last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
    return (
        start_transitions[tags[:, 0]]
        + (emitted * maskf).sum(1)
        + (moved * maskf[:, 1:]).sum(1)
        + end_transitions[last]
    )


def _constrained(start_transitions, transitions, allowed_start=None, allowed_transitions=None):
    """fp32 start and transition scores with the forbidden ones (see `bio_constraints`) set to
    a score no path can overcome: the constraints of decoding, shared by the marginals."""
    start, trans = start_transitions.float(), transitions.float()
    if allowed_start is not None:
        start = start.masked_fill(~allowed_start, FORBIDDEN)
    if allowed_transitions is not None:
        trans = trans.masked_fill(~allowed_transitions, FORBIDDEN)
    return start, trans


def viterbi_decode(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start_transitions: torch.Tensor,
    end_transitions: torch.Tensor,
    transitions: torch.Tensor,
    allowed_start: torch.Tensor | None = None,
    allowed_transitions: torch.Tensor | None = None,
    pad_value: int = -100,
) -> torch.Tensor:
    """Best tag sequence of a linear-chain CRF, batched, in log depth.

    Args:
        emissions: `(batch, n, T)`.
        mask: `(batch, n)` bool, real positions (a prefix of each row; the first is real).
        start_transitions, end_transitions: `(T,)`; transitions: `(T, T)` `[from, to]`.
        allowed_start, allowed_transitions: optional hard constraints (see `bio_constraints`).

    Returns:
        `(batch, n)` long tags, `pad_value` where `mask` is False.
    """
    emissions = emissions.float()
    start, trans = _constrained(start_transitions, transitions, allowed_start, allowed_transitions)
    batch, length, num_tags = emissions.shape
    first = (start + emissions[:, 0]).unsqueeze(1)  # (batch, 1, T)
    if length > 1:
        # -inf is exact in max-plus and no gradient flows here.
        prefixes = _prefix_scan(_step_matrices(emissions, mask, trans, float("-inf")), _max_matmul)
        alpha = torch.cat([first, _max_matmul(first.unsqueeze(2), prefixes).squeeze(2)], dim=1)  # (batch, n, T)
    else:
        alpha = first
    # The best tag at the last position; padding carries alpha unchanged (identity steps).
    last = (alpha[:, -1] + end_transitions.float()).argmax(dim=-1)  # (batch,)
    if length == 1:
        return last.unsqueeze(1).masked_fill(~mask, pad_value)
    # Backpointers of every position at once; padded positions point to themselves.
    pointers = (alpha[:, :-1, :, None] + trans).argmax(dim=2)  # (batch, n-1, T): best previous tag
    identity = torch.arange(num_tags, device=emissions.device)
    pointers = torch.where(mask[:, 1:, None], pointers, identity)
    # tag_{t-1} = pointers[t-1][tag_t]: compose the maps from the end (suffix scan).
    suffix = _prefix_scan(pointers.flip(1), lambda later, earlier: earlier.gather(-1, later)).flip(1)
    tags = torch.cat([suffix.gather(-1, last[:, None, None].expand(batch, length - 1, 1)).squeeze(-1), last[:, None]], dim=1)
    return tags.masked_fill(~mask, pad_value)


def crf_marginals(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start_transitions: torch.Tensor,
    end_transitions: torch.Tensor,
    transitions: torch.Tensor,
    allowed_start: torch.Tensor | None = None,
    allowed_transitions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Posterior marginals `p(y_t = k | x)` `(batch, n, T)` (0 on padding), under the same hard
    constraints as the decoder, so the decoded path always has positive probability.

    `d log Z / d emissions[t, k]` is exactly the marginal of tag `k` at `t` (forward-backward as
    the gradient of the forward algorithm), so the log-depth partition function gives them in
    one backward pass; this runs under `torch.enable_grad()` even inside `no_grad` or
    `inference_mode` inference.
    """
    # Also under `torch.inference_mode()`: autograd cannot use inference tensors, so the inputs
    # are copied into ordinary tensors first (small: emissions and masks).
    with torch.inference_mode(False), torch.enable_grad():
        start, trans = _constrained(start_transitions.detach().clone(), transitions.detach().clone(),
                                    None if allowed_start is None else allowed_start.clone(),
                                    None if allowed_transitions is None else allowed_transitions.clone())
        mask = mask.bool().clone()
        scores = emissions.detach().float().clone().requires_grad_(True)
        log_z = crf_log_partition(scores, mask, start, end_transitions.float().detach().clone(), trans)
        (marginals,) = torch.autograd.grad(log_z.sum(), scores)
    return marginals * mask.unsqueeze(-1).to(marginals.dtype)


class LinearChainCRF(nn.Module):
    """CRF layer over word emissions: NLL for training, (constrained) Viterbi for decoding."""

    def __init__(self, num_tags: int):
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"a CRF needs at least one tag, got num_tags={num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.init (not Tensor.uniform_): transformers' from_pretrained guards nn.init so that
        # loaded parameters are not re-initialised.
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`log p(tags | emissions)` of every sentence, `(batch,)` (computed in fp32)."""
        emissions = emissions.float()
        params = (self.start_transitions.float(), self.end_transitions.float(), self.transitions.float())
        mask = mask.bool()
        return crf_path_score(emissions, tags, mask, *params) - crf_log_partition(emissions, mask, *params)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, reduction: str = "mean"):
        """Negative log-likelihood: `mean` or `sum` over sentences, or `none` (per sentence)."""
        nll = -self.log_likelihood(emissions, tags, mask)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        raise ValueError(f"unknown reduction {reduction!r}; expected 'mean', 'sum' or 'none'")

    def decode(self, emissions, mask, allowed_start=None, allowed_transitions=None, pad_value: int = -100):
        """Best tags `(batch, n)` (`pad_value` on padding), optionally under hard constraints."""
        return viterbi_decode(emissions, mask.bool(), self.start_transitions, self.end_transitions,
                              self.transitions, allowed_start, allowed_transitions, pad_value)

    def marginals(self, emissions, mask, allowed_start=None, allowed_transitions=None) -> torch.Tensor:
        """Per-word tag probabilities `(batch, n, T)` (see `crf_marginals`)."""
        return crf_marginals(emissions, mask, self.start_transitions, self.end_transitions, self.transitions,
                             allowed_start, allowed_transitions)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"


__all__ = ["LinearChainCRF", "bio_constraints", "crf_log_partition", "crf_marginals", "crf_path_score", "viterbi_decode"]
