"""Any corpus a user has, as the `DatasetDict` a task trains on, and what that data is.

`load_data(path)` takes, for any label set:

* a raw folder: CoNLL-style NER files (`train.txt` / `.conll` / `.tsv`, `IMGID:` lines
  optional), relation or joint-extraction JSON lines (`train.jsonl`, ...), or MNRE's own files
  (`mnre_train.txt`, ...); see `docs/data.md`;
* a built folder: `datasets_scripts.build` output (`save_to_disk`), any `save_to_disk` folder,
  or a folder of Parquet files (`data/<split>-*.parquet`, `<split>-*.parquet` or
  `<split>/*.parquet`);
* a Hub dataset id (`datasets.load_dataset`; offline it is read from the local cache).

Columns (the CoNLL convention of transformers' token-classification examples and SpanMarker):
`tokens` (or `words`), `ner_tags` (or `tags`; `ClassLabel` ints or strings), `image`
(`Image()` or a path inside `image_dir`, or the dataset folder), `context`; relation data has
`head` / `tail` (`{"start", "end"}` or `[start, end]`) and `relation`; joint data `entities`
(`[{"start", "end", "type"}]`) and `triples` (the built form) or `relations`
(`[{"head": [s, e], "tail": [s, e], "relation"}]`). `Columns` maps other names. Splits are
`train`, `validation` (or `valid` / `dev` / `val`) and `test`.

Labels are read from the data: a `ClassLabel`'s names, else the sorted set of strings (BIO
tags are checked and repaired to IOB2 as the raw readers do; relations get `None` first).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from modeling_shapca.inference import is_word_span
from modeling_shapca.tasks import TASKS, get_task

from .contexts import load_context_settings, load_contexts
from .images import ImageResolver
from .ner import CONLL_SUFFIXES, ner_features
from .presets import DATASETS, RAW_FORMATS, get_dataset
from .readers import DataFormatError, bio_label_names, normalize_tag, to_iob2, types_of
from .relations import JSONL_SUFFIXES, mjere_features, mnre_features, relation_names
from .splits import canonical_split, has_split_files

DATASET_INFO_FILE = "shapca_dataset.json"  # what the data is, next to it
SPLITS = ("train", "validation", "test")


@dataclass
class Columns:
    """The user's column names (None: the documented defaults, tried in order)."""

    tokens: str | None = None  # tokens, words, token
    tags: str | None = None  # ner_tags, tags
    image: str | None = None  # image
    context: str | None = None  # context

    DEFAULTS = {"tokens": ("tokens", "words", "token"), "tags": ("ner_tags", "tags"), "image": ("image",),
                "context": ("context",)}

    def find(self, role: str, columns: list[str], required: bool = True) -> str | None:
        given = getattr(self, role)
        if given is not None:
            if given not in columns:
                raise ValueError(f"--{role}_column {given!r} is not a column of the dataset (columns: {columns})")
            return given
        found = next((c for c in self.DEFAULTS[role] if c in columns), None)
        if found is None and required:
            raise ValueError(f"the dataset has no {role} column (looked for {', '.join(self.DEFAULTS[role])}; "
                             f"columns: {columns}); name it with --{role}_column")
        return found


@dataclass
class DataInfo:
    """What a dataset is: the name cards and results give it, its task, the paper corpus it is
    (only when built from that corpus by its preset builder), its Hub id, how its contexts were
    written, and the raw file of each split (for `file:line` in errors)."""

    name: str
    task: str
    preset: str | None = None
    hub_id: str | None = None
    context_settings: dict | None = None
    sources: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"dataset": self.name, **{k: v for k, v in asdict(self).items() if k != "name"}}

    @classmethod
    def from_json(cls, data: dict) -> "DataInfo":
        name = data["dataset"]
        preset = data.get("preset", name if name in DATASETS else None)  # files written before presets were named
        return cls(name=name, task=data.get("task") or get_dataset(name).task, preset=preset,
                   hub_id=data.get("hub_id"), context_settings=data.get("context_settings"),
                   sources=data.get("sources") or {})

    def where(self, split: str, row_id: str, index: int) -> str:
        """Where a row comes from: `file:line` for rows built from raw files, else split and row."""
        prefix = f"{split}-"
        source = self.sources.get(split)
        if source and row_id.startswith(prefix) and row_id[len(prefix):].isdigit():
            return f"{source}:{row_id[len(prefix):]}"
        return f"{self.name} split {split!r} row {index}" + (f" (id {row_id!r})" if row_id else "")

    def is_full_preset(self, dataset: datasets.DatasetDict) -> bool:
        """Whether this data is the paper's corpus with its whole test split."""
        return bool(self.preset) and len(dataset["test"]) == get_dataset(self.preset).test_size


