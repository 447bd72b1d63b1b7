import itertools

import pytest
import torch
from torchcrf import CRF  # reference implementation (dev dependency only)

from benchmarks.dispatch import count_dispatch
from modeling_shapca.crf import LinearChainCRF, bio_constraints, crf_log_partition, viterbi_decode

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ID2LABEL = dict(enumerate(LABELS))


def test_bio_constraints():
    start, trans = bio_constraints(ID2LABEL)
    assert start.tolist() == [True, True, False, True, False]
    idx = {label: i for i, label in enumerate(LABELS)}
    assert trans[idx["B-PER"], idx["I-PER"]] and trans[idx["I-PER"], idx["I-PER"]]
    assert not trans[idx["O"], idx["I-PER"]]
    assert not trans[idx["B-LOC"], idx["I-PER"]] and not trans[idx["I-LOC"], idx["I-PER"]]
    assert trans[idx["I-PER"], idx["O"]] and trans[idx["O"], idx["B-LOC"]]


def test_unconstrained_matches_pytorch_crf():
    torch.manual_seed(0)
    crf = CRF(5, batch_first=True)
    emissions = torch.randn(4, 7, 5)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6], dtype=torch.bool)
    ours = viterbi_decode(emissions, mask, crf.start_transitions, crf.end_transitions, crf.transitions)
    reference = crf.decode(emissions, mask)
    for row, ref in zip(ours, reference):
        assert row[row != -100].tolist() == ref
    assert torch.all(ours[~mask] == -100)


def test_constrained_decode_is_the_best_valid_path():
    torch.manual_seed(1)
    start, trans = bio_constraints(ID2LABEL)
    crf = CRF(5, batch_first=True)
    with torch.no_grad():  # adversarial: favour invalid moves
        crf.transitions[0, 2] = 5.0
        crf.start_transitions[4] = 5.0
    emissions = torch.randn(3, 4, 5)
    mask = torch.ones(3, 4, dtype=torch.bool)
    decoded = viterbi_decode(emissions, mask, crf.start_transitions, crf.end_transitions, crf.transitions, start, trans)

    def score(path, e):
        s = crf.start_transitions[path[0]] + e[0, path[0]] + crf.end_transitions[path[-1]]
        for a, b, t in zip(path, path[1:], range(1, 4)):
            s = s + crf.transitions[a, b] + e[t, b]
        return s

    for b in range(3):
        valid = [
            p for p in itertools.product(range(5), repeat=4)
            if start[p[0]] and all(trans[x, y] for x, y in zip(p, p[1:]))
        ]
        best = max(valid, key=lambda p: score(p, emissions[b]).item())
        assert tuple(decoded[b].tolist()) == best


