"""The NumPy decoding of the torch-free predictor against the PyTorch CRF / grid code."""

import numpy as np
import pytest
import torch

from modeling_shapca.decoding import bio_constraints as numpy_bio_constraints
from shapca_serving import decoding
from modeling_shapca.crf import LinearChainCRF, bio_constraints, crf_marginals, viterbi_decode
from modeling_shapca.word_pair import grid_predictions

LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def _case(seed: int, batch=6, length=9, tags=5):
    torch.manual_seed(seed)
    crf = LinearChainCRF(tags)
    with torch.no_grad():  # larger transitions than the init, so constraints and paths matter
        crf.transitions.mul_(20)
    emissions = torch.randn(batch, length, tags) * 3
    lengths = torch.tensor([length, 1, 4, length - 1, 2, 7][:batch])
    mask = torch.arange(length)[None] < lengths[:, None]
    return crf, emissions, mask


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_viterbi_and_marginals_equal_the_torch_crf(seed, constrained):
    crf, emissions, mask = _case(seed)
    start, allowed = bio_constraints(LABELS) if constrained else (None, None)
    params = (crf.start_transitions, crf.end_transitions, crf.transitions)
    expected_tags = viterbi_decode(emissions, mask, *params, start, allowed)
    expected_marginals = crf_marginals(emissions, mask, *params, start, allowed)
    numpy_params = [p.detach().numpy() for p in params]
    np_start, np_allowed = (s.numpy() if s is not None else None for s in (start, allowed))
    tags = decoding.viterbi_decode(emissions.numpy(), mask.numpy(), *numpy_params, np_start, np_allowed)
    marginals = decoding.crf_marginals(emissions.numpy(), mask.numpy(), *numpy_params, np_start, np_allowed)
    assert np.array_equal(tags, expected_tags.numpy())
    assert np.abs(marginals - expected_marginals.numpy()).max() < 1e-5
    assert np.all(marginals[~mask.numpy()] == 0)
    if constrained:  # the decoded paths are valid IOB2: no O -> I-X, no I-X first
        for row, n in zip(tags, mask.sum(1).tolist()):
            labels = [LABELS[t] for t in row[:n]]
            assert not labels[0].startswith("I-")
            assert all(not (b.startswith("I-") and a == "O") for a, b in zip(labels, labels[1:]))


def test_torch_constraints_come_from_the_numpy_rule():
    start, transitions = bio_constraints(LABELS)
    np_start, np_transitions = numpy_bio_constraints({str(k): v for k, v in LABELS.items()})  # JSON keys
    assert np.array_equal(start.numpy(), np_start) and np.array_equal(transitions.numpy(), np_transitions)
    assert np_start.tolist() == [True, True, False, True, False]
    assert np_transitions[0, 2] == False and np_transitions[1, 2] == True and np_transitions[3, 2] == False  # noqa: E712


def test_numpy_grid_predictions_equal_torch():
    torch.manual_seed(0)
    log_probs = torch.randn(2, 5, 5, 7).log_softmax(-1)
    word_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = grid_predictions(log_probs, [3, 4], word_mask)
    got = decoding.grid_predictions(log_probs.numpy(), [3, 4], word_mask.numpy())
    assert np.array_equal(got, expected.numpy())
    assert (got[0, :, 3:, :] == -100).all() and (got[1] >= 0).all()


@pytest.mark.parametrize("scale", [(100.0, 100.0), (1e-3, 1e-3)])
def test_probability_space_marginals_hold_at_extreme_scores(scale):
    """Forward-backward in probability space, renormalised each step, against the log-space
    torch CRF where scores span hundreds of nats (transitions up to +-200) and where they are
    nearly flat."""
    crf, emissions, mask = _case(3)
    with torch.no_grad():
        crf.transitions.mul_(scale[1])
    emissions = emissions * scale[0]
    start, allowed = bio_constraints(LABELS)
    params = (crf.start_transitions, crf.end_transitions, crf.transitions)
    expected = crf_marginals(emissions, mask, *params, start, allowed).numpy()
    got = decoding.NumpyCRF(*(p.detach().numpy() for p in params), start.numpy(), allowed.numpy()).marginals(
        emissions.numpy(), mask.numpy())
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(got.sum(-1), mask.numpy(), atol=1e-6)