# ---------------------------------------------------------------------------------- raw folders
def raw_task(folder: Path) -> str | None:
    """The task of a raw folder's files, from their format; None if it has none."""
    if has_split_files(folder, (".txt",), prefix="mnre_"):
        return "mre"
    if has_split_files(folder, JSONL_SUFFIXES):
        train = next(p for p in (folder / f"train{s}" for s in JSONL_SUFFIXES) if p.is_file())
        with train.open(encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            record = json.loads(first)
        except json.JSONDecodeError as error:
            raise DataFormatError(train, 1, f"not JSON ({error.msg})") from None
        if isinstance(record, dict) and "entities" in record:
            return "mjere"
        if isinstance(record, dict) and "h" in record and "t" in record:
            return "mre"
        raise DataFormatError(train, 1, "a JSON-lines record needs 'h' and 't' (relation extraction) or "
                                        "'entities' (joint extraction); see docs/data.md")
    if has_split_files(folder, CONLL_SUFFIXES):
        return "ner"
    return None


def build_raw(folder, task: str, image_dir=None, contexts_path=None, name: str | None = None,
              preset: str | None = None) -> tuple[datasets.DatasetDict, DataInfo, dict]:
    """Build a raw folder: with a preset's builder (its fixed label set) or the task's own
    builder for any label set."""
    folder = Path(folder)
    builder_path = get_dataset(preset).builder if preset else RAW_FORMATS[get_task(task).name].builder
    if not preset and has_split_files(folder, (".txt",), prefix="mnre_"):
        builder_path = DATASETS["mjere" if task == "mjere" else "mnre"].builder  # MNRE's files, MNRE's relations
    module, function = builder_path.split(":")
    contexts = load_contexts(contexts_path)
    report: dict = {"dataset": name or preset or folder.resolve().name, "task": task,
                    "contexts": Path(contexts_path).name if contexts_path else None,
                    "context_settings": load_context_settings(contexts_path)}
    dataset = getattr(importlib.import_module(module), function)(folder, image_dir, contexts, report)
    for split, ds in dataset.items():
        if len(ds) == 0:
            raise ValueError(f"{report['dataset']}: the {split!r} split read from {folder} is empty; a dataset "
                             "needs samples in train, validation and test")
    info = DataInfo(report["dataset"], task, preset, None, report["context_settings"], report.get("sources", {}))
    return dataset, info, report


# ---------------------------------------------------------------------------------- built data
def _parquet_files(folder: Path) -> dict[str, list[str]] | None:
    """Parquet files per split: the split is named by the file (`train-00000-of-00001.parquet`,
    `dev.parquet`) or by its folder (`train/0000.parquet`)."""
    files: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.parquet")):
        names = (path.name.split("-")[0].split(".")[0], path.parent.name)
        split = next((canonical_split(n) for n in names if canonical_split(n)), None)
        if split:
            files.setdefault(split, []).append(str(path))
    return files or None


def _read_built(path) -> tuple[datasets.DatasetDict, dict | None, str | None]:
    """(dataset, the info file's content, Hub id) of a save_to_disk / Parquet folder or Hub id."""
    folder = Path(path)
    if not folder.exists():
        return datasets.load_dataset(str(path)), None, str(path)
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; give a folder (raw files, save_to_disk, Parquet) or a Hub id")
    info_file = folder / DATASET_INFO_FILE
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.exists() else None
    if (folder / "dataset_dict.json").exists():
        try:
            return datasets.load_from_disk(str(folder)), info, None
        except (IndexError, FileNotFoundError) as error:  # datasets cannot read back an empty split
            raise ValueError(f"{folder}: the saved dataset cannot be read ({type(error).__name__}: {error}); "
                             "a split saved empty is the usual cause: rebuild it") from error
    parquet = _parquet_files(folder)
    if parquet:
        return datasets.load_dataset("parquet", data_files=parquet), info, None
    raise ValueError(f"{folder} holds no data this project reads: raw files (train.txt / train.conll / train.jsonl / "
                     "mnre_train.txt, ...), a save_to_disk folder, or Parquet files per split (docs/data.md)")


def _splits(dataset, name: str) -> datasets.DatasetDict:
    renamed = {}
    for split, ds in dataset.items():
        canonical = canonical_split(split)
        if canonical is None:
            continue
        if canonical in renamed:
            raise ValueError(f"{name}: two splits are {canonical!r} ({sorted(dataset)}); keep one")
        renamed[canonical] = ds
    missing = [s for s in SPLITS if s not in renamed]
    if missing:
        raise ValueError(f"{name}: no {missing} split (splits: {sorted(dataset)}); a dataset needs train, "
                         "validation (or valid / dev) and test")
    for split in SPLITS:
        if len(renamed[split]) == 0:
            raise ValueError(f"{name}: the {split!r} split is empty")
    return datasets.DatasetDict({s: renamed[s] for s in SPLITS})


def infer_task(columns: list[str], name: str, given: Columns) -> str:
    if "entities" in columns:
        return "mjere"
    if "relation" in columns and "head" in columns:
        return "mre"
    if given.find("tags", columns, required=False):
        return "ner"
    raise ValueError(f"{name}: cannot tell the task from the columns {columns}: NER needs ner_tags (or tags), "
                     "relation extraction head / tail / relation, joint extraction entities; or give --task")


def _label_names(values, feature) -> tuple[list, list[str] | None]:
    """Strings of a label column and its ClassLabel names (None when the column holds strings)."""
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, datasets.ClassLabel):
        return values, list(inner.names)
    return values, None


