"""Shapley value-based contrastive alignment (paper section 3.4, Eqs. 3-7, Alg. 1).

Conventions: `sim` is an `(anchors, players)` similarity matrix (cosine similarities in
Shap-CA). Row `j` defines the cooperative game of anchor `j`: the utility of a coalition `S`
of players is the softmax(`sim[j, S] / tau`)-weighted mean of `sim[j, S]` (Eq. 4), and the
utility of the empty coalition is 0. `phi[j, i]` is player `i`'s Shapley value in anchor
`j`'s game.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

# Logit given to players outside the game (padding, missing image, empty context). They get
# zero softmax weight, so they are null players: by the null-player axiom they change nobody
# else's Shapley value, and their own value is 0.
_MASKED_LOGIT = -1e9


def _prefix_utilities(
    sim: torch.Tensor, order: torch.Tensor, tau: float, player_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 4 utilities of every prefix coalition of every player ordering, for every anchor.

    Args:
        sim: `(A, K)` similarities.
        order: `(R, K)` player orderings (each row a permutation of `0..K-1`).
        player_mask: `(K,)` bool, players that take part.

    Returns:
        `(A, R, K)`: entry `[j, r, m]` is `u_j({order[r, 0], ..., order[r, m]})`.

    The softmax-weighted mean over a growing prefix is a ratio of two cumulative sums,
    evaluated stably as a difference of cumulative logsumexps. `log(sim + shift)` needs a
    positive argument, so the mean is taken of `sim + shift` (with `shift` making every
    entry >= 1) and `shift` is subtracted again.
    """
    s = sim[:, order]  # (A, R, K)
    logits = s / tau
    shift = 1.0 - s.detach().min()
    if player_mask is not None:
        logits = logits.masked_fill(~player_mask[order], _MASKED_LOGIT)
    log_den = torch.logcumsumexp(logits, dim=-1)
    log_num = torch.logcumsumexp(logits + torch.log(s + shift), dim=-1)
    utilities = torch.exp(log_num - log_den) - shift
    if player_mask is not None:
        # A prefix made only of masked players is the empty coalition: utility 0.
        utilities = utilities * (player_mask[order].cumsum(-1) > 0)
    return utilities


