import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_shapca import ShapCAForTokenClassification, ShapCAModel
from tests.helpers import MINILM_PATH, NER_LABELS, ROOT, tiny_vision_config


@pytest.fixture
def batch(processor, ner_batch):
    return processor(**ner_batch, label2id={label: i for i, label in enumerate(NER_LABELS)})


def test_forward_shapes_and_losses(make_model, batch):
    model = make_model().train()
    out = model(**batch)
    assert out.logits.shape == (3, 6, len(NER_LABELS))
    assert out.predictions is None  # no decoding in training mode
    expected = out.main_loss + 0.2 * out.semantic_loss + 0.4 * out.modality_loss
    assert torch.allclose(out.loss, expected)
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.predictions.shape == (3, 6)
    assert torch.all(out.predictions[batch["word_mask"] == 0] == -100)


def test_alignment_gradients_reach_both_encoders(make_model, batch):
    model = make_model().train()
    out = model(**batch)
    (out.semantic_loss + out.modality_loss).backward()
    text_grad = sum(p.grad.abs().sum() for p in model.shapca.text_model.parameters() if p.grad is not None)
    vision_grad = sum(p.grad.abs().sum() for p in model.shapca.vision_model.parameters() if p.grad is not None)
    assert text_grad > 0 and vision_grad > 0


@pytest.mark.parametrize("alignment", ["shapley", "infonce", "none"])
@pytest.mark.parametrize("context_in_alignment", [True, False])
@pytest.mark.parametrize("fusion", ["adaptive", "plain"])
def test_every_ablation_runs(make_model, batch, alignment, context_in_alignment, fusion):
    model = make_model(alignment=alignment, context_in_alignment=context_in_alignment, fusion=fusion).train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    if alignment == "none":
        assert out.semantic_loss == 0 and out.modality_loss == 0
    if not context_in_alignment:
        assert out.semantic_loss == 0


def _slice(batch, i):
    item = {}
    n_tokens = int(batch["attention_mask"][i].sum())
    n_words = int(batch["word_mask"][i].sum())
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "token_type_ids", "text_mask", "context_mask"):
            item[key] = value[i : i + 1, :n_tokens]
        elif key in ("word_index", "word_mask", "pos_ids", "labels"):
            item[key] = value[i : i + 1, :n_words]
        elif key == "pixel_values":
            if batch["has_image"][i]:
                item[key] = value[i : i + 1]
        else:
            item[key] = value[i : i + 1]
    return item


def test_batch_invariance_in_eval(make_model, batch):
    model = make_model().eval()
    with torch.no_grad():
        full = model(**batch)
        for i in range(3):
            single = model(**_slice(batch, i))
            n = int(batch["word_mask"][i].sum())
            assert torch.allclose(single.logits[0], full.logits[i, :n], atol=1e-5)
            assert torch.equal(single.predictions[0], full.predictions[i, :n])


def test_missing_image_and_empty_context(make_model, processor):
    model = make_model().eval()
    words = [["Paris", "floods"]]
    with torch.no_grad():
        no_image = model(**processor(words=words, pos_tags=[["PROPN", "NOUN"]]))
        marked_missing = processor(words=words, images=[None], pos_tags=[["PROPN", "NOUN"]])
        assert "pixel_values" not in marked_missing
        out = model(**marked_missing)
    assert torch.allclose(no_image.logits, out.logits)
    model.train()
    out = model(**processor(words=words, contexts=[""], images=[None], word_labels=[["B-LOC", "O"]],
                            label2id=model.config.label2id, pos_tags=[["PROPN", "NOUN"]]))
    assert torch.isfinite(out.loss) and out.semantic_loss == 0 and out.modality_loss == 0


def test_predictions_are_valid_iob2(make_model, batch):
    model = make_model().eval()
    with torch.no_grad():
        model.crf.transitions.fill_(0.0)
        model.crf.transitions[:, 2] = 10.0  # push everything towards I-PER
        model.crf.start_transitions[2] = 10.0
        out = model(**batch)
    for row, mask in zip(out.predictions, batch["word_mask"]):
        tags = [NER_LABELS[t] for t in row[mask.bool()].tolist()]
        previous = "O"
        for tag in tags:
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], tags
            previous = tag


