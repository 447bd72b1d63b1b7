"""Shapley value-based contrastive alignment (paper section 3.4, Eqs. 3-7, Alg. 1).

Conventions: `sim` is an `(anchors, players)` similarity matrix (cosine similarities in
Shap-CA). Row `j` defines the cooperative game of anchor `j`: the utility of a coalition `S`
of players is the softmax(`sim[j, S] / tau`)-weighted mean of `sim[j, S]` (Eq. 4), and the
utility of the empty coalition is 0. `phi[j, i]` is player `i`'s Shapley value in anchor
`j`'s game.
"""

from __future__ import annotations

import functools
import itertools

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
        sim: `(G, A, K)` similarities of `G` independent games.
        order: `(G, R, K)` player orderings per game (each row a permutation of `0..K-1`).
        player_mask: `(G, K)` bool, players that take part.

    Returns:
        `(G, A, R, K)`: entry `[g, j, r, m]` is `u_j({order[g, r, 0], ..., order[g, r, m]})`
        in game `g`.

    The softmax-weighted mean over a growing prefix is a ratio of two cumulative sums,
    evaluated stably as a difference of cumulative logsumexps. `log(sim + shift)` needs a
    positive argument, so the mean is taken of `sim + shift` (with `shift` making every
    entry >= 1) and `shift` is subtracted again.
    """
    games, anchors, k = sim.shape
    rounds = order.shape[1]
    s = sim.unsqueeze(2).expand(games, anchors, rounds, k).gather(-1, order.unsqueeze(1).expand(games, anchors, rounds, k))
    logits = s / tau
    shift = 1.0 - s.detach().min()
    if player_mask is not None:
        in_order = player_mask.gather(-1, order.flatten(1)).view(games, 1, rounds, k)
        logits = logits.masked_fill(~in_order, _MASKED_LOGIT)
    log_den = torch.logcumsumexp(logits, dim=-1)
    log_num = torch.logcumsumexp(logits + torch.log(s + shift), dim=-1)
    utilities = torch.exp(log_num - log_den) - shift
    if player_mask is not None:
        # A prefix made only of masked players is the empty coalition: utility 0.
        utilities = utilities * (in_order.cumsum(-1) > 0)
    return utilities


def _marginals_per_player(sim, orders, tau, player_mask=None) -> torch.Tensor:
    """`(G, A, R, K)` marginal contribution of each player (in player order, not scan order)
    in each scanned ordering."""
    utilities = _prefix_utilities(sim, orders, tau, player_mask)
    marginals = utilities - F.pad(utilities, (1, 0))[..., :-1]
    # marginals[g, j, r, m] belongs to player orders[g, r, m]: undo each ordering.
    inverse = torch.argsort(orders, dim=-1)
    return marginals.gather(-1, inverse.unsqueeze(1).expand_as(marginals))


def _shifts(k: int) -> list[int]:
    """Alg. 1's roll of each round: strides `k//2, k//4, ..., 1`; round `r` scans `P` rolled by
    the sum of the strides before it (k = 28: strides 14, 7, 3, 1, shifts 0, 14, 21, 24).
    `k = 1` gets one scan."""
    strides, stride = [], k // 2
    while stride > 0:
        strides.append(stride)
        stride //= 2
    return [0] + list(itertools.accumulate(strides))[:-1]


def _traced_roll_index(k: int, device: torch.device) -> torch.Tensor:
    """`(rounds, k)` gather index of Alg. 1's rolled scans, built from constants (traceable)."""
    shifts = torch.tensor(_shifts(k), device=device)
    # torch.roll(P, s)[m] == P[(m - s) % k]
    return (torch.arange(k, device=device)[None, :] - shifts[:, None]) % k


@functools.lru_cache(maxsize=64)
def _roll_index(k: int, device: torch.device) -> torch.Tensor:
    """`_traced_roll_index`, built once per `k` and device (the eager draws)."""
    return _traced_roll_index(k, device)


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (two multiply-xorshift rounds) on int64 tensors holding values in
    [0, 2**32): products stay below 2**60, so no overflow on any device."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def seeded_orders(seed: torch.Tensor, k: int, games: int) -> torch.Tensor:
    """Alg. 1's orderings `(games, rounds, k)` from a seed `(1,)` int64 in [0, 2**32) on the
    features' device: one random permutation per game (the stable argsort of hashed counters),
    scanned at the rolls of `_shifts`. Only integer arithmetic on tensors: the same orderings
    eagerly and inside a compiled region, on any device, with no generator in the graph."""
    counters = torch.arange(games * k, device=seed.device, dtype=torch.int64)
    keys = _hash32((counters * 0x9E3779B1 + seed) & _MASK32)
    keys = _hash32(keys ^ (seed >> 1))
    perm = torch.argsort(keys.view(games, k), dim=-1, stable=True)
    return perm[:, _traced_roll_index(k, seed.device)]


