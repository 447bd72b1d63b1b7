"""Training data: a dataset's splits (built now from the raw files, or a built copy) and the
collator that turns rows into model inputs with the task's labels (from the task registry)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets

from modeling_shapca import ShapCAProcessor
from modeling_shapca.tasks import get_dataset, get_task

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("shapca.train")


def load_task_dataset(dataset: str, dataset_path=None, raw_dir=None, image_dir=None, contexts=None):
    """`(DatasetDict, context settings or None)`: a built dataset (a `save_to_disk` folder, a
    folder of Parquet files as the builder exports for the Hub, or a Hub id), or one built now
    from the raw files."""
    from datasets_scripts.build import build, load_built

    if dataset_path:
        return load_built(dataset_path)
    spec = get_dataset(dataset)
    built, report = build(dataset, raw_dir or ROOT / "data" / spec.raw_folder, image_dir, contexts)
    logger.info("built %s: %s", dataset, json.dumps({k: v for k, v in report.items() if k != "images"}))
    return built, report.get("context_settings")


class ShapCACollator:
    """Runs the processor on dataset rows, with word labels (NER) or the task's grid labels."""

    def __init__(self, processor: ShapCAProcessor, task: str, **codec_options):
        self.processor, self.spec, self.codec_options = processor, get_task(task), codec_options

    def labels(self, rows: list[dict]) -> dict:
        if self.spec.is_word_pair:
            return {"pair_labels": [self.spec.encode_row(row, **self.codec_options) for row in rows]}
        return {"word_labels": [row["tags"] for row in rows]}

    def __call__(self, rows: list[dict]) -> dict:
        return dict(
            self.processor(
                words=[row["words"] for row in rows],
                contexts=[row.get("context") or "" for row in rows],
                images=[row.get("image") if row.get("has_image") else None for row in rows],
                pos_tags=[row["pos_tags"] for row in rows],
                return_tensors="pt",
                **self.labels(rows),
            )
        )


def check_dataset(dataset: datasets.DatasetDict, name: str, task: str) -> None:
    """Refuse, before any heavy work, a dataset that cannot train the task: missing or empty
    splits, or columns of another task (e.g. a Twitter build given as `mnre`)."""
    needed = ("words", *get_task(task).label_columns)
    for split in ("train", "validation", "test"):
        if split not in dataset:
            raise ValueError(f"dataset {name!r} has no {split!r} split (splits: {sorted(dataset)})")
        if len(dataset[split]) == 0:
            raise ValueError(f"dataset {name!r}: the {split!r} split is empty")
    missing = [c for c in needed if c not in dataset["train"].column_names]
    if missing:
        raise ValueError(f"dataset {name!r} is for task {task!r} but lacks the columns {missing} "
                         f"(it has {dataset['train'].column_names}): is --dataset right for this --dataset_path?")
