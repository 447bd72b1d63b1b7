"""The captured NER head (`captured.py`, issue 46): fusion, classifier and CRF as one compiled
region over shape buckets, equal to the eager head (aot_eager: the traced forward and backward
graphs run without a C++ compiler; inductor fuses the same graphs)."""

import pytest
import torch

from modeling_shapca.captured import TOKEN_BUCKETS, WORD_BUCKETS, bucket
from tests.helpers import NER_LABELS

LABEL2ID = {label: i for i, label in enumerate(NER_LABELS)}


@pytest.fixture
def batch(processor, ner_batch):
    return processor(**ner_batch, label2id=LABEL2ID)


def test_buckets_cover_the_shipped_corpora_with_few_graphs():
    assert [bucket(n, WORD_BUCKETS) for n in (1, 16, 17, 25, 37, 40, 41, 81)] == [16, 16, 24, 32, 40, 40, 80, 120]
    assert [bucket(n, TOKEN_BUCKETS) for n in (9, 64, 65, 513, 1100)] == [32, 64, 128, 1024, 1536]


def _step(model, batch):
    model.shapca._shapley_generator = torch.Generator().manual_seed(7)  # the same Alg. 1 draws
    torch.manual_seed(0)
    out = model(**batch)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out, grads


def test_captured_head_equals_eager_in_training_and_evaluation(make_model, batch):
    model = make_model(dropout=0.0).train()
    eager, eager_grads = _step(model, batch)
    model.capture_head(backend="aot_eager")
    captured, captured_grads = _step(model, batch)
    for key in ("loss", "main_loss", "logits"):
        assert torch.allclose(getattr(captured, key), getattr(eager, key), atol=1e-5), key
    assert captured.logits.shape == eager.logits.shape == (3, 6, len(NER_LABELS))
    assert set(captured_grads) == set(eager_grads) and any("fusion" in n for n in eager_grads)
    assert any("crf" in n for n in eager_grads) and any("classifier" in n for n in eager_grads)
    for name, grad in eager_grads.items():
        assert torch.allclose(captured_grads[name], grad, atol=1e-5, rtol=1e-4), name
    # evaluation: the Viterbi tags come out of the region too, padding -100 as the eager decode
    model.eval()
    with torch.no_grad():
        captured = model(**batch)
        model.capture_head(False)
        eager = model(**batch)
    assert torch.equal(captured.predictions, eager.predictions)
    assert (eager.predictions == -100).any()  # the batch has padded words
    assert torch.allclose(captured.loss, eager.loss, atol=1e-5)


def test_batches_in_one_bucket_share_one_graph(make_model, processor, ner_batch):
    """Batches of 6 and 5 words pad to the same 16-word bucket: one compiled shape; inference
    without labels decodes only."""
    model = make_model(dropout=0.0).eval()
    model.capture_head(backend="aot_eager")
    with torch.no_grad():
        first = model(**processor(**ner_batch, label2id=LABEL2ID))
        shorter = {k: v[1:] for k, v in ner_batch.items() if k != "word_labels"}
        second = model(**processor(**shorter))
    head = model._captured_head
    assert {(words, labelled) for _, words, _, _, labelled, _ in head.shapes} == {(16, True), (16, False)}
    assert second.loss is None and second.predictions.shape == (2, 5)
    assert torch.equal(second.predictions, first.predictions[1:, :5])