def _images(ds, column: str | None, resolver: ImageResolver, split: str) -> list:
    if column is None:
        return [None] * len(ds)
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return list(ds.cast_column(column, datasets.Image(decode=False))[column])
    values = list(ds[column])
    if not all(v is None or isinstance(v, str) for v in values):
        raise ValueError(f"column {column!r} must be an Image() feature or image paths, not {feature}")
    return [resolver.resolve(v, split) if v else None for v in values]


def _common(ds, cols: Columns, resolver, split: str, name: str) -> dict:
    columns = ds.column_names
    context_col = cols.find("context", columns, required=False)
    images = _images(ds, cols.find("image", columns, required=False), resolver, split)
    contexts = [c or "" for c in list(ds[context_col])] if context_col else [""] * len(ds)
    if not all(isinstance(c, str) for c in contexts):
        raise ValueError(f"{name}: column {context_col!r} must hold strings")
    ids = [str(i) for i in list(ds["id"])] if "id" in columns else [f"{split}-row{i}" for i in range(len(ds))]
    image_ids = [str(i or "") for i in list(ds["image_id"])] if "image_id" in columns else [""] * len(ds)
    return {"id": ids, "image_id": image_ids, "image": images, "has_image": [i is not None for i in images],
            "context": contexts}


def _ner_rows(ds, cols: Columns, split: str, name: str, report: dict) -> dict:
    columns = ds.column_names
    words_col, tags_col = cols.find("tokens", columns), cols.find("tags", columns)
    tags, names = _label_names(list(ds[tags_col]), ds.features[tags_col])
    words = list(ds[words_col])
    rows_tags, repaired = [], 0
    for i, (sentence, sentence_tags) in enumerate(zip(words, tags)):
        where = f"{name} split {split!r} row {i}"
        if not isinstance(sentence, list) or not sentence or not all(isinstance(w, str) and w for w in sentence):
            raise ValueError(f"{where}: {words_col!r} must be a non-empty list of non-empty strings")
        if len(sentence_tags) != len(sentence):
            raise ValueError(f"{where}: {len(sentence)} tokens but {len(sentence_tags)} tags")
        strings = [names[t] for t in sentence_tags] if names else sentence_tags
        try:
            checked = [normalize_tag(t if isinstance(t, str) else repr(t), "", 0) for t in strings]
        except DataFormatError as error:
            raise ValueError(f"{where}: {error.message}") from None
        fixed, changed = to_iob2(checked)
        repaired += changed
        rows_tags.append(fixed)
    report[split] = {"sentences": len(words), "iob2_repaired_tags": repaired}
    return {"words": [list(w) for w in words], "tags": rows_tags}