def _cyclic_orders(k: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The player orderings Alg. 1 scans, as a `(rounds, k)` tensor.

    A random permutation `P` and the strides `k//2, k//4, ..., 1`: round `r` scans `P` rolled
    by the sum of the strides before it (k = 28: strides 14, 7, 3, 1, shifts 0, 14, 21, 24).
    `k = 1` has no positive stride; it gets one scan (the lone player receives `u(K)`).
    """
    perm = torch.randperm(k, generator=generator, device="cpu" if generator is None else generator.device)
    perm = perm.to(device)
    strides, stride = [], k // 2
    while stride > 0:
        strides.append(stride)
        stride //= 2
    shifts = [0] + list(itertools.accumulate(strides))[:-1]
    shift_t = torch.tensor(shifts, device=device)
    positions = torch.arange(k, device=device)
    # torch.roll(P, s)[m] == P[(m - s) % k]
    return perm[(positions[None, :] - shift_t[:, None]) % k]


def cyclic_shapley(
    sim: torch.Tensor,
    tau: float,
    generator: torch.Generator | None = None,
    player_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cyclic Shapley value approximation (Alg. 1), vectorised over anchors, players and rounds.

    One random permutation `P` of the `k` players and a stride `s = k // 2`; while `s > 0`
    every player's marginal contribution to the coalition of the players before it in `P`
    is added to its running mean, then `P` is rolled by `s` and `s` halved (k = 28: 4 rounds).
    All rounds are computed at once from cumulative logsumexps: O(rounds * A * k) memory and
    no Python loop over anchors, players or rounds.

    Each round's marginal contributions telescope to `u_j(K)`, so the efficiency axiom
    `phi[j].sum() == u_j(K)` holds exactly (up to floating-point rounding) for every draw.

    Args:
        sim: `(A, K)` similarities, differentiable.
        tau: softmax temperature of Eq. 4.
        generator: optional `torch.Generator` for the permutation.
        player_mask: optional `(K,)` bool; masked players are null players (value 0).

    Returns:
        `(A, K)` Shapley value estimates `phi[j, i]`.
    """
    k = sim.shape[-1]
    orders = _cyclic_orders(k, generator, sim.device)
    utilities = _prefix_utilities(sim, orders, tau, player_mask)
    marginals = utilities - F.pad(utilities, (1, 0))[..., :-1]
    # marginals[j, r, m] belongs to player orders[r, m]: undo each ordering.
    inverse = torch.argsort(orders, dim=-1)
    per_round = marginals.gather(-1, inverse.unsqueeze(0).expand_as(marginals))
    return per_round.mean(dim=1)


def monte_carlo_shapley(
    sim: torch.Tensor, tau: float, num_permutations: int, generator: torch.Generator | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """Plain permutation-sampling Shapley estimate (independent uniform permutations), the
    reference that `cyclic_shapley` is measured against for large k. Same prefix machinery."""
    k = sim.shape[-1]
    total = torch.zeros_like(sim)
    done = 0
    while done < num_permutations:
        rounds = min(chunk, num_permutations - done)
        keys = torch.rand(rounds, k, generator=generator)
        orders = keys.argsort(dim=-1).to(sim.device)
        utilities = _prefix_utilities(sim, orders, tau)
        marginals = utilities - F.pad(utilities, (1, 0))[..., :-1]
        inverse = torch.argsort(orders, dim=-1)
        total += marginals.gather(-1, inverse.unsqueeze(0).expand_as(marginals)).sum(dim=1)
        done += rounds
    return total / num_permutations


def coalition_utilities(sim: torch.Tensor, tau: float, coalitions: torch.Tensor) -> torch.Tensor:
    """Eq. 4 for explicit coalitions: `coalitions` is `(C, K)` bool, result `(A, C)`; the
    empty coalition has utility 0."""
    logits = (sim / tau).unsqueeze(1).masked_fill(~coalitions.unsqueeze(0), _MASKED_LOGIT)
    weights = torch.softmax(logits, dim=-1)
    utilities = (weights * sim.unsqueeze(1)).sum(-1)
    return utilities * coalitions.any(-1)


def exact_shapley(sim: torch.Tensor, tau: float) -> torch.Tensor:
    """Exact Shapley values (Eq. 3) of every player in every anchor's game, by enumerating
    all `2^k` coalitions. For tests and fidelity benchmarks (k <= 16)."""
    k = sim.shape[-1]
    if k > 16:
        raise ValueError(f"exact_shapley enumerates 2^k coalitions; k={k} is too large (max 16)")
    index = torch.arange(2**k, device=sim.device)
    bits = torch.arange(k, device=sim.device)
    members = (index[:, None] >> bits[None, :]) & 1 == 1  # (2^k, k)
    utilities = coalition_utilities(sim, tau, members)  # (A, 2^k)
    size = members.sum(-1)  # |S|
    # weight of a coalition S (not containing i) in Eq. 3: |S|! (k-|S|-1)! / k!
    # (|S| = k only occurs for coalitions that contain i; clamp keeps their unused weight finite)
    log_w = torch.lgamma(size + 1.0) + torch.lgamma((k - size).clamp(min=1).to(sim.dtype)) - math.lgamma(k + 1)
    weight = torch.exp(log_w).to(sim.dtype)
    with_i = index[:, None] | (1 << bits)[None, :]  # (2^k, k): S ∪ {i}
    gains = utilities[:, with_i] - utilities[:, :, None]  # (A, 2^k, k)
    return (gains * (weight[:, None] * ~members)).sum(1)


def _directional_loss(phi: torch.Tensor, anchor_mask: torch.Tensor | None) -> torch.Tensor:
    """Eq. 5 for one direction: `-(1/k) sum_j [phi_j(u_j) - sum_{i != j} phi_i(u_j)]`."""
    own = phi.diagonal()
    per_anchor = -(2.0 * own - phi.sum(-1))
    if anchor_mask is None:
        return per_anchor.mean()
    return (per_anchor * anchor_mask).sum() / anchor_mask.sum().clamp(min=1)


def shapley_contrastive_loss(
    sim: torch.Tensor,
    tau: float,
    pair_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Symmetric Shapley contrastive loss (Eqs. 5-7).

    `sim[a, b]` is the similarity of the first modality of pair `a` (e.g. text `x_t`) and the
    second modality of pair `b` (e.g. context `x_c`); the diagonal holds the positive pairs.
    `L_c2t` uses rows as anchors and columns as players, `L_t2c` the transpose; the result is
    their mean (Eq. 6 / Eq. 7). `pair_mask` `(k,)` drops pairs (missing image or context) from
    both the anchors and the players. With no valid pair the loss is 0 (kept in the graph, and
    computed without a data-dependent branch, so no host-device sync).
    """
    sim = sim.float()
    if pair_mask is not None:
        # Unused pairs must not leak NaN/inf into the masked arithmetic. (No early exit when no
        # pair is valid: that test would sync the host with the GPU; the result is then 0.)
        sim = sim.masked_fill(~(pair_mask[:, None] & pair_mask[None, :]), 0.0)
    mask_f = None if pair_mask is None else pair_mask.to(sim.dtype)
    phi_rows = cyclic_shapley(sim, tau, generator=generator, player_mask=pair_mask)
    phi_cols = cyclic_shapley(sim.t(), tau, generator=generator, player_mask=pair_mask)
    return 0.5 * (_directional_loss(phi_rows, mask_f) + _directional_loss(phi_cols, mask_f))


def info_nce_loss(sim: torch.Tensor, tau: float, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over the same similarity matrix: the ablation "w/o Shapley value"."""
    sim = sim.float()
    k = sim.shape[0]
    targets = torch.arange(k, device=sim.device)
    logits = sim / tau
    if pair_mask is not None:
        logits = logits.masked_fill(~(pair_mask[:, None] & pair_mask[None, :]), _MASKED_LOGIT)
        weights = pair_mask.to(sim.dtype)
    else:
        weights = torch.ones(k, device=sim.device, dtype=sim.dtype)
    rows = F.cross_entropy(logits, targets, reduction="none")
    cols = F.cross_entropy(logits.t(), targets, reduction="none")
    per_pair = 0.5 * (rows + cols) * weights
    return per_pair.sum() / weights.sum().clamp(min=1)


def alignment_loss(
    first: torch.Tensor,
    second: torch.Tensor,
    pair_mask: torch.Tensor | None,
    tau: float,
    method: str = "shapley",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cosine similarities of two batches of pooled features, then the chosen contrastive loss."""
    sim = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).t()
    if method == "shapley":
        return shapley_contrastive_loss(sim, tau, pair_mask=pair_mask, generator=generator)
    if method == "infonce":
        return info_nce_loss(sim, tau, pair_mask=pair_mask)
    raise ValueError(f"unknown alignment method {method!r}; expected 'shapley' or 'infonce'")


__all__ = [
    "alignment_loss",
    "coalition_utilities",
    "cyclic_shapley",
    "exact_shapley",
    "info_nce_loss",
    "monte_carlo_shapley",
    "shapley_contrastive_loss",
]
