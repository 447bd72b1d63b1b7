import math

import pytest
import torch

from modeling_shapca.fusion import AdaptiveFusion, bridging_term


def test_bridging_term_is_mean_of_gram_rows():
    context = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = bridging_term(context, mask)
    for b in range(2):
        c = context[b, mask[b]]
        expected = (c.t() @ c / math.sqrt(8)).mean(0)
        assert torch.allclose(got[b], expected)
    assert torch.all(bridging_term(context, torch.zeros(2, 5, dtype=torch.bool)) == 0)


def make_inputs(batch=2, n_t=4, n_c=6, n_v=5):
    torch.manual_seed(0)
    return dict(
        text_states=torch.randn(batch, n_t, 12),
        context_states=torch.randn(batch, n_c, 12),
        context_mask=torch.ones(batch, n_c, dtype=torch.bool),
        region_states=torch.randn(batch, n_v, 10),
        region_mask=torch.ones(batch, n_v, dtype=torch.bool),
    )


@pytest.mark.parametrize("adaptive", [True, False])
def test_shapes_and_masked_regions_do_not_matter(adaptive):
    fusion = AdaptiveFusion(12, 10, 16, 4, dropout=0.0, adaptive=adaptive).eval()
    inputs = make_inputs()
    out = fusion(**inputs)
    assert out.shape == (2, 4, 16)
    inputs["region_mask"][:, 3:] = False
    masked = fusion(**inputs)
    inputs["region_states"][:, 3:] = 1e3  # padded regions: any content, same output
    assert torch.allclose(fusion(**inputs), masked, atol=1e-5)
    truncated = dict(inputs, region_states=inputs["region_states"][:, :3], region_mask=inputs["region_mask"][:, :3])
    assert torch.allclose(fusion(**truncated), masked, atol=1e-5)


def test_padded_context_tokens_do_not_matter():
    fusion = AdaptiveFusion(12, 10, 16, 4, dropout=0.0).eval()
    inputs = make_inputs()
    inputs["context_mask"][:, 4:] = False
    ref = fusion(**inputs)
    inputs["context_states"][:, 4:] = 55.0
    assert torch.allclose(fusion(**inputs), ref, atol=1e-5)


def test_context_changes_adaptive_but_not_plain_fusion():
    inputs = make_inputs()
    other = dict(inputs, context_states=inputs["context_states"] * 3 + 1)
    adaptive = AdaptiveFusion(12, 10, 16, 4, dropout=0.0, adaptive=True).eval()
    plain = AdaptiveFusion(12, 10, 16, 4, dropout=0.0, adaptive=False).eval()
    assert not torch.allclose(adaptive(**inputs), adaptive(**other))
    assert torch.allclose(plain(**inputs), plain(**other))


def test_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        AdaptiveFusion(12, 10, 15, 4)


def test_gate_takes_mixed_precision_as_cuda_autocast_gives_it():
    """Under CUDA autocast the bridge `B` is fp32 (its sums run in fp32) while the projected
    features and the gate are bf16; `lerp` takes one dtype, so the gate must cast (a bf16
    training run once failed here on the GPU with 'expected dtype float for `end`')."""
    torch.manual_seed(0)
    features = torch.randn(2, 3, 8).to(torch.bfloat16)
    bridge = torch.randn(2, 8)  # fp32
    gate = torch.nn.Linear(16, 8)
    out = AdaptiveFusion._gate(features, bridge, gate)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 8)
    b = bridge.unsqueeze(1).expand(2, 3, 8)
    g = torch.tanh(gate(torch.cat([features.float(), b], dim=-1)))
    expected = g * features.float() + (1 - g) * b  # Eq. 9-10 in fp32
    assert torch.allclose(out.float(), expected, atol=3e-2, rtol=3e-2)
    # fp32 everywhere: no cast, exactly Eq. 9-10
    exact = AdaptiveFusion._gate(features.float(), bridge, gate)
    assert exact.dtype == torch.float32 and torch.allclose(exact, expected, atol=1e-6)