def _span(value, n: int, where: str, role: str) -> dict:
    if isinstance(value, dict):
        value = value.get("pos", [value.get("start"), value.get("end")])
    if not is_word_span(value, n):
        raise ValueError(f"{where}: {role} {value!r} is not a word span [start, end) inside {n} words")
    return {"start": int(value[0]), "end": int(value[1])}


def _mre_rows(ds, cols: Columns, split: str, name: str) -> dict:
    words = list(ds[cols.find("tokens", ds.column_names)])
    relations, names = _label_names(list(ds["relation"]), ds.features["relation"])
    rows = {"words": [], "head": [], "tail": [], "relation": []}
    for i, (sentence, head, tail, relation) in enumerate(zip(words, list(ds["head"]), list(ds["tail"]), relations)):
        where = f"{name} split {split!r} row {i}"
        rows["words"].append(list(sentence))
        rows["head"].append(_span(head, len(sentence), where, "head"))
        rows["tail"].append(_span(tail, len(sentence), where, "tail"))
        rows["relation"].append(names[relation] if names else relation)
    return rows


def _mjere_rows(ds, cols: Columns, split: str, name: str) -> dict:
    columns = ds.column_names
    words = list(ds[cols.find("tokens", columns)])
    entity_feature = ds.features["entities"].feature
    type_names = list(entity_feature["type"].names) if isinstance(entity_feature.get("type"), datasets.ClassLabel) else None
    relation_column = "triples" if "triples" in columns else "relations" if "relations" in columns else None
    relation_names = None
    if relation_column:
        inner = ds.features[relation_column].feature
        if isinstance(inner.get("relation"), datasets.ClassLabel):
            relation_names = list(inner["relation"].names)
    rows = {"words": [], "entities": [], "triples": []}
    relation_lists = list(ds[relation_column]) if relation_column else [[] for _ in words]
    for i, (sentence, entity_list, relation_list) in enumerate(zip(words, list(ds["entities"]), relation_lists)):
        where = f"{name} split {split!r} row {i}"
        entities = []
        for entity in entity_list:
            span = _span(entity, len(sentence), where, "entity")
            kind = type_names[entity["type"]] if type_names else entity["type"]
            entities.append({**span, "type": kind})
        spans = {(e["start"], e["end"]) for e in entities}
        triples = []
        for relation in relation_list:
            if relation_column == "triples":
                head = _span([relation["head_start"], relation["head_end"]], len(sentence), where, "head")
                tail = _span([relation["tail_start"], relation["tail_end"]], len(sentence), where, "tail")
            else:
                head = _span(relation["head"], len(sentence), where, "head")
                tail = _span(relation["tail"], len(sentence), where, "tail")
            for role, span in (("head", head), ("tail", tail)):
                if (span["start"], span["end"]) not in spans:
                    raise ValueError(f"{where}: relation {role} {span} is not a listed entity")
            label = relation_names[relation["relation"]] if relation_names else relation["relation"]
            triples.append({"head_start": head["start"], "head_end": head["end"], "tail_start": tail["start"],
                            "tail_end": tail["end"], "relation": label})
        rows["words"].append(list(sentence))
        rows["entities"].append(entities)
        rows["triples"].append(triples)
    return rows


def _kind(feature):
    """A feature's structure without ClassLabel names (to compare schemas)."""
    if isinstance(feature, dict):
        return {k: _kind(v) for k, v in feature.items()}
    if isinstance(feature, (datasets.List, datasets.Sequence, datasets.LargeList)):
        return ["list", _kind(feature.feature)]
    if isinstance(feature, datasets.Value):
        return feature.dtype
    return type(feature).__name__


def _is_built(dataset: datasets.DatasetDict, task: str) -> bool:
    """Already in this project's built form (the builders' Features): nothing to convert."""
    features = dataset["train"].features
    expected = {"ner": ner_features, "mre": mnre_features, "mjere": mjere_features}[task]()
    return set(expected) <= set(features) and all(_kind(features[k]) == _kind(expected[k]) for k in expected)


