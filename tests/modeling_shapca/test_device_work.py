"""What the model asks of the device: no host-device sync in the heads.

A host sync (`.item()`, `bool(tensor)`, boolean-mask indexing, `nonzero`, ...) makes the CPU
wait for the GPU and stalls the launch queue every step. `DispatchCounter` sees every ATen
operator on any device, so this is checked on CPU: the Shap-CA model must sync exactly as
often as its text encoder alone (transformers' attention-mask check), in training (forward
and backward) and in inference (including Viterbi and grid decoding).
"""

import pytest
import torch

from benchmarks.dispatch import count_dispatch
from modeling_shapca import ShapCAForTokenClassification, ShapCAForWordPairExtraction
from modeling_shapca.grids import encode_mjere, encode_mre
from tests.helpers import NER_LABELS, random_image, tiny_config

WORDS = [["Kevin", "Durant", "joins", "the", "Warriors"], ["Obama", "meets", "Merkel"], ["Hi"]]
INPUTS = dict(words=WORDS, contexts=["a player", "", "x"], images=[random_image(0), None, random_image(1)],
              pos_tags=[["PROPN"] * len(w) for w in WORDS])
GROUPS = {
    "mre": {"relation": ["None", "/per/per/peer"]},
    "mjere": {"entity": ["None", "per", "org"], "relation_start": ["None", "peer"], "relation_end": ["None", "peer"]},
}


def _model_and_batch(task, processor):
    torch.manual_seed(0)
    if task == "ner":
        tags = [["B-PER", "I-PER", "O", "O", "B-ORG"], ["B-PER", "O", "B-PER"], ["O"]]
        batch = processor(**INPUTS, word_labels=tags, label2id={label: i for i, label in enumerate(NER_LABELS)})
        return ShapCAForTokenClassification(tiny_config()), batch
    if task == "mre":
        grids = [encode_mre(5, (0, 2), (4, 5), 1), encode_mre(3, (0, 1), (2, 3), 0), encode_mre(1, (0, 1), (0, 1), 0)]
    else:
        grids = [encode_mjere(5, [{"start": 0, "end": 2, "type": 0}], []), encode_mjere(3, [], []), encode_mjere(1, [], [])]
    model = ShapCAForWordPairExtraction(tiny_config(task=task, label_groups=GROUPS[task]))
    return model, processor(**INPUTS, pair_labels=grids)


def _encoder_syncs(model, batch):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    return count_dispatch(lambda: model.shapca.text_model(**inputs)).syncs


@pytest.mark.parametrize("task", ["ner", "mre", "mjere"])
def test_heads_add_no_host_sync(task, processor):
    model, batch = _model_and_batch(task, processor)
    floor = _encoder_syncs(model, batch)
    model.train()
    train = count_dispatch(lambda: model(**batch).loss.backward())
    assert train.syncs == floor, dict(train.sync_ops)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "pair_labels")}
    with torch.no_grad():
        infer = count_dispatch(lambda: model(**inputs))
    assert infer.syncs == floor, dict(infer.sync_ops)


def test_dispatch_counter_sees_syncs_and_kernels():
    x = torch.randn(4, 3)
    counter = count_dispatch(lambda: (x[x > 0].sum().item(), x.view(12), x.t()))
    assert counter.syncs == 2  # boolean-mask indexing and .item()
    assert counter.kernels == 4  # gt, index, sum, item: the two views launch nothing


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "mjere"])
def test_inference_compiles_to_one_graph(task, processor):
    """No graph break and no recompilation in inference (Viterbi / grid decoding included):
    torch.compile(fullgraph=True) fails on a break. aot_eager traces like inductor without
    generating code, which keeps the test fast on CPU."""
    import torch._dynamo

    model, batch = _model_and_batch(task, processor)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "pair_labels")}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        expected = model(**inputs)
        for _ in range(2):  # the second call must reuse the graph
            got = compiled(**inputs)
    assert torch.equal(got.predictions, expected.predictions)
    assert torch.allclose(got.logits, expected.logits, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("task", ["ner", "mre", "mjere"])
def test_bf16_autocast_train_and_inference(task, processor):
    """GPU training runs under bf16 autocast: the losses (CRF, Shapley games, grid
    log-softmaxes) are computed in fp32 inside, and decoding matches fp32 closely."""
    model, batch = _model_and_batch(task, processor)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "pair_labels")}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        predictions = model(**inputs).predictions
    with torch.no_grad():
        reference = model(**inputs).predictions
    assert predictions.shape == reference.shape
    assert (predictions == reference).float().mean() > 0.8  # bf16 may flip near-ties only
