"""The task registry: one entry per task, read by everything else.

Vocabulary (used the same way in the config, the code and the docs):

* **task**: what is extracted, `config.task` — `"ner"` (multimodal NER), `"mre"` (multimodal
  relation extraction between given entity pairs) or `"mjere"` (multimodal joint entity and
  relation extraction).
* **head**: the model class that solves a task — the CRF token classifier
  (`ShapCAForTokenClassification`) or the word-pair grid (`ShapCAForWordPairExtraction`).
* **dataset**: a corpus that trains a task. Any corpus does (its labels are read from the
  data); the paper's corpora are named presets of the dataset builders.
* **pipeline task**: the name given to `transformers.pipeline(...)` — `multimodal-ner`,
  `multimodal-relation-extraction`, `multimodal-joint-extraction`.

An entry holds what the model and its pipeline need: the label scheme (BIO tags or the grid's
label groups), the grid codec, the model class, the pipeline task names and the key of its
records. What training, building and publishing know of a task (presets and builders, metrics,
card wording) lives with the code that uses it, outside this folder. Adding a task is one
`TaskSpec` here and one entry in each of those.

This module travels to the Hub with the model (relative imports only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .grids import encode_mjere, encode_mre

@dataclass(frozen=True)
class TaskSpec:
    """Everything that differs between tasks."""

    name: str
    pipeline_task: str
    model_class: str  # class name in modeling_shapca.py
    description: str
    label_groups: tuple[str, ...]  # word-pair label groups; () for BIO tags
    hub_pipeline_tag: str  # the Hub's closest pipeline tag, under which the pipeline is registered too
    output_key: str  # key under which the records of an input are written (the CLI's output lines)
    encode_row: Callable[..., list] | None = None  # dataset row (+ codec options) -> label grid (word pairs)

    @property
    def is_word_pair(self) -> bool:
        return bool(self.label_groups)

def _mre_grid(row: Mapping) -> list:
    return encode_mre(len(row["words"]), (row["head"]["start"], row["head"]["end"]),
                      (row["tail"]["start"], row["tail"]["end"]), row["relation"])

def _mjere_grid(row: Mapping, relation_cells: str = "all") -> list:
    return encode_mjere(len(row["words"]), row["entities"], row["triples"], relation_cells)

TASKS: dict[str, TaskSpec] = {
    "ner": TaskSpec(
        name="ner",
        pipeline_task="multimodal-ner",
        model_class="ShapCAForTokenClassification",
        description="multimodal named entity recognition",
        label_groups=(),
        hub_pipeline_tag="token-classification",
        output_key="entities",
    ),
    "mre": TaskSpec(
        name="mre",
        pipeline_task="multimodal-relation-extraction",
        model_class="ShapCAForWordPairExtraction",
        description="multimodal relation extraction",
        label_groups=("relation",),
        hub_pipeline_tag="text-classification",
        output_key="relations",
        encode_row=_mre_grid,
    ),
    "mjere": TaskSpec(
        name="mjere",
        pipeline_task="multimodal-joint-extraction",
        model_class="ShapCAForWordPairExtraction",
        description="multimodal joint entity and relation extraction",
        label_groups=("entity", "relation_start", "relation_end"),
        hub_pipeline_tag="token-classification",
        output_key="",  # the record gets the prediction's own keys: "entities" and "relations"
        encode_row=_mjere_grid,
    ),
}

PIPELINE_TASKS = {spec.pipeline_task: name for name, spec in TASKS.items()}

def get_task(name: str) -> TaskSpec:
    """The entry of a task (`ner`, `mre`, `mjere`) or of a pipeline task name."""
    name = PIPELINE_TASKS.get(name, name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)} "
                         f"(or a pipeline task: {sorted(PIPELINE_TASKS)})")
    return TASKS[name]

def check_label_groups(task: str, label_groups: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """The label groups of a word-pair task in canonical order; an error naming what is wrong."""
    expected = get_task(task).label_groups
    if not label_groups or set(label_groups) != set(expected):
        raise ValueError(f"a {task!r} config needs label_groups {expected}, got {sorted(label_groups or {})}")
    return {group: list(label_groups[group]) for group in expected}

__all__ = ["PIPELINE_TASKS", "TASKS", "TaskSpec", "check_label_groups", "get_task"]