def to_task_dataset(dataset, task: str, name: str, columns: Columns | None = None, image_dir=None,
                    base_dir=None) -> tuple[datasets.DatasetDict, dict]:
    """A `datasets` dataset in the user's columns -> the task's built form with `ClassLabel`
    features whose names are read from the data. Returns the dataset and a report."""
    dataset = _splits(dataset, name)
    if _is_built(dataset, task):
        return dataset, {}
    cols = columns or Columns()
    present = dataset["train"].column_names
    needed = {"ner": [], "mre": ["head", "tail", "relation"], "mjere": ["entities"]}[task]
    missing = [c for c in needed if c not in present]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing} of {task!r} data (columns: {present}); is --task right?")
    resolver = ImageResolver(image_dir or base_dir)
    report: dict = {}
    rows = {}
    for split in SPLITS:
        ds = dataset[split]
        if task == "ner":
            part = _ner_rows(ds, cols, split, name, report)
        elif task == "mre":
            part = _mre_rows(ds, cols, split, name)
        else:
            part = _mjere_rows(ds, cols, split, name)
        rows[split] = {**_common(ds, cols, resolver, split, name), **part}
    if task == "ner":
        features = ner_features(bio_label_names(types_of(t for r in rows.values() for s in r["tags"] for t in s)))
    elif task == "mre":
        features = mnre_features(relation_names(r for split in rows.values() for r in split["relation"]))
    else:
        types = sorted({e["type"] for split in rows.values() for s in split["entities"] for e in s})
        relations = sorted({t["relation"] for split in rows.values() for s in split["triples"] for t in s})
        features = mjere_features(types, relations)
    built = datasets.DatasetDict({split: datasets.Dataset.from_dict({k: rows[split][k] for k in features},
                                                                    features=features) for split in SPLITS})
    report["images"] = resolver.report()
    return built, report


def load_data(path, task: str | None = None, name: str | None = None, columns: Columns | None = None,
              image_dir=None, contexts=None) -> tuple[datasets.DatasetDict, DataInfo, dict]:
    """`(dataset in the task's built form, DataInfo, report)` of any supported source (module
    docstring). `task` is inferred from the data when not given; `name` overrides the name the
    data is shown under (default: the builder's name, the Hub id, or the folder name)."""
    folder = Path(path)
    if task is not None:
        get_task(task)
    if folder.is_dir():
        found = raw_task(folder)
        if found:
            if task and task != found and not (task == "mjere" and found == "mre"):
                raise ValueError(f"{folder} holds {found!r} files, not {task!r} data")
            dataset, info, report = build_raw(folder, task or found, image_dir, contexts, name)
            return dataset, info, report
    raw, stored, hub_id = _read_built(path)
    label = name or (stored or {}).get("dataset") or hub_id or folder.resolve().name
    columns_of = raw[next(iter(raw))].column_names
    stored_task = (stored or {}).get("task")
    if task and stored_task and task != stored_task:
        raise ValueError(f"{path} holds {stored_task!r} data ({label}), not {task!r} data: is --task right for "
                         "this --dataset_path?")
    inferred = task or stored_task or infer_task(columns_of, label, columns or Columns())
    dataset, report = to_task_dataset(raw, inferred, label, columns, image_dir,
                                      folder if folder.is_dir() else None)
    if stored:
        info = DataInfo.from_json(stored)
        info.name, info.task = label, inferred
    else:
        info = DataInfo(label, inferred, hub_id=hub_id)
    if contexts:
        dataset = _join_contexts(dataset, contexts, info)
    return dataset, info, report


def _join_contexts(dataset: datasets.DatasetDict, contexts_path, info: DataInfo) -> datasets.DatasetDict:
    """Contexts from a JSONL file joined by image id where a row has none."""
    contexts = load_contexts(contexts_path)
    info.context_settings = load_context_settings(contexts_path) or info.context_settings

    def join(context, image_id):
        return {"context": context or contexts.get(image_id, "")}

    # only the two columns are read: the images are not decoded for this
    return dataset.map(join, input_columns=["context", "image_id"], desc="joining contexts")


__all__ = ["Columns", "DATASET_INFO_FILE", "DataInfo", "build_raw", "infer_task", "load_data", "raw_task",
           "to_task_dataset"]
