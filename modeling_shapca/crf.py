"""CRF decoding helpers: BIO transition constraints and a batched Viterbi.

The CRF parameters and its negative log-likelihood come from pytorch-crf (`torchcrf.CRF`).
Decoding is done here instead of `CRF.decode`, for two reasons: it is vectorised over the
batch (pytorch-crf backtracks sentence by sentence in Python and returns lists), and it can
forbid transitions that are invalid under IOB2 (`O -> I-X`, `B-X -> I-Y`, `I-X -> I-Y`, and
`I-X` at the start). Training is unconstrained: the gold sequences are normalised to IOB2 when
the datasets are built, so no gold path is forbidden, and the learned transitions already
penalise invalid moves; the hard constraint only guarantees well-formed output.
"""

from __future__ import annotations

from typing import Mapping

import torch

_FORBIDDEN = -1e4


def bio_constraints(id2label: Mapping[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed start tags `(T,)` and allowed transitions `(T, T)` (`[from, to]`) under IOB2.

    Labels are `O`, `B-X` or `I-X`; any other label (another scheme) is left unconstrained.
    """
    num = len(id2label)
    labels = [id2label[i] for i in range(num)]

    def parse(label: str) -> tuple[str, str | None]:
        if label.startswith(("B-", "I-")):
            return label[0], label[2:]
        return ("O", None) if label == "O" else ("?", None)

    parsed = [parse(label) for label in labels]
    start = torch.tensor([prefix != "I" for prefix, _ in parsed], dtype=torch.bool)
    transitions = torch.ones(num, num, dtype=torch.bool)
    for j, (prefix, kind) in enumerate(parsed):
        if prefix != "I":
            continue
        for i, (prev_prefix, prev_kind) in enumerate(parsed):
            if prev_prefix == "?":
                continue
            transitions[i, j] = prev_prefix in ("B", "I") and prev_kind == kind
    return start, transitions


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
    """Best tag sequence of a linear-chain CRF, batched.

    Args:
        emissions: `(batch, n, T)`.
        mask: `(batch, n)` bool, real positions (a prefix of each row; the first is real).
        start_transitions, end_transitions: `(T,)`; transitions: `(T, T)` `[from, to]`.
        allowed_start, allowed_transitions: optional hard constraints (see `bio_constraints`).

    Returns:
        `(batch, n)` long tags, `pad_value` where `mask` is False.
    """
    emissions = emissions.float()
    start = start_transitions.float()
    trans = transitions.float()
    if allowed_start is not None:
        start = start.masked_fill(~allowed_start, _FORBIDDEN)
    if allowed_transitions is not None:
        trans = trans.masked_fill(~allowed_transitions, _FORBIDDEN)
    batch, length, num_tags = emissions.shape
    score = start + emissions[:, 0]  # (batch, T)
    identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)
    backpointers = []
    for t in range(1, length):  # sequential by nature; vectorised over batch and tags
        candidates = score.unsqueeze(2) + trans.unsqueeze(0)  # (batch, from, to)
        best, best_from = candidates.max(dim=1)
        step = mask[:, t].unsqueeze(1)
        score = torch.where(step, best + emissions[:, t], score)
        # Padding keeps the tag: the backpointer is the identity.
        backpointers.append(torch.where(step, best_from, identity))
    score = score + end_transitions.float()
    last = score.argmax(dim=-1)
    tags = [last]
    for pointers in reversed(backpointers):
        last = pointers.gather(1, last.unsqueeze(1)).squeeze(1)
        tags.append(last)
    tags.reverse()
    decoded = torch.stack(tags, dim=1)
    return decoded.masked_fill(~mask, pad_value)


__all__ = ["bio_constraints", "viterbi_decode"]
