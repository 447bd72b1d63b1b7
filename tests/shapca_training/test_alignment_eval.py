"""Alignment quality in evaluation (issue 44, item 1): top-1 retrieval of the matching partner
and the Shapley gap, in the Trainer's metrics and results.json when the split has contexts."""

import json
from types import SimpleNamespace

import pytest
import torch

from shapca_training.alignment_eval import AlignmentCollector, top1_retrieval


def test_retrieval_of_aligned_collapsed_and_permuted_features():
    torch.manual_seed(0)
    features = torch.randn(12, 8)
    assert top1_retrieval(features, features * 3.0) == 1.0  # perfectly aligned (cosine: scale-free)
    collapsed = torch.ones(12, 8)
    assert top1_retrieval(collapsed, collapsed) == pytest.approx(1 / 12)  # chance, exactly
    assert top1_retrieval(features, torch.zeros(12, 8)) == pytest.approx(1 / 12)
    one_hot = torch.eye(12)
    shifted = one_hot.roll(1, dims=0)  # each query's nearest candidate is another row's partner
    assert top1_retrieval(one_hot, shifted) == 0.0
    half = torch.cat([one_hot[:6], one_hot[6:].roll(1, dims=0)])  # 6 right, 6 on another's partner
    assert top1_retrieval(one_hot, half) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"must be \(N, d\) of one shape, got \(12, 8\) and \(11, 8\)"):
        top1_retrieval(features, features[:11])


def test_retrieval_is_the_same_in_blocks(monkeypatch):
    from shapca_training import alignment_eval

    torch.manual_seed(1)
    queries, candidates = torch.randn(50, 6), torch.randn(50, 6)
    whole = top1_retrieval(queries, candidates)
    monkeypatch.setattr(alignment_eval, "BLOCK", 7)
    assert top1_retrieval(queries, candidates) == whole


def output(text, context, image=None, games=None):
    return SimpleNamespace(text_embeds=text, context_embeds=context, image_embeds=image, shapley_games=games)


class Games:
    def __init__(self, values):
        self._values = values

    def valid_anchors(self):
        return torch.tensor(True)

    def values(self):
        return {k: torch.tensor(v) for k, v in self._values.items()}


def test_the_collector_scores_the_split_over_its_batches():
    torch.manual_seed(0)
    text = torch.randn(8, 4)
    image = torch.randn(8, 4)
    collector = AlignmentCollector()
    has_context = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1]).bool()  # row 3: no context
    has_image = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1]).bool()  # row 2: no image
    context_mask = torch.zeros(8, 5, dtype=torch.bool)
    context_mask[has_context, 2] = True
    games = Games({"shapley/semantic/context/matching": 0.6, "shapley/semantic/context/others": 0.1,
                   "shapley/semantic/text/matching": 0.5, "shapley/semantic/text/others": 0.2,
                   "shapley/modality/context/matching": 0.3, "shapley/modality/context/others": 0.3,
                   "shapley/modality/image/matching": 0.2, "shapley/modality/image/others": 0.0})
    for rows in (slice(0, 4), slice(4, 8)):  # two evaluation batches
        collector.add(output(text[rows], text[rows] * 2, image[rows], games),
                      {"context_mask": context_mask[rows], "has_image": has_image[rows]})
    metrics = collector.metrics()
    assert metrics == {
        "semantic_r1_c2t": 1.0, "semantic_r1_t2c": 1.0, "semantic_chance": round(1 / 7, 4), "semantic_pairs": 7,
        "modality_r1_c2i": pytest.approx(metrics["modality_r1_c2i"]), "modality_r1_i2c": metrics["modality_r1_i2c"],
        "modality_chance": round(1 / 6, 4), "modality_pairs": 6,
        "semantic_shapley_gap": 0.4, "modality_shapley_gap": 0.1,
    }
    both = has_context & has_image
    assert metrics["modality_r1_c2i"] == round(top1_retrieval(text[both] * 2, image[both]), 4)


def test_a_text_only_split_gets_no_alignment_figures():
    collector = AlignmentCollector()
    collector.add(output(torch.randn(4, 4), torch.zeros(4, 4)), {"context_mask": torch.zeros(4, 5, dtype=torch.bool)})
    collector.add(output(None, None), {"context_mask": torch.ones(4, 5, dtype=torch.bool)})  # no features computed
    assert collector.metrics() == {}
    assert AlignmentCollector().metrics() == {}


KEYS = ("alignment_semantic_r1_c2t", "alignment_semantic_r1_t2c", "alignment_modality_r1_c2i",
        "alignment_modality_r1_i2c", "alignment_semantic_chance", "alignment_modality_chance",
        "alignment_semantic_shapley_gap", "alignment_modality_shapley_gap")


@pytest.mark.slow
def test_a_tiny_multimodal_run_reports_its_alignment(tmp_path):
    """train.py on the synthetic corpus (images and contexts): every key in the validation and
    test metrics of results.json, in [0, 1], with chance 1 / the split's size; the card shows R@1."""
    import train
    from benchmarks import synthetic_multimodal
    from datasets_scripts import build

    synthetic_multimodal.write_corpus(tmp_path, {"train": 16, "validation": 8, "test": 10})
    build.main(["twitter2015", "--raw-dir", str(tmp_path / "raw"), "--output-dir", str(tmp_path / "built"),
                "--image-dir", str(tmp_path / "images"), "--contexts", str(tmp_path / "contexts.jsonl")])
    text_model = synthetic_multimodal.tiny_text_model(tmp_path / "bert")
    train.main([
        str(train.ROOT / "configs" / "twitter2015-minilm.yaml"), "--dataset_path", str(tmp_path / "built"),
        "--text_model", text_model, "--image_size", "32",
        "--vision_config", '{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}',
        "--projection_dim", "16", "--fusion_dim", "16", "--fusion_heads", "2", "--hidden_dim", "16",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4",
        "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "true", "--save_total_limit", "1",
    ])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for split, size in (("validation", 8), ("test", 10)):
        metrics = results[split]
        for key in KEYS:
            value = metrics[f"{split}_{key}"]
            assert isinstance(value, float) and 0.0 <= value <= 1.0 or key.endswith("gap"), (split, key, value)
        assert metrics[f"{split}_alignment_semantic_chance"] == round(1 / size, 4)
        assert metrics[f"{split}_alignment_semantic_pairs"] == size
    card = (tmp_path / "run" / "README.md").read_text()
    assert "R@1" in card and f"{results['test']['test_alignment_semantic_r1_c2t']:.2f}" in card


def test_a_text_only_run_has_no_alignment_keys(trained_model_dir):
    results = json.loads((trained_model_dir / "results.json").read_text())
    assert results["test"]["test_f1"] is not None
    assert not [key for split in ("validation", "test") for key in results[split] if "_alignment_" in key]
    assert "R@1" not in (trained_model_dir / "README.md").read_text()