@torch.compiler.disable  # generator draws are not traced; this one draw runs eagerly
def draw_seed(generator: torch.Generator | None, device) -> torch.Tensor:
    """A seed for `seeded_orders`, drawn with `generator` on `device` (a CPU generator with a GPU
    device draws on the CPU and copies once, from pinned memory, without blocking)."""
    return _drawn_on(torch.device(device), generator,
                     lambda where: torch.randint(0, _MASK32 + 1, (1,), generator=generator, device=where))


def _drawn_on(device: torch.device, generator: torch.Generator | None, draw) -> torch.Tensor:
    """`draw(where)` with `generator`: on `device` when the generator lives there, else on the
    CPU and copied once, from pinned memory, without blocking."""
    if generator is None or generator.device == device:
        return draw(device)
    out = draw(torch.device("cpu"))
    return out.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else out.to(device)


@torch.compiler.disable  # generator draws are not traced; this small step runs eagerly
def _cyclic_orders(
    k: int, generator: torch.Generator | None, device: torch.device, games: int | None = None
) -> torch.Tensor:
    """The player orderings Alg. 1 scans: `(rounds, k)`, or `(games, rounds, k)` with one
    independent random permutation per game: a random permutation `P` per game, scanned at
    the rolls of `_roll_index`.

    The permutations are drawn on `device` (with `generator` when it lives there): no host
    round trip per step. A CPU generator with a GPU device draws on the CPU and copies once,
    from pinned memory without blocking. (The captured region computes its own from a seed,
    `seeded_orders`: the same distribution in fewer launches there, more here.)
    """
    device = torch.device(device)
    rows = 1 if games is None else games
    perm = _drawn_on(device, generator,
                     lambda where: torch.rand(rows, k, generator=generator, device=where).argsort(dim=-1))
    orders = perm[:, _roll_index(k, device)]  # (games, rounds, k)
    return orders[0] if games is None else orders


