"""The task registry: one entry per task, read by everything else.

Vocabulary (used the same way in the config, the code and the docs):

* **task**: what is extracted, `config.task` — `"ner"` (multimodal NER), `"mre"` (multimodal
  relation extraction between given entity pairs) or `"mjere"` (multimodal joint entity and
  relation extraction).
* **head**: the model class that solves a task — the CRF token classifier
  (`ShapCAForTokenClassification`) or the word-pair grid (`ShapCAForWordPairExtraction`).
* **dataset**: a corpus that trains a task. Any corpus does (its labels are read from the
  data); the paper's corpora are named presets — `twitter2015` / `twitter2017` (NER), `mnre`
  (MRE), `mjere` (MJERE, rebuilt from MNRE) — with their sources, citations and the paper's F1.
* **pipeline task**: the name given to `transformers.pipeline(...)` — `multimodal-ner`,
  `multimodal-relation-extraction`, `multimodal-joint-extraction`.

An entry holds the label scheme (BIO tags or the grid's label groups), the grid codec, the
metric module, the model class, the Hub metadata and card wording, and the record formats
of the pipeline / CLI. Adding a task is one `TaskSpec` (and one `DatasetSpec` per preset corpus).
Builders and metric modules live outside the remote code, so they are named here by
module path / folder and resolved by the code that runs them.

This module travels to the Hub with the model (relative imports only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .grids import decode_mjere, decode_mre, encode_mjere, encode_mre

NONE_LABEL = "None"


@dataclass(frozen=True)
class DatasetSpec:
    """A corpus that trains a task."""

    name: str
    task: str
    pretty_name: str
    raw_folder: str  # folder under the repository's data/ with the shipped raw text
    builder: str  # "module:function" under datasets_scripts/ building the DatasetDict
    source_url: str
    citation: str  # the corpus' papers
    paper_f1: float  # Shap-CA, Table 1 of the paper (BERT-base + ResNet-152 + LLaVA contexts)
    test_size: int  # samples in the full test split: the paper's F1 compares only on that split
    hub_id: str | None = None  # a public Hub copy, where one is known
    license: str = "other"
    language: str = "en"


@dataclass(frozen=True)
class TaskSpec:
    """Everything that differs between tasks."""

    name: str
    pipeline_task: str
    model_class: str  # class name in modeling_shapca.py
    description: str
    label_groups: tuple[str, ...]  # word-pair label groups; () for BIO tags
    label_columns: tuple[str, ...]  # the built dataset's columns that hold the labels
    metric: str  # folder under metrics/
    metric_name: str  # what the main `f1` measures
    hub_pipeline_tag: str  # the Hub's closest pipeline tag (model card metadata)
    hub_task_ids: tuple[str, ...]
    tags: tuple[str, ...]
    head_description: str
    input_fields: tuple[str, ...]  # record keys of the pipeline / CLI beyond text|words, image, context
    output_key: str  # key under which the CLI writes the predictions
    usage: str  # pipeline call shown in the card and the README
    raw_builder: str  # "module:function" building a user's raw files of this task (any label set)
    raw_format: str  # what those files are (docs/data.md)
    encode_row: Callable[..., list] | None = None  # dataset row (+ codec options) -> label grid (word pairs)
    per_type_metrics: tuple[str, ...] = field(default=())

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
        label_columns=("tags",),
        metric="mner_f1",
        metric_name="entity F1 (conlleval)",
        hub_pipeline_tag="token-classification",
        hub_task_ids=("named-entity-recognition",),
        tags=("named-entity-recognition", "multimodal-ner"),
        head_description="MLP + CRF (Eqs. 12-13)",
        input_fields=(),
        output_key="entities",
        raw_builder="datasets_scripts.ner:build_ner",
        raw_format="CoNLL-style token<TAB>tag files, IMGID:<id> lines optional",
        usage=('pipe = pipeline("multimodal-ner", model="{repo_id}", trust_remote_code=True)\n'
               'pipe({{"text": "Kevin Durant enters Oracle Arena", "image": "tweet.jpg",\n'
               '      "context": "A basketball player on a court."}})\n'
               "# [{{'entity_group': 'PER', 'score': 0.98, 'word': 'Kevin Durant', 'start': 0, 'end': 12}}, ...]"),
    ),
    "mre": TaskSpec(
        name="mre",
        pipeline_task="multimodal-relation-extraction",
        model_class="ShapCAForWordPairExtraction",
        description="multimodal relation extraction",
        label_groups=("relation",),
        label_columns=("head", "tail", "relation"),
        metric="mre_f1",
        metric_name="micro F1 without None",
        hub_pipeline_tag="text-classification",
        hub_task_ids=("multi-class-classification",),
        tags=("relation-extraction", "multimodal-relation-extraction"),
        head_description="word-pair contrastive layer (Eqs. 14-18), one relation cell per pair",
        input_fields=("pairs",),
        output_key="relations",
        encode_row=_mre_grid,
        raw_builder="datasets_scripts.relations:build_relation_jsonl",
        raw_format="JSON lines, one entity pair per line",
        usage=('pipe = pipeline("multimodal-relation-extraction", model="{repo_id}", trust_remote_code=True)\n'
               'pipe({{"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]], "image": "tweet.jpg"}})\n'
               "# [{{'head': {{'word': 'Kevin Durant', 'start': 0, 'end': 12}}, 'tail': {{'word': 'Warriors', ...}},\n"
               "#   'label': '/per/org/member_of', 'score': 0.91}}]"),
    ),
    "mjere": TaskSpec(
        name="mjere",
        pipeline_task="multimodal-joint-extraction",
        model_class="ShapCAForWordPairExtraction",
        description="multimodal joint entity and relation extraction",
        label_groups=("entity", "relation_start", "relation_end"),
        label_columns=("entities", "triples"),
        metric="mjere_f1",
        metric_name="triple F1 (MJERE_j)",
        hub_pipeline_tag="token-classification",
        hub_task_ids=("named-entity-recognition",),
        tags=("relation-extraction", "joint-entity-relation-extraction", "multimodal-joint-extraction"),
        head_description="word-pair contrastive layer (Eqs. 14-18), entity boundary cells + two relation cells",
        input_fields=(),
        output_key="",  # the record gets the prediction's own keys: "entities" and "relations"
        encode_row=_mjere_grid,
        raw_builder="datasets_scripts.relations:build_joint_jsonl",
        raw_format="JSON lines, one sentence with its entities and relations per line",
        usage=('pipe = pipeline("multimodal-joint-extraction", model="{repo_id}", trust_remote_code=True)\n'
               'pipe({{"text": "Kevin Durant joins the Warriors", "image": "tweet.jpg"}})\n'
               "# {{'entities': [{{'entity_group': 'per', 'score': 0.97, 'word': 'Kevin Durant', ...}}, ...],\n"
               "#  'relations': [{{'head': {{...}}, 'tail': {{...}}, 'label': 'member_of', 'score': 0.88}}]}}"),
    ),
}

_TWITTER_URL = "https://github.com/jefferyYu/UMT"
_MNRE_URL = "https://github.com/thecharm/MNRE"

DATASETS: dict[str, DatasetSpec] = {
    "twitter2015": DatasetSpec(
        "twitter2015", "ner", "Twitter-2015", "twitter2015", "datasets_scripts.ner:build_twitter_ner",
        _TWITTER_URL, "Zhang et al., AAAI 2018; Yu et al., ACL 2020", 76.93, 3257),
    "twitter2017": DatasetSpec(
        "twitter2017", "ner", "Twitter-2017", "twitter2017", "datasets_scripts.ner:build_twitter_ner",
        _TWITTER_URL, "Lu et al., ACL 2018; Yu et al., ACL 2020", 88.32, 723),
    "mnre": DatasetSpec(
        "mnre", "mre", "MNRE", "mnre", "datasets_scripts.relations:build_mnre",
        _MNRE_URL, "Zheng et al., ICME 2021 (MNRE-2)", 67.94, 1614),
    "mjere": DatasetSpec(
        "mjere", "mjere", "MJERE", "mnre", "datasets_scripts.relations:build_mjere",
        "https://github.com/YuanLi95/EEGA-for-JMERE", "Yuan et al., AAAI 2023, rebuilt from MNRE-2", 55.95, 475),
}

PIPELINE_TASKS = {spec.pipeline_task: name for name, spec in TASKS.items()}


def get_task(name: str) -> TaskSpec:
    """The entry of a task (`ner`, `mre`, `mjere`) or of a pipeline task name."""
    name = PIPELINE_TASKS.get(name, name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)} "
                         f"(or a pipeline task: {sorted(PIPELINE_TASKS)})")
    return TASKS[name]


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


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


def check_label_groups(task: str, label_groups: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """The label groups of a word-pair task in canonical order; an error naming what is wrong."""
    expected = get_task(task).label_groups
    if not label_groups or set(label_groups) != set(expected):
        raise ValueError(f"a {task!r} config needs label_groups {expected}, got {sorted(label_groups or {})}")
    return {group: list(label_groups[group]) for group in expected}


def decode_grid(task: str, grid, n: int, pairs=None):
    """Word-level predictions of a word-pair grid `(groups, >=n, >=n)`: MRE the relation id of
    each `(head, tail)` span pair; MJERE `(entities, triples)` (see `word_pair.decode_mjere`)."""
    if task == "mre":
        return [decode_mre(grid, head, tail) for head, tail in pairs or []]
    return decode_mjere(grid, n)


__all__ = ["DATASETS", "DatasetSpec", "PIPELINE_TASKS", "TASKS", "TaskSpec", "check_label_groups", "decode_grid",
           "get_dataset", "get_task", "label_config"]
