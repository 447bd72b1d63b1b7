"""Shap-CA configuration.

A composite config in the style of `VisionTextDualEncoderConfig`: the text encoder and the
vision backbone are described by their own transformers configs (`text_config`,
`vision_config`), so any `AutoModel`-buildable text encoder or vision backbone can be used.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .pos import POS_TAGS
from .tasks import TASKS, check_label_groups

ALIGNMENTS = ("shapley", "infonce", "none")
# The Shapley alignment's objectives (`alignment.OBJECTIVES`, named here so the config checks
# them without importing torch): "paper" is Eq. 5 as written, the others documented remedies.
ALIGNMENT_OBJECTIVES = ("paper", "mean", "margin")
FUSIONS = ("adaptive", "plain")

# Universal POS tags (spaCy's `token.pos_`, index 0 is padding) live in pos.py.

# The numeric fields and their ranges: (lowest, highest, lowest allowed itself, highest allowed
# itself); every value finite. Checked at construction (`check_fields`), and by training on its
# YAML and command line before any data is read.
FLOAT_FIELDS = {
    "alpha": (0.0, None, True, None), "beta": (0.0, None, True, None), "tau": (0.0, None, False, None),
    "alignment_margin": (0.0, None, True, None), "refinement_scale": (0.0, None, True, None),
    "dropout": (0.0, 1.0, True, False), "initializer_range": (0.0, None, False, None),
    "context_dropout": (0.0, 1.0, True, True),
}
POSITIVE_INT_FIELDS = ("projection_dim", "fusion_dim", "fusion_heads", "pos_embedding_dim", "position_embedding_dim",
                       "hidden_dim", "max_words")


def _describe(low, high, low_in, high_in) -> str:
    parts = [f"{'>=' if low_in else '>'} {low:g}"] if low is not None else []
    parts += [f"{'<=' if high_in else '<'} {high:g}"] if high is not None else []
    return " and ".join(parts)


def check_fields(values: dict, prefix: str = "ShapCAConfig.") -> None:
    """The numeric fields among `values` (name -> value; None is left to the default): floats
    finite and in range (`FLOAT_FIELDS`), sizes positive ints (`POSITIVE_INT_FIELDS`). One
    `ValueError` naming the field (`prefix` + name), the range and the value."""
    import math

    for name, (low, high, low_in, high_in) in FLOAT_FIELDS.items():
        value = values.get(name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (low is None or (value >= low if low_in else value > low)) \
            and (high is None or (value <= high if high_in else value < high))
        if not ok:
            raise ValueError(f"{prefix}{name} must be a finite number {_describe(low, high, low_in, high_in)}, "
                             f"got {value!r}")
    for name in POSITIVE_INT_FIELDS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{prefix}{name} must be a positive int, got {value!r}")


class ShapCAConfig(PretrainedConfig):
    r"""Configuration of a Shap-CA model (Luo et al., ACM MM 2024).

    Args:
        text_config (`dict` or `PretrainedConfig`): config of the text encoder (Eq. 1), e.g. BERT.
        vision_config (`dict` or `PretrainedConfig`): config of the image encoder (Eq. 2),
            e.g. ResNet-152 or a CLIP vision tower.
        task (`str`): `"ner"` (CRF head), `"mre"` or `"mjere"` (word-pair grid head); see
            `tasks.py`, the task registry. Configs saved before the registry (`task="word_pair"`
            with `word_pair_scheme`) load as the task their scheme names.
        id2label / label2id: label vocabulary of the head.
        alpha, beta (`float`): weights of the semantic and modality losses (Eq. 19).
        tau (`float`): softmax temperature of the Shapley utility (Eq. 4). Not given in the paper.
        projection_dim (`int`): shared alignment space of `x_t`, `x_c`, `x_v` (interpretation:
            the paper aligns 768-d text with 2048-d image features, so both are projected).
        fusion_dim, fusion_heads: width `D` and heads of the adaptive fusion (Eqs. 8-11).
        pos_embedding_dim, position_embedding_dim: `d1` of `M_s` and `M_p` (100 in the paper).
        image_region_grid (`int` or `None`): a CNN feature map larger than
            `image_region_grid x image_region_grid` is average-pooled to that grid before it
            becomes the regions `H_v` of the fusion (default 7: the 7 x 7 map of ResNet-152 at
            224 px, the paper's setting, is left as is; a shallow ResNet's 28 x 28 map would
            otherwise give 784 regions and make the fusion cost 10x more). `None` keeps every
            position. Token sequences (ViT/CLIP) are never pooled.
        hidden_dim: `d2`, width of MLP1 (Eq. 12) and of the pair features (Eq. 14).
        max_words: largest number of words per sentence (size of the position embedding).
        refinement_scale (`float`): lambda of Eq. 17.
        alignment: `"shapley"` (Shap-CA), `"infonce"` (ablation "w/o Shapley value") or `"none"`.
        alignment_objective: the Shapley alignment's per-anchor loss (`alignment.OBJECTIVES`):
            `"paper"` (default) is Eq. 5 as written, which rewards a collapse of the alignment
            projections (all similarities -1; see docs/benchmarks.md); `"mean"` averages the
            non-matching players' values instead of summing them, `"margin"` is a hinge on that
            gap. Both are deviations from the paper, documented in `alignment.py`.
        alignment_margin (`float`): the margin of `alignment_objective="margin"`.
        context_in_alignment (`bool`): `False` is the ablation "w/o context in alignment":
            text and image are aligned directly (reported as the modality loss; the semantic loss is 0).
        fusion: `"adaptive"` (Eqs. 8-11) or `"plain"` (ablation "w/o context in fusion":
            cross-attention without the context gates).
        dropout (`float`): dropout on the fused features and in the heads.
        context_dropout (`float`): the share of training examples with a context whose context is
            removed (training mode only; `modeling_shapca.drop_contexts`), so that a model trained
            with contexts keeps its quality when served without a context generator. Not in the
            paper; default 0 (the paper's setting). Measured (docs/benchmarks.md, "Images at
            serving time", 10 seeds): with 0.3 a model loses nothing when served without
            contexts (with 0: -12.7 F1 on average); the change in absolute F1 is within the seed
            spread. Use 0.3 for a model that may be served without its generator.
        gather_alignment_features (`bool`): under `torch.distributed`, build the Shapley game
            over the features of all ranks (one global coalition) instead of the local batch.
        label_groups (`dict[str, list[str]]`): the word-pair head's label groups (each its own
            softmax), e.g. `{"relation": [...]}` for MRE. `id2label` lists them as `group:label`.
    """

    model_type = "shapca"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet"),
    }

    text_config: PretrainedConfig | dict | None = None
    vision_config: PretrainedConfig | dict | None = None
    task: str = "ner"
    alpha: float = 0.2
    beta: float = 0.4
    tau: float = 0.1
    projection_dim: int = 256
    fusion_dim: int = 256
    fusion_heads: int = 4
    pos_embedding_dim: int = 100
    position_embedding_dim: int = 100
    image_region_grid: int | None = 7
    hidden_dim: int = 256
    max_words: int = 256
    refinement_scale: float = 1.0
    alignment: str = "shapley"
    alignment_objective: str = "paper"
    alignment_margin: float = 0.5
    context_in_alignment: bool = True
    fusion: str = "adaptive"
    dropout: float = 0.1
    context_dropout: float = 0.0
    gather_alignment_features: bool = False
    label_groups: dict | None = None
    initializer_range: float = 0.02
    num_pos_tags: int = len(POS_TAGS)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PretrainedConfig.from_pretrained`; a local folder without `config.json` is an error
        here (not a default config that fails later with a long weight-mismatch report)."""
        import os

        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, kwargs.get("subfolder", ""), "config.json")):
            raise OSError(f"{folder} has no config.json: it is not a saved Shap-CA model (train.py and "
                          "save_pretrained write one next to the weights)")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __post_init__(self, **kwargs):
        legacy_scheme = kwargs.pop("word_pair_scheme", None)
        super().__post_init__(**kwargs)
        if self.task == "word_pair":  # configs saved before the task registry
            self.task = legacy_scheme or getattr(self, "word_pair_scheme", None) or "mre"
        if hasattr(self, "word_pair_scheme"):
            del self.word_pair_scheme
        for name, value, allowed in (
            ("task", self.task, tuple(TASKS)),
            ("alignment", self.alignment, ALIGNMENTS),
            ("alignment_objective", self.alignment_objective, ALIGNMENT_OBJECTIVES),
            ("fusion", self.fusion, FUSIONS),
        ):
            if value not in allowed:
                raise ValueError(f"ShapCAConfig.{name} must be one of {allowed}, got {value!r}")
        if TASKS[self.task].is_word_pair:
            # canonical group order (config.json is written with sorted keys)
            self.label_groups = check_label_groups(self.task, self.label_groups)
            flat = [f"{group}:{label}" for group, labels in self.label_groups.items() for label in labels]
            self.id2label = dict(enumerate(flat))
            self.label2id = {label: i for i, label in enumerate(flat)}
        if self.image_region_grid is not None and (not isinstance(self.image_region_grid, int) or self.image_region_grid < 1):
            raise ValueError(f"ShapCAConfig.image_region_grid must be a positive int or None, got {self.image_region_grid!r}")
        check_fields({name: getattr(self, name) for name in (*FLOAT_FIELDS, *POSITIVE_INT_FIELDS)})
        if self.fusion_dim % self.fusion_heads:
            raise ValueError(
                f"ShapCAConfig.fusion_dim ({self.fusion_dim}) must be divisible by fusion_heads ({self.fusion_heads})"
            )

    @property
    def is_word_pair(self) -> bool:
        """Whether the task is solved by the word-pair grid head (MRE, MJERE)."""
        return TASKS[self.task].is_word_pair

    @property
    def group_sizes(self) -> list[int]:
        return [len(labels) for labels in (self.label_groups or {}).values()]

    @property
    def text_hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vision_hidden_size(self) -> int:
        """Channel width of the vision backbone's last feature map / token sequence."""
        sizes = getattr(self.vision_config, "hidden_sizes", None)
        return sizes[-1] if sizes else self.vision_config.hidden_size

    @classmethod
    def from_text_vision_pretrained(
        cls, text_model_name_or_path: str, vision_model_name_or_path_or_config, **kwargs
    ) -> "ShapCAConfig":
        """Build a config from two backbone names/paths (Hub ids or local folders).

        `vision_model_name_or_path_or_config` may also be a `PretrainedConfig` or a dict with a
        `model_type` (for backbones built from a config, with random weights).
        """
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        vision_config = vision_model_name_or_path_or_config
        if isinstance(vision_config, str):
            vision_config = AutoConfig.from_pretrained(vision_config)
        elif isinstance(vision_config, dict):
            vision_config = AutoConfig.for_model(**vision_config)
        # A full CLIP config holds the vision tower as a sub-config.
        if getattr(vision_config, "vision_config", None) is not None and vision_config.model_type == "clip":
            vision_config = vision_config.vision_config
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)


ShapCAConfig.register_for_auto_class()

__all__ = ["FLOAT_FIELDS", "POSITIVE_INT_FIELDS", "POS_TAGS", "ShapCAConfig", "check_fields"]
