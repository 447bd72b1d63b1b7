"""Training data: a dataset's splits (a paper corpus built now from its raw files, or any
corpus a user has: raw files, a built or `datasets` folder, a Hub id), the checks made before
any model is built, and the collator that turns rows into model inputs with the task's labels
(from the task registry)."""

from __future__ import annotations

import json
import logging

from typing import Mapping

import datasets

from datasets_scripts.presets import get_dataset
from modeling_shapca import ShapCAProcessor
from datasets_scripts.readers import NONE_LABEL
from modeling_shapca.tasks import get_task

from .resources import resource

logger = logging.getLogger("shapca.train")
SHOWN = 5  # offending rows named in an error


# The built dataset's columns that hold each task's labels.
LABEL_COLUMNS = {"ner": ("tags",), "mre": ("head", "tail", "relation"), "mjere": ("entities", "triples")}


def label_config(task: str, features: Mapping) -> dict:
    """Config kwargs describing a task's labels, read from a built dataset's `Features`:
    `id2label` for BIO tags, `label_groups` for the word-pair grid (`None` first)."""
    spec = get_task(task)
    if spec.name == "ner":
        names = list(features["tags"].feature.names)
        return {"task": "ner", "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if spec.name == "mre":
        return {"task": "mre", "label_groups": {"relation": list(features["relation"].names)}}
    types = [NONE_LABEL] + list(features["entities"].feature["type"].names)
    relations = [NONE_LABEL] + list(features["triples"].feature["relation"].names)
    return {"task": "mjere", "label_groups": {"entity": types, "relation_start": relations, "relation_end": relations}}


def load_task_dataset(data_args):
    """`(DatasetDict, DataInfo)`: `--dataset_path` (any source `datasets_scripts.sources`
    reads, labels from the data), or the preset `--dataset` built from its raw files (shipped
    `data/<dataset>` or `--raw_dir`)."""
    from datasets_scripts.sources import Columns, build_raw, load_data

    if data_args.dataset_path:
        columns = Columns(data_args.tokens_column, data_args.tags_column, data_args.image_column,
                          data_args.context_column)
        dataset, info, report = load_data(data_args.dataset_path, data_args.task, data_args.dataset_name, columns,
                                          data_args.image_dir, data_args.contexts)
    else:
        spec = get_dataset(data_args.dataset)
        if data_args.task and data_args.task != spec.task:
            raise ValueError(f"--task {data_args.task} does not fit the preset {data_args.dataset!r} "
                             f"(a {spec.task!r} corpus); give your own data with --dataset_path")
        raw = data_args.raw_dir or resource("data", spec.raw_folder)
        dataset, info, report = build_raw(raw, spec.task, data_args.image_dir, data_args.contexts, preset=spec.name)
        if data_args.dataset_name:
            info.name = data_args.dataset_name
    logger.info("data %s (%s): %s", info.name, info.task,
                json.dumps({k: v for k, v in report.items() if k not in ("images", "info")}, default=str))
    return dataset, info


def check_lengths(dataset: datasets.DatasetDict, info, max_words: int, tokenizer, max_length: int) -> None:
    """Refuse, before any model is built, sentences the model cannot take whole: more words
    than `max_words`, or a text alone longer than `max_length` subwords. The error names
    `file:line` (rows built from raw files) or the split and row."""
    problems = []
    for split, ds in dataset.items():
        words, ids = list(ds["words"]), list(ds["id"])
        lengths = [len(ids_) for ids_ in tokenizer(words, is_split_into_words=True, add_special_tokens=True)["input_ids"]]
        for i, (sentence, subwords) in enumerate(zip(words, lengths)):
            if len(sentence) > max_words:
                problems.append(f"{info.where(split, ids[i], i)}: {len(sentence)} words > max_words={max_words}")
            elif subwords > max_length:
                problems.append(f"{info.where(split, ids[i], i)}: {subwords} subwords > max_length={max_length}")
    if problems:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        raise ValueError(f"{len(problems)} sentence(s) of {info.name} are longer than the model takes: {shown}. "
                         "Raise --max_words / --max_length (the position embedding and the subword budget) or split "
                         "those sentences in the data; training never drops or cuts a sentence")


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
    needed = ("words", *LABEL_COLUMNS[get_task(task).name])
    for split in ("train", "validation", "test"):
        if split not in dataset:
            raise ValueError(f"dataset {name!r} has no {split!r} split (splits: {sorted(dataset)})")
        if len(dataset[split]) == 0:
            raise ValueError(f"dataset {name!r}: the {split!r} split is empty")
    missing = [c for c in needed if c not in dataset["train"].column_names]
    if missing:
        raise ValueError(f"dataset {name!r} is for task {task!r} but lacks the columns {missing} "
                         f"(it has {dataset['train'].column_names}): is --task right for this --dataset_path?")


def split_labels(split: datasets.Dataset, task: str) -> dict[str, int]:
    """How often each label of `task` occurs in a split: NER entity types (from the B- / I-
    tags, counted per entity start), MRE relations, MJERE entity types and relations (`None`
    not counted)."""
    import collections

    counts: collections.Counter = collections.Counter()
    name = get_task(task).name
    if name == "ner":
        names = split.features["tags"].feature.names
        for tags in split["tags"]:
            counts.update(names[t][2:] for t in tags if names[t].startswith("B-"))
    elif name == "mre":
        names = split.features["relation"].names
        counts.update(names[r] for r in split["relation"] if names[r] != NONE_LABEL)
    else:
        types = split.features["entities"].feature["type"].names
        relations = split.features["triples"].feature["relation"].names
        for entities, triples in zip(split["entities"], split["triples"]):
            counts.update(types[e["type"]] for e in entities)
            counts.update(relations[t["relation"]] for t in triples)
    return dict(counts)


def warn_about_labels(dataset: datasets.DatasetDict, info, task: str) -> list[str]:
    """Warnings (logged, and returned) about labels the training split cannot teach: a label
    seen only in the validation or test split (it stays in the model's label set, so the scores
    count it, but no training example has it), and a training split with no entity or relation
    at all. Each names the split and, for raw files, the file."""
    used = {split: split_labels(ds, task) for split, ds in dataset.items()}
    messages = []
    where = {split: f"{info.name} split {split!r}" + (f" ({info.sources[split]})" if info.sources.get(split) else "")
             for split in dataset}
    if not used.get("train"):
        what = "entity" if get_task(task).name == "ner" else "entity or relation"
        messages.append(f"{where['train']} has no {what} at all (every label is O / None): the model can only learn "
                        "to predict none; check the tags column and the file")
    for split in ("validation", "test"):
        for label in sorted(set(used.get(split, {})) - set(used.get("train", {}))):
            messages.append(f"{where[split]}: the label {label!r} occurs {used[split][label]} time(s) but never in "
                            f"{where['train']}: the model keeps it in its label set and cannot learn it")
    for message in messages:
        logger.warning(message)
    return messages