def test_save_load_round_trip(make_model, batch, tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_shapca.ShapCAForTokenClassification"
    assert config["auto_map"]["AutoModelForTokenClassification"] == "modeling_shapca.ShapCAForTokenClassification"
    for name in ("modeling_shapca.py", "configuration_shapca.py", "alignment.py", "fusion.py", "crf.py"):
        assert (tmp_path / name).exists()
    loaded = ShapCAForTokenClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        model.crf.transitions[:, 2] = 10.0  # favour I-PER everywhere: only the constraints stop it
        before = model(**batch)
        loaded.crf.load_state_dict(model.crf.state_dict())
        after = loaded(**batch)
    assert torch.allclose(before.logits, after.logits)
    assert torch.equal(before.predictions, after.predictions)
    assert not (after.predictions == 2).all()


@pytest.mark.slow
def test_remote_code_round_trip_in_fresh_process(make_model, processor, batch, tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys, torch

        class HideRepository(importlib.abc.MetaPathFinder):  # as if the repository were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("modeling_shapca", "datasets_scripts"):
                    raise ImportError(name + " is hidden in this test")
                return None

        sys.meta_path.insert(0, HideRepository())
        assert not any(p.rstrip("/") == {str(ROOT)!r} for p in sys.path)
        try:
            import modeling_shapca
        except ImportError:
            pass
        else:
            raise SystemExit("the repository must not be importable here")
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)
        assert type(model).__name__ == "ShapCAForTokenClassification", type(model)
        assert type(processor).__name__ == "ShapCAProcessor"
        batch = torch.load({str(tmp_path / 'batch.pt')!r})
        with torch.no_grad():
            torch.save(model(**batch).logits, {str(tmp_path / 'logits.pt')!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=1e-6)


def test_from_text_vision_pretrained_loads_the_text_weights():
    from transformers import AutoModel

    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    model = ShapCAForTokenClassification.from_text_vision_pretrained(
        MINILM_PATH, tiny_vision_config(), id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    reference = AutoModel.from_pretrained(MINILM_PATH)
    ours = model.shapca.text_model.state_dict()
    for name, tensor in reference.state_dict().items():
        if name in ours:
            assert torch.equal(ours[name], tensor), name
    assert model.config.text_config.hidden_size == 384


def test_base_model_output(batch):
    from tests.helpers import tiny_config

    model = ShapCAModel(tiny_config()).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, compute_alignment=False)
    assert out.word_features.shape == (3, 6, 16)
    assert out.semantic_loss is None and out.image_embeds is None  # pooled features serve the alignment only
    trained = model(**inputs, compute_alignment=True)
    assert trained.image_embeds.shape == (3, 16) and trained.text_embeds.shape == (3, 16)


def test_cnn_maps_are_pooled_to_the_region_grid():
    from types import SimpleNamespace

    from modeling_shapca.modeling_shapca import vision_regions

    feature_map = torch.randn(2, 16, 28, 28)
    pooled = torch.randn(2, 16, 1, 1)
    out = SimpleNamespace(last_hidden_state=feature_map, pooler_output=pooled)
    regions, x_v = vision_regions(out, grid=7)
    assert regions.shape == (2, 49, 16)
    assert torch.allclose(regions[0, 0], feature_map[0, :, :4, :4].mean((-1, -2)), atol=1e-6)  # 4 x 4 blocks
    assert torch.equal(x_v, pooled.flatten(1))
    assert vision_regions(out, grid=None)[0].shape == (2, 784, 16)
    small = SimpleNamespace(last_hidden_state=torch.randn(2, 16, 7, 7), pooler_output=pooled)  # ResNet-152 at 224 px
    assert torch.equal(vision_regions(small, grid=7)[0], small.last_hidden_state.flatten(2).transpose(1, 2))
    tokens = SimpleNamespace(last_hidden_state=torch.randn(2, 50, 16), pooler_output=torch.randn(2, 16))  # ViT
    assert vision_regions(tokens, grid=7)[0].shape == (2, 50, 16)


@pytest.mark.parametrize("grid", [0, -1, "7", 2.5])
def test_region_grid_must_be_positive_int(grid):
    from tests.helpers import tiny_config

    with pytest.raises(ValueError, match="image_region_grid"):
        tiny_config(image_region_grid=grid)


@pytest.mark.parametrize("alignment,context_in_alignment,objective", [
    ("shapley", True, "paper"), ("shapley", False, "paper"), ("infonce", True, "paper"),
    ("shapley", True, "mean"), ("shapley", True, "margin"),
])
def test_captured_alignment_equals_eager(make_model, batch, alignment, context_in_alignment, objective, monkeypatch):
    """The compiled alignment region (train.py --capture_alignment) gives the eager losses and
    gradients for the same random orderings (aot_eager: the captured forward and backward graphs
    run without a C++ compiler; inductor fuses the same graphs). The region computes its
    orderings from a seed of the model's generator (`seeded_orders`); the eager run here draws
    the same ones."""
    from modeling_shapca import alignment as alignment_module

    def seeded(k, generator, device, games=None):
        orders = alignment_module.seeded_orders(alignment_module.draw_seed(generator, device), k, games or 1)
        return orders if games else orders[0]

    def step(model):
        model.shapca._shapley_generator = torch.Generator().manual_seed(7)  # the same Alg. 1 draws
        torch.manual_seed(0)
        out = model(**batch)
        (out.semantic_loss + out.modality_loss).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()
                 if p.grad is not None and name.startswith("shapca.")}
        return out, grads

    # margin 2.0: above any reachable gap, so the hinge is active and its gradient is compared
    model = make_model(alignment=alignment, context_in_alignment=context_in_alignment, dropout=0.0,
                       alignment_objective=objective, alignment_margin=2.0).train()
    with monkeypatch.context() as patch:
        patch.setattr(alignment_module, "_cyclic_orders", seeded)
        eager, eager_grads = step(model)
    model.zero_grad()
    model.shapca.capture_alignment(backend="aot_eager")
    captured, captured_grads = step(model)
    assert model.shapca._captured_alignment is not None
    assert float(eager.modality_loss.detach()) != 0.0
    for key in ("semantic_loss", "modality_loss", "main_loss"):
        assert torch.allclose(getattr(captured, key), getattr(eager, key), atol=1e-6), key
    assert set(captured_grads) == set(eager_grads) and any("text_projection" in n for n in eager_grads)
    for name, grad in eager_grads.items():
        assert torch.allclose(captured_grads[name], grad, atol=1e-6, rtol=1e-5), name
    model.shapca.capture_alignment(False)
    assert model.shapca._captured_alignment is None


# ---------------------------------------------------------------------------------- context dropout (issue 43)
def test_a_seeded_batch_loses_exactly_the_configured_share_of_contexts():
    from modeling_shapca.modeling_shapca import drop_contexts

    text = torch.zeros(8, 10, dtype=torch.bool)
    text[:, 1:3] = True  # [CLS] w w [SEP] context... [SEP]
    context = torch.zeros(8, 10, dtype=torch.bool)
    context[:6, 4:7] = True  # 6 of 8 rows have a context
    attention = torch.zeros(8, 10, dtype=torch.long)
    attention[:, :4] = 1
    attention[:6, 4:8] = 1
    for share, dropped in ((0.0, 0), (0.5, 3), (1 / 3, 2), (1.0, 6)):
        torch.manual_seed(0)
        new_attention, new_context = drop_contexts(attention, text, context, share)
        lost = context.any(1) & ~new_context.any(1)
        assert int(lost.sum()) == dropped
        assert torch.equal(new_attention[~lost], attention[~lost])  # the other rows are untouched
        assert torch.equal(new_attention[lost], torch.tensor([[1, 1, 1, 1] + [0] * 6] * dropped).reshape(-1, 10))
        assert not new_context[lost].any() and not (lost & ~context.any(1)).any()
    torch.manual_seed(0)
    first = drop_contexts(attention, text, context, 0.5)[1]
    torch.manual_seed(0)
    assert torch.equal(first, drop_contexts(attention, text, context, 0.5)[1])  # seeded: the same rows


def test_a_dropped_context_reads_as_no_context_and_evaluation_keeps_every_context(processor):
    from tests.helpers import tiny_model, tiny_text_config

    words = [["Kevin", "Durant", "enters", "Oracle", "Arena"], ["Go", "Bears"]]
    pos = [["PROPN"] * len(w) for w in words]
    labels = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["O", "B-ORG"]]
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    with_context = processor(words=words, contexts=["a basketball player", "a bear mascot"], pos_tags=pos,
                             word_labels=labels, label2id=label2id, return_tensors="pt")
    without = processor(words=words, contexts=["", ""], pos_tags=pos, word_labels=labels, label2id=label2id,
                        return_tensors="pt")
    quiet = tiny_text_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tiny_model("ner", context_dropout=1.0, dropout=0.0, text_config=quiet).train()
    dropped = model(**with_context)
    plain = model(**without)
    gap = lambda a, b: (a.logits - b.logits).abs().max().item()  # noqa: E731
    assert gap(dropped, plain) < 1e-7  # training: every context removed, read as no context
    assert torch.allclose(dropped.main_loss, plain.main_loss, atol=1e-7)
    model.eval()
    with torch.no_grad():
        assert gap(model(**with_context), model(**without)) > 1e-5  # evaluation: none removed
    model.config.context_dropout = 0.0
    model.train()
    assert gap(model(**with_context), plain) > 1e-5
