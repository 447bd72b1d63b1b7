"""Fixtures only (helpers live in tests/helpers.py): the shipped MiniLM tokenizer, a processor,
tiny models, a tiny LLaVA, and a model trained by train.py. Nothing is downloaded.

Two tiers, as transformers' `@slow`: `make test` runs `pytest -m "not slow"` (the loop after
every edit, a few minutes on 2 cores); `.ci/run` (`make test-all`) runs every test. A test is
slow when it is marked `@pytest.mark.slow`, lives in a module of SLOW_MODULES (trainings, wheel
builds, the browser, the benchmarks' quick runs) or uses a fixture of SLOW_FIXTURES (a model
trained by train.py)."""

from __future__ import annotations

import pytest
import torch
import transformers

SLOW_MODULES = ("test_train.py", "test_train_control.py", "test_own_data.py", "test_packaging.py", "test_golden.py",
                "test_tasks_end_to_end.py", "test_benchmarks.py", "test_distributed.py", "test_app.py")
SLOW_FIXTURES = ("trained_model_dir",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES or set(SLOW_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


from tests.helpers import (
    MINILM_PATH, base_args, random_image, tiny_model, tiny_processor, tiny_text_model_at,
)


@pytest.fixture(autouse=True)
def context_cache_folder(tmp_path, monkeypatch):
    """Every test has its own context cache (never the user's `~/.cache`); subprocesses inherit it."""
    folder = tmp_path / "context-cache"
    monkeypatch.setenv("SHAPCA_CONTEXT_CACHE", str(folder))
    monkeypatch.delenv("SHAPCA_CONTEXT_CACHE_MAX_MB", raising=False)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM_PATH)


@pytest.fixture(scope="session")
def processor(tokenizer):
    return tiny_processor(tokenizer)


@pytest.fixture
def make_model():
    def factory(**overrides):
        return tiny_model("ner", **overrides)

    return factory


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


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    return tiny_text_model_at(tmp_path_factory.mktemp("tiny_bert"))


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
