import pytest

from modeling_shapca import ShapCAConfig
from tests.helpers import MINILM_PATH, tiny_config, tiny_vision_config


def test_round_trip(tmp_path):
    config = tiny_config(alpha=0.3, alignment="infonce", fusion="plain", context_in_alignment=False)
    config.save_pretrained(tmp_path)
    loaded = ShapCAConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.text_config.hidden_size == 32 and loaded.vision_hidden_size == 16
    assert loaded.id2label[1] == "B-PER"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "qa"}, "task"),
        ({"alignment": "triplet"}, "alignment"),
        ({"alignment_objective": "collapse"}, "alignment_objective"),
        ({"alignment_margin": -1.0}, "alignment_margin"),
        ({"alignment_margin": "1"}, "alignment_margin"),
        ({"fusion": "concat"}, "fusion"),
        ({"tau": 0.0}, "tau"),
        ({"fusion_dim": 10, "fusion_heads": 4}, "divisible"),
        # issue 42: every float finite and in range, every size a positive int, at construction
        ({"alignment_margin": float("nan")}, r"^ShapCAConfig.alignment_margin must be a finite number >= 0, got nan$"),
        ({"alignment_margin": float("inf")}, r"^ShapCAConfig.alignment_margin must be a finite number >= 0, got inf$"),
        ({"tau": float("nan")}, r"^ShapCAConfig.tau must be a finite number > 0, got nan$"),
        ({"tau": float("inf")}, r"^ShapCAConfig.tau must be a finite number > 0, got inf$"),
        ({"tau": "0.1"}, r"^ShapCAConfig.tau must be a finite number > 0, got '0.1'$"),
        ({"alpha": float("nan")}, r"^ShapCAConfig.alpha must be a finite number >= 0, got nan$"),
        ({"alpha": -3}, r"^ShapCAConfig.alpha must be a finite number >= 0, got -3$"),
        ({"beta": True}, r"^ShapCAConfig.beta must be a finite number >= 0, got True$"),
        ({"dropout": 1.0}, r"^ShapCAConfig.dropout must be a finite number >= 0 and < 1, got 1.0$"),
        ({"context_dropout": 1.5}, r"^ShapCAConfig.context_dropout must be a finite number >= 0 and <= 1, got 1.5$"),
        ({"refinement_scale": float("-inf")}, r"refinement_scale must be a finite number >= 0"),
        ({"max_words": 0}, r"^ShapCAConfig.max_words must be a positive int, got 0$"),
        ({"hidden_dim": 16.0}, r"^ShapCAConfig.hidden_dim must be a positive int, got 16.0$"),
    ],
)
def test_invalid_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_defaults_follow_the_paper():
    config = ShapCAConfig()
    assert (config.alpha, config.beta, config.refinement_scale) == (0.2, 0.4, 1.0)
    assert config.pos_embedding_dim == config.position_embedding_dim == 100
    assert config.text_config.model_type == "bert" and config.vision_config.model_type == "resnet"


def test_from_text_vision_pretrained_reads_local_backbone():
    config = ShapCAConfig.from_text_vision_pretrained(MINILM_PATH, tiny_vision_config())
    assert config.text_config.hidden_size == 384 and config.text_config.num_hidden_layers == 6
    assert config.vision_config.model_type == "resnet"


def test_word_pair_config_round_trip_keeps_group_order(tmp_path):
    groups = {"entity": ["None", "per"], "relation_start": ["None", "peer"], "relation_end": ["None", "peer"]}
    config = tiny_config(task="mjere", label_groups=groups)
    assert config.id2label[2] == "relation_start:None" and config.group_sizes == [2, 2, 2]
    config.save_pretrained(tmp_path)  # written with sorted keys
    loaded = ShapCAConfig.from_pretrained(tmp_path)
    assert list(loaded.label_groups) == ["entity", "relation_start", "relation_end"]
    assert loaded.id2label == config.id2label
