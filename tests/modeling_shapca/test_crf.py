import itertools

import torch
from torchcrf import CRF

from modeling_shapca.crf import bio_constraints, viterbi_decode

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
