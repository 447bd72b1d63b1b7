import math

import pytest
import torch

from benchmarks.shapley_reference import coalition_utilities, exact_shapley
from modeling_shapca.alignment import (
    _cyclic_orders,
    alignment_loss,
    cyclic_shapley,
    info_nce_loss,
    shapley_contrastive_loss,
)


def random_sim(anchors, players, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(anchors, players, generator=g, dtype=dtype) * 2 - 1


def grand_utility(sim, tau):
    return coalition_utilities(sim, tau, torch.ones(1, sim.shape[1], dtype=torch.bool))[:, 0]


def test_utility_matches_eq4_by_hand():
    sim = torch.tensor([[0.5, -0.2, 0.9]], dtype=torch.float64)
    tau = 0.3
    coalition = torch.tensor([[True, False, True]])
    p = torch.softmax(torch.tensor([0.5, 0.9], dtype=torch.float64) / tau, 0)
    expected = (p * torch.tensor([0.5, 0.9], dtype=torch.float64)).sum()
    assert torch.allclose(coalition_utilities(sim, tau, coalition)[0, 0], expected)
    assert coalition_utilities(sim, tau, torch.zeros(1, 3, dtype=torch.bool))[0, 0] == 0


@pytest.mark.parametrize("k", [1, 2, 3, 7, 28, 64])
def test_cyclic_efficiency_axiom_holds_for_every_draw(k):
    sim = random_sim(k, k, seed=k)
    for seed in range(3):
        phi = cyclic_shapley(sim, 0.1, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(phi.sum(-1), grand_utility(sim, 0.1), atol=1e-10)


def test_exact_efficiency_axiom():
    sim = random_sim(5, 6, seed=3)
    assert torch.allclose(exact_shapley(sim, 0.5).sum(-1), grand_utility(sim, 0.5), atol=1e-8)


def test_exact_shapley_matches_definition_for_three_players():
    sim = random_sim(1, 3, seed=4)
    tau = 0.4

    def u(*players):
        mask = torch.zeros(1, 3, dtype=torch.bool)
        mask[0, list(players)] = True
        return coalition_utilities(sim, tau, mask)[0, 0] if players else torch.tensor(0.0, dtype=sim.dtype)

    # player 0: weights 1/3 (empty), 1/6 ({1}), 1/6 ({2}), 1/3 ({1,2})
    phi0 = (u(0) - u()) / 3 + (u(0, 1) - u(1)) / 6 + (u(0, 2) - u(2)) / 6 + (u(0, 1, 2) - u(1, 2)) / 3
    assert torch.allclose(exact_shapley(sim, tau)[0, 0], phi0)


@pytest.mark.parametrize("k", [4, 8])
def test_cyclic_mean_over_permutations_matches_exact(k):
    sim = random_sim(k, k, seed=10 + k)
    exact = exact_shapley(sim, 0.2)
    g = torch.Generator().manual_seed(0)
    estimate = torch.stack([cyclic_shapley(sim, 0.2, generator=g) for _ in range(3000)]).mean(0)
    assert (estimate - exact).abs().max() < 0.02


def test_symmetry_and_null_player():
    # players 0 and 1 are interchangeable; player 3 is masked out (null player)
    sim = torch.tensor([[0.8, 0.8, -0.3, 0.5], [0.1, 0.1, 0.9, -0.7]], dtype=torch.float64)
    exact = exact_shapley(sim, 0.3)
    assert torch.allclose(exact[:, 0], exact[:, 1])
    mask = torch.tensor([True, True, True, False])
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([cyclic_shapley(sim, 0.3, generator=g, player_mask=mask) for _ in range(2000)])
    estimate = draws.mean(0)
    assert torch.all(draws[..., 3] == 0)
    # within 4 standard errors of the Monte Carlo mean (a fixed tolerance would hold for some
    # random streams and not others)
    error = draws.std(0) / len(draws) ** 0.5
    assert torch.all((estimate[:, :3] - exact_shapley(sim[:, :3], 0.3)).abs() <= 4 * error[:, :3] + 1e-12)
    gap = draws[..., 0] - draws[..., 1]
    assert torch.all(gap.mean(0).abs() <= 4 * gap.std(0) / len(draws) ** 0.5)


def test_cyclic_orders_follow_algorithm_1():
    perm_orders = _cyclic_orders(28, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert perm_orders.shape == (4, 28)  # strides 14, 7, 3, 1
    base = perm_orders[0]
    for row, shift in zip(perm_orders, [0, 14, 21, 24]):
        assert torch.equal(row, torch.roll(base, shift))
    assert _cyclic_orders(1, None, torch.device("cpu")).shape == (1, 1)


def test_cyclic_shapley_is_differentiable_and_gradcheck():
    sim = random_sim(4, 4, seed=7).requires_grad_()
    g = torch.Generator().manual_seed(0)
    torch.autograd.gradcheck(lambda s: cyclic_shapley(s, 0.5, generator=torch.Generator().manual_seed(0)), (sim,))
    loss = shapley_contrastive_loss(sim, 0.5, generator=g)
    loss.backward()
    assert sim.grad.abs().sum() > 0


def test_contrastive_loss_is_eq5_with_exact_values(monkeypatch):
    sim = random_sim(5, 5, seed=8)
    import modeling_shapca.alignment as alignment

    monkeypatch.setattr(alignment, "cyclic_shapley", lambda s, tau, generator=None, player_mask=None, orders=None: exact_shapley(s, tau))
    loss = alignment.shapley_contrastive_loss(sim, 0.2)

    def direction(s):
        phi = exact_shapley(s, 0.2)
        return -sum(phi[j, j] - (phi[j].sum() - phi[j, j]) for j in range(5)) / 5

    assert torch.allclose(loss.double(), 0.5 * (direction(sim) + direction(sim.t())), atol=1e-6)


def test_loss_rewards_aligned_pairs():
    aligned = torch.eye(6) * 1.8 - 0.9
    shuffled = aligned[torch.tensor([1, 2, 3, 4, 5, 0])]
    assert shapley_contrastive_loss(aligned, 0.1) < shapley_contrastive_loss(shuffled, 0.1)
    assert info_nce_loss(aligned, 0.1) < info_nce_loss(shuffled, 0.1)


def test_masked_pairs_are_left_out():
    sim = random_sim(5, 5, seed=9, dtype=torch.float32)
    mask = torch.tensor([True, False, True, True, False])
    keep = mask.nonzero().squeeze(1)
    torch.manual_seed(0)
    masked = info_nce_loss(sim, 0.1, pair_mask=mask)
    reduced = info_nce_loss(sim[keep][:, keep], 0.1)
    assert torch.allclose(masked, reduced, atol=1e-5)
    assert shapley_contrastive_loss(sim, 0.1, pair_mask=torch.zeros(5, dtype=torch.bool)) == 0
    sim = sim.clone()
    sim[1, 1] = float("nan")  # a masked pair's garbage must not leak
    assert torch.isfinite(shapley_contrastive_loss(sim, 0.1, pair_mask=mask))


def test_alignment_loss_on_features_and_unknown_method():
    first, second = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.isfinite(alignment_loss(first, second, None, 0.1, "shapley"))
    assert torch.isfinite(alignment_loss(first, second, None, 0.1, "infonce"))
    with pytest.raises(ValueError, match="unknown alignment method"):
        alignment_loss(first, second, None, 0.1, "triplet")


def test_exact_refuses_large_k():
    with pytest.raises(ValueError, match="too large"):
        exact_shapley(torch.zeros(2, 17), 0.1)


def test_small_tau_is_stable():
    sim = random_sim(8, 8, seed=11, dtype=torch.float32)
    phi = cyclic_shapley(sim, 1e-3)
    assert torch.isfinite(phi).all()
    assert torch.allclose(phi.sum(-1).double(), grand_utility(sim.double(), 1e-3), atol=1e-4)
    assert math.isfinite(shapley_contrastive_loss(sim, 1e-3).item())


def test_batched_games_each_keep_efficiency_and_draw_their_own_permutation():
    sims = torch.stack([random_sim(6, 6, seed=20), random_sim(6, 6, seed=20), random_sim(6, 6, seed=21)])
    phi = cyclic_shapley(sims, 0.2, generator=torch.Generator().manual_seed(0))
    assert phi.shape == (3, 6, 6)
    for game in range(3):
        assert torch.allclose(phi[game].sum(-1), grand_utility(sims[game], 0.2), atol=1e-10)
    assert not torch.allclose(phi[0], phi[1])  # same game, independent permutations


def test_batched_losses_equal_one_by_one(monkeypatch):
    import modeling_shapca.alignment as alignment

    first, second = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    masks = torch.tensor([[True, True, False, True, True], [True] * 5])
    batched = alignment.alignment_loss(first, second, masks, 0.1, "infonce")
    one_by_one = torch.stack([alignment.alignment_loss(first[g], second[g], masks[g], 0.1, "infonce") for g in range(2)])
    assert batched.shape == (2,) and torch.allclose(batched, one_by_one)
    # The Shapley loss draws permutations; with exact values it is deterministic and must agree too.
    monkeypatch.setattr(alignment, "cyclic_shapley", lambda s, tau, generator=None, player_mask=None, orders=None: exact_shapley(s, tau))
    unmasked = alignment.alignment_loss(first, second, None, 0.1)
    assert torch.allclose(unmasked, torch.stack([alignment.alignment_loss(first[g], second[g], None, 0.1) for g in range(2)]))


def test_shapley_diagnostics_are_the_loss_decomposed():
    """The logged values: the matching player's mean Shapley value and a non-matching player's
    mean; Eq. 5 is minus (matching - (k - 1) * others), per direction."""
    import modeling_shapca.alignment as alignment

    torch.manual_seed(0)
    sim = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1) @ torch.nn.functional.normalize(
        torch.randn(5, 8), dim=-1).T
    generator = torch.Generator().manual_seed(3)
    loss, (phi, mask) = shapley_contrastive_loss(sim, 0.5, generator=generator, values=True)
    values = alignment.shapley_diagnostics(phi, mask)
    assert values.shape == (2, 2) and mask is None and not phi.requires_grad
    per_direction = -(values[:, 0] - 4 * values[:, 1])
    assert torch.allclose(per_direction.mean(), loss, atol=1e-6)
    phi = exact_shapley(torch.stack([sim, sim.T]), 0.5)
    exact = alignment.shapley_diagnostics(phi)
    assert torch.allclose(exact[:, 0], phi.diagonal(dim1=-2, dim2=-1).mean(-1))
    mask = torch.tensor([True, True, False, True, True])  # a masked pair: 4 players and anchors
    _, games = shapley_contrastive_loss(sim, 0.5, pair_mask=mask, generator=generator, values=True)
    masked = alignment.shapley_diagnostics(*games)
    assert masked.shape == (2, 2) and torch.isfinite(masked).all()
    assert torch.allclose(masked[:, 0], games[0].diagonal(dim1=-2, dim2=-1)[:, mask].mean(-1))


# --- Eq. 5 and the collapse (issue: the alignment the paper is about) -------------------------

K, TAU = 12, 0.1


def _states(k=K, dim=64, draws=8):
    """Similarity matrices of the reference states: collapsed (every text one vector, every
    context its opposite), the best aligned state unit vectors can reach (a regular simplex:
    matching 1, others -1/(k-1)), aligned with orthogonal others, and random unit vectors."""
    collapsed = -torch.ones(k, k, dtype=torch.float64)
    simplex = torch.full((k, k), -1.0 / (k - 1), dtype=torch.float64).fill_diagonal_(1.0)
    randoms = []
    for seed in range(draws):
        g = torch.Generator().manual_seed(seed)
        a = torch.nn.functional.normalize(torch.randn(k, dim, generator=g, dtype=torch.float64), dim=-1)
        b = torch.nn.functional.normalize(torch.randn(k, dim, generator=g, dtype=torch.float64), dim=-1)
        randoms.append(a @ b.T)
    return collapsed, simplex, torch.eye(k, dtype=torch.float64), randoms


def _exact_loss(sim, objective, margin=0.5):
    """The objective's loss with exact Shapley values, both directions averaged."""
    from modeling_shapca.alignment import _directional_loss

    phi = exact_shapley(torch.stack([sim, sim.T]), TAU)
    return float(_directional_loss(phi, None, objective, margin).mean())


def test_objectives_are_the_config_names():
    from modeling_shapca.alignment import OBJECTIVES
    from modeling_shapca.configuration_shapca import ALIGNMENT_OBJECTIVES

    assert tuple(OBJECTIVES) == ALIGNMENT_OBJECTIVES == ("paper", "mean", "margin")


def test_paper_objective_rewards_the_collapse():
    """Eq. 5 as written scores the collapsed state at -(1 - 2/k): far below random projections,
    4/k above the best reachable aligned state; the values of the issue's table."""
    collapsed, simplex, orthogonal, randoms = _states()
    assert _exact_loss(collapsed, "paper") == pytest.approx(-(1 - 2 / K), abs=1e-9)
    assert _exact_loss(simplex, "paper") == pytest.approx(-(1 + 2 / K), abs=2e-3)  # -1.1667 at tau 0.1
    assert _exact_loss(orthogonal, "paper") == pytest.approx(-1.0, abs=1e-3)
    random = [_exact_loss(s, "paper") for s in randoms]
    assert min(random) > 0.0 and statistics_mean(random) == pytest.approx(0.11, abs=0.04)
    assert _exact_loss(collapsed, "paper") - _exact_loss(simplex, "paper") == pytest.approx(4 / K, abs=2e-3)


def statistics_mean(values):
    return sum(values) / len(values)


def test_collapse_is_a_trap_its_gradient_vanishes():
    """At the collapsed state every cosine similarity is -1, where it is flat in the features:
    the gradient of the loss with respect to the projections is zero, whatever the objective,
    so nothing pulls a collapsed run out again. From random projections, the paper's loss goes
    down on the straight path towards the collapse."""
    direction = torch.nn.functional.normalize(torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=0)
    text = direction.repeat(K, 1).requires_grad_()
    context = (-direction).repeat(K, 1).requires_grad_()
    for objective in ("paper", "mean", "margin"):
        loss = alignment_loss(text, context, None, TAU, "shapley", generator=torch.Generator().manual_seed(0),
                              objective=objective)
        text.grad = context.grad = None
        loss.backward()
        assert text.grad.abs().max() < 1e-6 and context.grad.abs().max() < 1e-6, objective
    g = torch.Generator().manual_seed(2)
    start_t, start_c = torch.randn(K, 16, generator=g, dtype=torch.float64), torch.randn(K, 16, generator=g, dtype=torch.float64)
    path = []
    for w in (0.0, 0.5, 0.9, 1.0):
        t = (1 - w) * start_t + w * text.detach()
        c = (1 - w) * start_c + w * context.detach()
        sim = torch.nn.functional.normalize(t, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
        path.append(_exact_loss(sim, "paper"))
    assert path == sorted(path, reverse=True) and path[-1] == pytest.approx(-(1 - 2 / K), abs=1e-9)


@pytest.mark.parametrize("objective", ["mean", "margin"])
def test_remedies_do_not_reward_the_collapse(objective):
    """The issue's acceptance: at k = 12, tau = 0.1 the collapsed state is not more than 0.05
    below the mean at random unit vectors (d = 64), and the reachable aligned state is more
    than 0.1 below both."""
    collapsed, simplex, _, randoms = _states()
    random = statistics_mean([_exact_loss(s, objective) for s in randoms])
    at_collapse, aligned = _exact_loss(collapsed, objective), _exact_loss(simplex, objective)
    assert at_collapse >= random - 0.05
    assert aligned < min(at_collapse, random) - 0.1
    expected = {"mean": (0.0, -1.09), "margin": (0.5, 0.0)}[objective]
    assert (at_collapse, aligned) == pytest.approx(expected, abs=5e-3)


def test_mean_objective_is_the_gap_of_matching_and_average_other():
    sim = random_sim(6, 6, seed=30)
    phi = exact_shapley(torch.stack([sim, sim.T]), 0.2)
    own = phi.diagonal(dim1=-2, dim2=-1)
    gap = own - (phi.sum(-1) - own) / 5
    from modeling_shapca.alignment import _directional_loss

    assert torch.allclose(_directional_loss(phi, None, "mean"), -gap.mean(-1))
    assert torch.allclose(_directional_loss(phi, None, "margin", 0.3), torch.relu(0.3 - gap).mean(-1))
    # masked pairs: the average is over the game's valid players
    mask = torch.tensor([True, True, False, True, True, True], dtype=torch.float64).expand(2, 6)
    masked_phi = phi * mask.unsqueeze(-2) * mask.unsqueeze(-1)
    own = masked_phi.diagonal(dim1=-2, dim2=-1)
    gap = own - (masked_phi.sum(-1) - own) / 4
    assert torch.allclose(_directional_loss(masked_phi, mask, "mean"), -(gap * mask).sum(-1) / 5)


@pytest.mark.parametrize("objective", ["paper", "mean", "margin"])
def test_every_objective_keeps_alg1_efficiency_and_masking(objective, monkeypatch):
    sim = random_sim(7, 7, seed=31, dtype=torch.float32)
    mask = torch.tensor([True, False, True, True, True, False, True])
    keep = mask.nonzero().squeeze(1)
    loss, (phi, _) = shapley_contrastive_loss(sim, 0.1, pair_mask=mask, generator=torch.Generator().manual_seed(4),
                                              values=True, objective=objective)
    # efficiency per game, masked players null
    assert torch.allclose(phi[0][keep].sum(-1).double(), grand_utility(sim[keep][:, keep].double(), 0.1), atol=1e-5)
    assert torch.all(phi[..., ~mask] == 0)
    assert shapley_contrastive_loss(sim, 0.1, pair_mask=torch.zeros(7, dtype=torch.bool), objective=objective) == 0
    # with exact values (no draws), masking two pairs is the game on the five valid pairs alone
    import modeling_shapca.alignment as alignment

    def exact(s, tau, generator=None, player_mask=None, orders=None):  # masked players are null players
        phi = torch.zeros_like(s)
        phi[..., keep] = exact_shapley(s[..., keep], tau)
        return phi

    monkeypatch.setattr(alignment, "cyclic_shapley", exact)
    sim64 = sim.double()
    masked = alignment.shapley_contrastive_loss(sim64, 0.1, pair_mask=mask, objective=objective)
    monkeypatch.setattr(alignment, "cyclic_shapley", lambda s, tau, **_: exact_shapley(s, tau))
    reduced = alignment.shapley_contrastive_loss(sim64[keep][:, keep], 0.1, objective=objective)
    assert masked.item() == pytest.approx(reduced.item(), abs=1e-5)


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective 'triplet'"):
        shapley_contrastive_loss(random_sim(3, 3), 0.1, objective="triplet")


def test_config_checks_the_objective_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from modeling_shapca.configuration_shapca import ShapCAConfig\n"
            "assert ShapCAConfig(alignment_objective='margin', alignment_margin=0.3).alignment_margin == 0.3\n"
            "try:\n    ShapCAConfig(alignment_objective='collapse')\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "alignment_objective must be one of ('paper', 'mean', 'margin'), got 'collapse'" in out.stdout


def test_seeded_orders_are_permutations_scanned_as_algorithm_1_and_uniform():
    """`seeded_orders` (one seed, integer hashing, a stable argsort): each game a permutation
    rolled as Alg. 1 rolls it, games and seeds independent, deterministic, and every player
    equally likely at every position (4 players, 4000 seeds: each count within 4 sd of 1000)."""
    from modeling_shapca.alignment import seeded_orders

    orders = seeded_orders(torch.tensor([12345]), 28, 3)
    assert orders.shape == (3, 4, 28) and orders.dtype == torch.int64
    for game in orders:
        assert torch.equal(game[0].sort().values, torch.arange(28))
        for row, shift in zip(game, [0, 14, 21, 24]):
            assert torch.equal(row, torch.roll(game[0], shift))
    assert not torch.equal(orders[0, 0], orders[1, 0])
    assert torch.equal(seeded_orders(torch.tensor([12345]), 28, 3), orders)
    assert not torch.equal(seeded_orders(torch.tensor([12346]), 28, 3), orders)
    first = torch.stack([seeded_orders(torch.tensor([seed]), 4, 1)[0, 0] for seed in range(4000)])
    counts = torch.stack([(first == player).sum(0) for player in range(4)])  # (player, position)
    assert (counts - 1000).abs().max() <= 4 * (4000 * 0.25 * 0.75) ** 0.5


def test_the_orderings_are_computed_inside_the_compiled_region():
    """fullgraph=True traces `seeded_orders` with no graph break (nothing leaves the region to
    draw them) and gives the eager orderings; outside the region one operator draws the seed."""
    from benchmarks.dispatch import DispatchCounter
    from modeling_shapca.alignment import draw_seed, seeded_orders

    compiled = torch.compile(lambda seed: seeded_orders(seed, 12, 4), backend="aot_eager", fullgraph=True)
    seed = draw_seed(torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(compiled(seed), seeded_orders(seed, 12, 4))
    with DispatchCounter() as counter:
        draw_seed(torch.Generator().manual_seed(3), "cpu")
    assert counter.kernels == 1 and counter.syncs == 0