def cyclic_shapley(
    sim: torch.Tensor,
    tau: float,
    generator: torch.Generator | None = None,
    player_mask: torch.Tensor | None = None,
    orders: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cyclic Shapley value approximation (Alg. 1), vectorised over games, anchors, players
    and rounds.

    One random permutation `P` of the `k` players and a stride `s = k // 2`; while `s > 0`
    every player's marginal contribution to the coalition of the players before it in `P`
    is added to its running mean, then `P` is rolled by `s` and `s` halved (k = 28: 4 rounds).
    All rounds are computed at once from cumulative logsumexps: O(rounds * A * k) memory and
    no Python loop over anchors, players or rounds.

    Each round's marginal contributions telescope to `u_j(K)`, so the efficiency axiom
    `phi[j].sum() == u_j(K)` holds exactly (up to floating-point rounding) for every draw.

    Args:
        sim: `(A, K)` similarities, differentiable; or `(..., A, K)` for several independent
            games at once (each draws its own permutation), e.g. the four alignment directions.
        tau: softmax temperature of Eq. 4.
        generator: optional `torch.Generator` for the permutations (best on `sim`'s device).
        player_mask: optional `(K,)` (or `(..., K)`) bool; masked players are null players
            (value 0).
        orders: optional orderings from `seeded_orders(seed, K, games)` (`games` = the number of
            `(A, K)` games in `sim`) instead of drawing them here.

    Returns:
        `(..., A, K)` Shapley value estimates `phi[..., j, i]`.
    """
    *lead, anchors, k = sim.shape
    games = sim.reshape(-1, anchors, k)
    mask = None if player_mask is None else player_mask.expand(*lead, k).reshape(-1, k)
    if orders is None:
        orders = _cyclic_orders(k, generator, sim.device, games=games.shape[0])
    phi = _marginals_per_player(games, orders, tau, mask).mean(dim=2)
    return phi.view(*lead, anchors, k)


# The Shapley objectives (`ShapCAConfig.alignment_objective`): the per-anchor loss as a function
# of the anchor's game, given `own = phi_j(u_j)` (the matching player's value), `total` (the sum
# of all players' values, `u_j(K)` by efficiency; the others hold `total - own`) and `players`
# (the game's valid players). Eq. 5 as written ("paper") is `-(own - others)`; by efficiency that is
# `-(2 own - u_j(K))`, which rewards a low total utility: the collapsed state (every text one
# vector, every context its opposite, all similarities -1) scores `-(1 - 2/k)`, below random
# projections (about +0.1 at k = 12, d = 64) and only `4/k` above the best reachable aligned
# state, with zero gradient there. The remedies are documented deviations that do not reward it:
#   "mean":   the others averaged over the `players - 1` of them instead of summed (the
#             "balanced" form of a contrastive loss): `-(own - others / (players - 1))`. A
#             constant shift of every similarity leaves it unchanged up to a factor, so the total
#             utility cannot be traded for loss; the collapsed state scores 0, like random ones.
#   "margin": a hinge on the same gap, `max(0, margin - (own - others / (players - 1)))`: the
#             matching player must hold `margin` more than the average other player, and once it
#             does the game exerts no further push (the triplet-margin remedy against pushing
#             negatives apart for its own sake). The collapsed state scores `margin`, like random ones.
def _paper_objective(own, total, players, margin):
    return -(2.0 * own - total)  # = -(own - others), others = total - own (efficiency)


def _gap(own, total, players):
    """The matching player's value minus the average other player's."""
    return own - (total - own) / (players - 1).clamp(min=1)


def _mean_objective(own, total, players, margin):
    return -_gap(own, total, players)


def _margin_objective(own, total, players, margin):
    return torch.relu(margin - _gap(own, total, players))


OBJECTIVES = {"paper": _paper_objective, "mean": _mean_objective, "margin": _margin_objective}


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown Shapley alignment objective {objective!r}; expected one of {tuple(OBJECTIVES)}")


def _directional_loss(
    phi: torch.Tensor, anchor_mask: torch.Tensor | None, objective: str = "paper", margin: float = 0.5
) -> torch.Tensor:
    """One direction's loss, the mean over anchors of the objective's per-anchor loss (Eq. 5 for
    `"paper"`: `-(1/k) sum_j [phi_j(u_j) - sum_{i != j} phi_i(u_j)]`). `phi` is `(..., k, k)`,
    `anchor_mask` `(..., k)` (the valid pairs: anchors and players alike); the result is `(...)`."""
    own = phi.diagonal(dim1=-2, dim2=-1)
    players = None  # Eq. 5 does not read the number of players: no kernel spent on it
    if objective != "paper":
        players = torch.full_like(own, phi.shape[-1]) if anchor_mask is None else \
            anchor_mask.sum(-1, keepdim=True).expand_as(own)
    per_anchor = OBJECTIVES[objective](own, phi.sum(-1), players, margin)
    if anchor_mask is None:
        return per_anchor.mean(-1)
    return (per_anchor * anchor_mask).sum(-1) / anchor_mask.sum(-1).clamp(min=1)


def _mask_pairs(sim: torch.Tensor, pair_mask: torch.Tensor, fill: float) -> torch.Tensor:
    """`sim` with every entry whose row or column pair is masked out set to `fill`."""
    return sim.masked_fill(~(pair_mask.unsqueeze(-1) & pair_mask.unsqueeze(-2)), fill)


def shapley_contrastive_loss(
    sim: torch.Tensor,
    tau: float,
    pair_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    orders: torch.Tensor | None = None,
    values: bool = False,
    objective: str = "paper",
    margin: float = 0.5,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Symmetric Shapley contrastive loss (Eqs. 5-7).

    `sim[a, b]` is the similarity of the first modality of pair `a` (e.g. text `x_t`) and the
    second modality of pair `b` (e.g. context `x_c`); the diagonal holds the positive pairs.
    `L_c2t` uses rows as anchors and columns as players, `L_t2c` the transpose; the result is
    their mean (Eq. 6 / Eq. 7). `pair_mask` `(k,)` drops pairs (missing image or context) from
    both the anchors and the players. With no valid pair the loss is 0 (kept in the graph, and
    computed without a data-dependent branch, so no host-device sync).

    Batched: `sim` `(..., k, k)` and `pair_mask` `(..., k)` give one loss per leading index;
    all directions of all of them are played as one batch of games (`2 * prod(...)` games: the
    `orders` of `seeded_orders`, when given). `values=True` also returns the games, `(phi, mask)`:
    the Shapley values `(..., 2, k, k)` of both directions (rows-as-anchors first), detached, and
    the anchors' mask (or None); `shapley_diagnostics` summarises them. Returning them launches
    nothing (a detached view), so a train step costs the same kernels with or without them.

    `objective` picks the per-anchor loss (`OBJECTIVES`): `"paper"` is Eq. 5 as written (it
    rewards a collapse of the projections, see `OBJECTIVES`), `"mean"` and `"margin"` are the
    documented remedies (`margin` is the hinge's margin). Alg. 1 and the masking are the same
    for all.
    """
    check_objective(objective)
    sim = sim.float()
    if pair_mask is not None:
        # Unused pairs must not leak NaN/inf into the masked arithmetic. (No early exit when no
        # pair is valid: that test would sync the host with the GPU; the result is then 0.)
        sim = _mask_pairs(sim, pair_mask, 0.0)
        pair_mask = pair_mask.unsqueeze(-2).expand(*sim.shape[:-2], 2, sim.shape[-1])
    both = torch.stack([sim, sim.transpose(-1, -2)], dim=-3)  # (..., 2, k, k): rows, then columns as anchors
    phi = cyclic_shapley(both, tau, generator=generator, player_mask=pair_mask, orders=orders)
    mask_f = None if pair_mask is None else pair_mask.to(sim.dtype)
    loss = _directional_loss(phi, mask_f, objective, margin).mean(-1)
    return (loss, (phi.detach(), mask_f)) if values else loss


class ShapleyGames:
    """The Shapley values of a step's alignment games, kept as they are (detached, no work done)
    until someone asks for their summary: `values()` runs `shapley_diagnostics` then. `games` is
    `(phi, mask)` with `phi` `(losses, 2, k, k)`; `players[loss][direction]` names each
    direction's players (e.g. `"semantic/text"`)."""

    def __init__(self, phi: torch.Tensor, mask: torch.Tensor | None, players: list[list[str]]):
        self.phi, self.mask, self.players = phi, mask, players

    def valid_anchors(self) -> torch.Tensor:
        """0-dim: how many anchors took part in the games (0 when the batch had no image or
        context: every game was empty and its values are 0, nothing worth logging)."""
        if self.mask is None:
            return torch.tensor(float(self.phi[..., 0, :, :].diagonal(dim1=-2, dim2=-1).numel()), device=self.phi.device)
        return self.mask[..., 0, :].sum().float()

    def values(self) -> dict[str, torch.Tensor]:
        """`{"shapley/<loss>/<players>/matching" | ".../others": 0-dim tensor}`."""
        summary = shapley_diagnostics(self.phi, self.mask)  # (losses, 2, 2)
        return {f"shapley/{name}/{kind}": summary[g, d, s] for g, names in enumerate(self.players)
                for d, name in enumerate(names) for s, kind in enumerate(("matching", "others"))}


def shapley_diagnostics(phi: torch.Tensor, anchor_mask: torch.Tensor | None = None) -> torch.Tensor:
    """What the games of a batch look like: for `phi` `(..., k, k)` (anchor j's game in row j),
    the mean over anchors of the matching player's Shapley value `phi_j(u_j)` and of a
    non-matching player's mean value, `(..., 2)`. Training pushes the first up and the second
    down (Eq. 5 is minus their difference, the second summed over players)."""
    own = phi.diagonal(dim1=-2, dim2=-1)
    valid = torch.ones_like(own) if anchor_mask is None else anchor_mask
    players = valid.sum(-1, keepdim=True)
    others = (phi * valid.unsqueeze(-2)).sum(-1) - own * valid  # masked players have value 0 anyway
    others = others / (players - 1).clamp(min=1)
    count = valid.sum(-1).clamp(min=1)
    return torch.stack([(own * valid).sum(-1) / count, (others * valid).sum(-1) / count], dim=-1)


def info_nce_loss(sim: torch.Tensor, tau: float, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over the same similarity matrix: the ablation "w/o Shapley value".
    Batched like `shapley_contrastive_loss`."""
    logits = sim.float() / tau
    if pair_mask is not None:
        logits = _mask_pairs(logits, pair_mask, _MASKED_LOGIT)
        weights = pair_mask.to(logits.dtype)
    else:
        weights = torch.ones(logits.shape[:-1], device=logits.device, dtype=logits.dtype)
    rows = -torch.log_softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1)
    cols = -torch.log_softmax(logits, dim=-2).diagonal(dim1=-2, dim2=-1)
    per_pair = 0.5 * (rows + cols) * weights
    return per_pair.sum(-1) / weights.sum(-1).clamp(min=1)


def alignment_loss(
    first: torch.Tensor,
    second: torch.Tensor,
    pair_mask: torch.Tensor | None,
    tau: float,
    method: str = "shapley",
    generator: torch.Generator | None = None,
    orders: torch.Tensor | None = None,
    values: bool = False,
    objective: str = "paper",
    margin: float = 0.5,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Cosine similarities of two batches of pooled features `(k, d)`, then the chosen
    contrastive loss. Stacked inputs `(G, k, d)` with masks `(G, k)` give `G` losses at once.
    `values=True` returns `(loss, games)`: Shapley's `(phi, mask)` per direction (`first` as
    anchors, then `second`; see `shapley_contrastive_loss`), None for InfoNCE. `objective` and
    `margin` choose Shapley's per-anchor loss (`OBJECTIVES`)."""
    sim = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).transpose(-1, -2)
    if method == "shapley":
        return shapley_contrastive_loss(sim, tau, pair_mask=pair_mask, generator=generator, orders=orders,
                                        values=values, objective=objective, margin=margin)
    if method == "infonce":
        loss = info_nce_loss(sim, tau, pair_mask=pair_mask)
        return (loss, None) if values else loss
    raise ValueError(f"unknown alignment method {method!r}; expected 'shapley' or 'infonce'")


class _FreshGrad(torch.autograd.Function):
    """Identity whose backward hands on a copy of the gradient: what leaves a CUDA graph replay
    must not alias the graph's memory, which the next replay overwrites (a leaf's `.grad`, or a
    gradient that autograd adds to another)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


class CapturedAlignment:
    """`alignment_loss` as one `torch.compile`d region (static shapes: the pooled features are
    `(games, batch, dim)`), forward and backward: inductor fuses Alg. 1's ~160 small kernels into
    a few, and on a GPU with `mode="reduce-overhead"` replays them as a CUDA graph. One seed is
    drawn before the region with the model's generator (`draw_seed`: one operator on the device,
    no host sync) and the orderings are computed from it inside the region (`seeded_orders`):
    the same uniform permutations as the eager draws (`_cyclic_orders`), from another stream, so
    a captured run is reproducible with itself, not with an eager one; for the same orderings the
    losses and gradients equal the eager code's (tested). One compiled graph per batch size (the
    last batch of an epoch adds one)."""

    def __init__(self, tau: float, method: str, backend: str = "inductor", mode: str | None = None,
                 objective: str = "paper", margin: float = 0.5):
        self.tau, self.method, self.cuda_graphs = tau, method, mode == "reduce-overhead"
        self.objective, self.margin = objective, margin

        def loss(first, second, pair_mask, seed):
            orders = None
            if method == "shapley":  # the orderings are computed inside the region from one seed
                games = 2 * (first.shape[0] if first.dim() == 3 else 1)  # two directions per loss
                orders = seeded_orders(seed, first.shape[-2], games)
            return alignment_loss(first, second, pair_mask, tau, method, orders=orders, values=True,
                                  objective=objective, margin=margin)

        self.compiled = torch.compile(loss, backend=backend, mode=mode, fullgraph=True, dynamic=False)

    def __call__(self, first, second, pair_mask, generator=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(losses, games)` as `alignment_loss(..., values=True)`."""
        seed = draw_seed(generator, first.device)  # one small draw on the device; no host sync
        if not self.cuda_graphs:
            return self.compiled(first, second, pair_mask, seed)
        # A new step: the previous replay's memory may be reused (CUDA graph trees' rule); what
        # leaves the graph (losses forward, gradients backward) is copied out of it.
        torch.compiler.cudagraph_mark_step_begin()
        loss, games = self.compiled(_FreshGrad.apply(first), _FreshGrad.apply(second), pair_mask, seed)
        if games is not None:
            games = (games[0].clone(), None if games[1] is None else games[1].clone())
        return loss.clone(), games


__all__ = [
    "OBJECTIVES",
    "CapturedAlignment",
    "ShapleyGames",
    "alignment_loss",
    "cyclic_shapley",
    "draw_seed",
    "info_nce_loss",
    "seeded_orders",
    "shapley_contrastive_loss",
    "shapley_diagnostics",
]
