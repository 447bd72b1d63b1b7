"""Reference Shapley values for the tests and the fidelity benchmark: exact enumeration of every
coalition (Eq. 3) and plain permutation sampling. A downloaded model never runs them, so they
live here, beside their users, and not in `modeling_shapca/alignment.py` (whose cyclic
approximation, Alg. 1, they check)."""

from __future__ import annotations

import math

import torch

from modeling_shapca.alignment import _MASKED_LOGIT, _marginals_per_player


def monte_carlo_shapley(
    sim: torch.Tensor, tau: float, num_permutations: int, generator: torch.Generator | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """Plain permutation-sampling Shapley estimate (independent uniform permutations), the
    reference that `cyclic_shapley` is measured against for large k. Same prefix machinery.
    `sim` is `(A, K)`."""
    k = sim.shape[-1]
    total = torch.zeros_like(sim)
    done = 0
    while done < num_permutations:
        rounds = min(chunk, num_permutations - done)
        keys = torch.rand(rounds, k, generator=generator)
        orders = keys.argsort(dim=-1).to(sim.device)
        total += _marginals_per_player(sim[None], orders[None], tau)[0].sum(dim=1)
        done += rounds
    return total / num_permutations


def coalition_utilities(sim: torch.Tensor, tau: float, coalitions: torch.Tensor) -> torch.Tensor:
    """Eq. 4 for explicit coalitions: `sim` `(..., A, K)`, `coalitions` `(C, K)` bool, result
    `(..., A, C)`; the empty coalition has utility 0."""
    logits = (sim / tau).unsqueeze(-2).masked_fill(~coalitions, _MASKED_LOGIT)
    weights = torch.softmax(logits, dim=-1)
    utilities = (weights * sim.unsqueeze(-2)).sum(-1)
    return utilities * coalitions.any(-1)


def exact_shapley(sim: torch.Tensor, tau: float) -> torch.Tensor:
    """Exact Shapley values (Eq. 3) of every player in every anchor's game, by enumerating
    all `2^k` coalitions. For tests and fidelity benchmarks (k <= 16). `sim` is `(..., A, K)`."""
    k = sim.shape[-1]
    if k > 16:
        raise ValueError(f"exact_shapley enumerates 2^k coalitions; k={k} is too large (max 16)")
    index = torch.arange(2**k, device=sim.device)
    bits = torch.arange(k, device=sim.device)
    members = (index[:, None] >> bits[None, :]) & 1 == 1  # (2^k, k)
    utilities = coalition_utilities(sim, tau, members)  # (..., A, 2^k)
    size = members.sum(-1)  # |S|
    # weight of a coalition S (not containing i) in Eq. 3: |S|! (k-|S|-1)! / k!
    # (|S| = k only occurs for coalitions that contain i; clamp keeps their unused weight finite)
    log_w = torch.lgamma(size + 1.0) + torch.lgamma((k - size).clamp(min=1).to(sim.dtype)) - math.lgamma(k + 1)
    weight = torch.exp(log_w).to(sim.dtype)
    with_i = index[:, None] | (1 << bits)[None, :]  # (2^k, k): S ∪ {i}
    gains = utilities[..., with_i] - utilities[..., None]  # (..., A, 2^k, k)
    return (gains * (weight[:, None] * ~members)).sum(-2)


__all__ = ["coalition_utilities", "exact_shapley", "monte_carlo_shapley"]
