import math

import pytest
import torch

from modeling_shapca.alignment import (
    _cyclic_orders,
    alignment_loss,
    coalition_utilities,
    cyclic_shapley,
    exact_shapley,
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
    estimate = torch.stack([cyclic_shapley(sim, 0.3, generator=g, player_mask=mask) for _ in range(2000)]).mean(0)
    assert torch.all(estimate[:, 3] == 0)
    assert torch.allclose(estimate[:, :3], exact_shapley(sim[:, :3], 0.3), atol=0.02)
    assert torch.allclose(estimate[:, 0], estimate[:, 1], atol=0.02)


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