def _random_case(num_tags, length, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, length, num_tags, generator=g) * 3
    tags = torch.randint(0, num_tags, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length  # one full row, one single-word row
    lengths[-1] = 1
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return emissions, tags, mask


@pytest.mark.parametrize("length", [1, 2, 3, 7, 24, 64])
def test_log_likelihood_and_gradients_match_pytorch_crf(length):
    reference = CRF(5, batch_first=True)
    ours = LinearChainCRF(5)
    ours.load_state_dict(reference.state_dict())  # same parameter names: checkpoints are compatible
    emissions, tags, mask = _random_case(5, length, seed=length)
    e_ref, e_ours = emissions.clone().requires_grad_(), emissions.clone().requires_grad_()
    expected = reference(e_ref, tags, mask=mask, reduction="none")
    got = ours.log_likelihood(e_ours, tags, mask)
    assert torch.allclose(got, expected, atol=1e-4)
    (-expected.mean()).backward()
    ours(e_ours, tags, mask, reduction="mean").backward()
    assert torch.allclose(e_ours.grad, e_ref.grad, atol=1e-5)
    for name in ("start_transitions", "end_transitions", "transitions"):
        grads = [getattr(crf, name).grad for crf in (ours, reference)]
        grads = [torch.zeros_like(getattr(ours, name)) if g is None else g for g in grads]  # unused at length 1
        assert torch.allclose(*grads, atol=1e-5), name
    assert torch.isfinite(e_ours.grad).all()


def test_log_partition_is_logsumexp_over_all_paths():
    torch.manual_seed(3)
    crf = LinearChainCRF(3)
    emissions = torch.randn(2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    params = [p.detach().double() for p in (crf.start_transitions, crf.end_transitions, crf.transitions)]
    got = crf_log_partition(emissions, mask, *params)
    for b, n in enumerate(mask.sum(1).tolist()):
        scores = []
        for path in itertools.product(range(3), repeat=n):
            s = params[0][path[0]] + emissions[b, 0, path[0]] + params[1][path[-1]]
            for t in range(1, n):
                s = s + params[2][path[t - 1], path[t]] + emissions[b, t, path[t]]
            scores.append(s)
        assert torch.allclose(got[b], torch.logsumexp(torch.stack(scores), 0))


@pytest.mark.parametrize("length", [2, 5, 33, 64])
def test_log_depth_decode_matches_sequential_viterbi(length):
    reference = CRF(9, batch_first=True)
    emissions, _, mask = _random_case(9, length, batch=16, seed=100 + length)
    ours = viterbi_decode(emissions, mask, reference.start_transitions, reference.end_transitions, reference.transitions)
    for row, expected in zip(ours, reference.decode(emissions, mask)):
        assert row[row != -100].tolist() == expected


def test_reductions_and_bad_arguments():
    crf = LinearChainCRF(4)
    emissions, tags, mask = _random_case(4, 6)
    per_sentence = crf(emissions, tags, mask, reduction="none")
    assert per_sentence.shape == (6,) and (per_sentence > 0).all()  # an NLL is positive
    assert torch.allclose(crf(emissions, tags, mask, reduction="sum"), per_sentence.sum())
    assert torch.allclose(crf(emissions, tags, mask), per_sentence.mean())
    with pytest.raises(ValueError, match="unknown reduction"):
        crf(emissions, tags, mask, reduction="max")
    with pytest.raises(ValueError, match="at least one tag"):
        LinearChainCRF(0)


def test_tags_on_padding_do_not_matter():
    crf = LinearChainCRF(4)
    emissions, tags, mask = _random_case(4, 8)
    other = tags.masked_fill(~mask, 3)
    assert torch.equal(crf.log_likelihood(emissions, tags, mask), crf.log_likelihood(emissions, other, mask))


def test_device_work_grows_logarithmically_with_sentence_length():
    """The NLL (forward + backward) and the decode run in O(log n) batched operations: on a
    GPU every operation is a kernel launch, and a per-word loop made the head launch-bound."""
    crf = LinearChainCRF(9)

    def kernels(length):
        emissions, tags, mask = _random_case(9, length, batch=4)
        emissions.requires_grad_()
        train = count_dispatch(lambda: crf(emissions, tags, mask).backward())
        with torch.no_grad():
            decode = count_dispatch(lambda: crf.decode(emissions, mask))
        assert train.syncs == 0 and decode.syncs == 0
        return train.kernels, decode.kernels

    short, long = kernels(8), kernels(64)  # 8x the words, 3 more tree levels
    assert long[0] < 2 * short[0] and long[1] < 2 * short[1]
    reference = CRF(9, batch_first=True)
    emissions, tags, mask = _random_case(9, 64, batch=4)
    assert count_dispatch(lambda: reference(emissions.requires_grad_(), tags, mask=mask).backward()).kernels > 4 * long[0]


def test_constraints_of_unknown_ids_are_left_open():
    start, trans = bio_constraints({0: "O", 1: "B-PER", 3: "I-PER"}, num_tags=4)
    assert start.tolist() == [True, True, True, False]
    assert trans[:, 2].all() and trans[2].all()  # id 2 has no label: unconstrained
    assert not trans[0, 3] and trans[1, 3]


def test_marginals_equal_brute_force_under_constraints():
    """CRF posterior marginals (the pipeline's NER scores) against enumerating every allowed
    tag sequence of short sentences."""
    import itertools

    from modeling_shapca.crf import LinearChainCRF, bio_constraints

    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    allowed_start, allowed = bio_constraints(labels)
    torch.manual_seed(0)
    crf = LinearChainCRF(5)
    emissions = torch.randn(2, 4, 5)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    marginals = crf.marginals(emissions, mask, allowed_start, allowed)
    for b in range(2):
        n = int(mask[b].sum())
        expected = torch.zeros(n, 5, dtype=torch.float64)
        total = 0.0
        for tags in itertools.product(range(5), repeat=n):
            if not allowed_start[tags[0]] or not all(allowed[a, c] for a, c in zip(tags, tags[1:])):
                continue
            score = (crf.start_transitions[tags[0]] + crf.end_transitions[tags[-1]]
                     + sum(emissions[b, t, tags[t]] for t in range(n))
                     + sum(crf.transitions[a, c] for a, c in zip(tags, tags[1:]))).double().exp()
            total += score
            for t, tag in enumerate(tags):
                expected[t, tag] += score
        assert torch.allclose(marginals[b, :n].double(), expected / total, atol=1e-5)
        assert torch.all(marginals[b, n:] == 0)
        assert torch.allclose(marginals[b, :n].sum(-1), torch.ones(n), atol=1e-5)
    with torch.no_grad():  # works inside inference code too
        assert torch.equal(crf.marginals(emissions, mask, allowed_start, allowed), marginals)


def test_marginals_under_inference_mode_equal_those_under_no_grad():
    """The pipeline's NER scores need autograd (marginals as d log Z / d emissions); a caller's
    `torch.inference_mode()` must not break them (found by the ONNX speed benchmark)."""
    torch.manual_seed(0)
    crf = LinearChainCRF(5)
    emissions = torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        expected = crf.marginals(emissions, mask)
    with torch.inference_mode():
        got = crf.marginals(emissions.clone(), mask.clone())
    assert torch.equal(got, expected)
    assert torch.allclose(expected[1].sum(-1), torch.ones(4), atol=1e-5)
