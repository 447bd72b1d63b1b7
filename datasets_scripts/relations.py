"""Relation corpora -> `DatasetDict`: MNRE (MRE) and MJERE (joint entity-relation extraction,
built from MNRE) as presets, and any user corpus in JSON lines (`docs/data.md`).

Label sets are read from the data (relation names sorted, `None` first; entity types
sorted) unless a preset fixes them (MNRE's 23 relations in their order, MJERE's 4 types and
21 relations)."""

from __future__ import annotations

from pathlib import Path

import datasets
from tqdm.auto import tqdm

from .images import ImageResolver
from .ner import image_and_context
from .readers import NONE_LABEL, JointSentence, MnreInstance, read_joint_jsonl, read_mnre, read_relation_jsonl
from .splits import find_split_files

SPLIT_FILES = {"train": "mnre_train.txt", "validation": "mnre_val.txt", "test": "mnre_test.txt"}
JSONL_SUFFIXES = (".jsonl", ".json")
# The 23 MNRE-2 labels (the repository ships no rel2id: this order is ours, `None` first).
MNRE_RELATIONS = (
    "None", "/per/per/peer", "/per/org/member_of", "/loc/loc/contain", "/per/misc/present_in",
    "/org/loc/locate_at", "/per/loc/place_of_residence", "/misc/loc/held_on", "/org/org/subsidiary",
    "/per/per/alternate_names", "/per/per/couple", "/per/misc/nationality", "/misc/misc/part_of",
    "/org/org/alternate_names", "/per/loc/place_of_birth", "/per/misc/awarded", "/per/per/charges",
    "/per/per/parent", "/per/per/siblings", "/per/per/neighbor", "/per/per/alumi", "/per/misc/religion",
    "/per/misc/race",
)
MJERE_ENTITY_TYPES = ("per", "org", "loc", "misc")
MJERE_RELATIONS = tuple(sorted({r.rsplit("/", 1)[1] for r in MNRE_RELATIONS if r != NONE_LABEL}))


def _image_and_context_columns():
    return {
        "image_id": datasets.Value("string"),
        "image": datasets.Image(),
        "has_image": datasets.Value("bool"),
        "context": datasets.Value("string"),
    }


def mnre_features(relations=MNRE_RELATIONS) -> datasets.Features:
    span = {"start": datasets.Value("int32"), "end": datasets.Value("int32")}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "head": span,
            "tail": span,
            "relation": datasets.ClassLabel(names=list(relations)),
            **_image_and_context_columns(),
        }
    )


def mjere_features(types=MJERE_ENTITY_TYPES, relations=MJERE_RELATIONS) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "entities": datasets.List(
                {
                    "start": datasets.Value("int32"),
                    "end": datasets.Value("int32"),
                    "type": datasets.ClassLabel(names=list(types)),
                }
            ),
            "triples": datasets.List(
                {
                    "head_start": datasets.Value("int32"),
                    "head_end": datasets.Value("int32"),
                    "tail_start": datasets.Value("int32"),
                    "tail_end": datasets.Value("int32"),
                    "relation": datasets.ClassLabel(names=list(relations)),
                }
            ),
            **_image_and_context_columns(),
        }
    )


def split_relation(label: str) -> tuple[str, str, str]:
    """`/per/org/member_of` -> (`per`, `org`, `member_of`)."""
    _, head_type, tail_type, relation = label.split("/")
    return head_type, tail_type, relation


def group_mjere(instances: list[MnreInstance]) -> list[list[MnreInstance]]:
    """The JMERE recipe (EEGA-for-JMERE `data_process.py`), in file order: a `None` line is
    skipped; a non-`None` line starts a sample; the lines right after it with the very same
    tokens are merged into it while they are non-`None`; a same-token `None` line ends the
    sample and is consumed; any other line ends the sample and is read afresh."""
    samples, i = [], 0
    while i < len(instances):
        first = instances[i]
        i += 1
        if first.relation == NONE_LABEL:
            continue
        sample = [first]
        while i < len(instances) and instances[i].words == first.words:
            if instances[i].relation == NONE_LABEL:
                i += 1  # consumed, ends the sample
                break
            sample.append(instances[i])
            i += 1
        samples.append(sample)
    return samples


def _mnre_joint(sample: list[MnreInstance]) -> JointSentence:
    """An MJERE sample (a group of MNRE lines) as a joint sentence: entity types from the
    relation paths (`/per/org/member_of`: head `per`, tail `org`)."""
    entities: dict[tuple[int, int], str] = {}
    triples = []
    for inst in sample:
        head_type, tail_type, relation = split_relation(inst.relation)
        entities.setdefault(inst.head, head_type)
        entities.setdefault(inst.tail, tail_type)
        triples.append((*inst.head, *inst.tail, relation))
    first = sample[0]
    return JointSentence(first.words, sorted((s, e, t) for (s, e), t in entities.items()), triples,
                         first.image_id, first.line)


def relation_names(names) -> list[str]:
    """`None` then the other relation names of a corpus (an iterable of names), sorted."""
    return [NONE_LABEL] + sorted(set(names) - {NONE_LABEL})


def _rows(split: str, samples: list, features, resolver, contexts, joint: bool, desc_off: bool) -> datasets.Dataset:
    rows = {name: [] for name in features}
    for sample in tqdm(samples, desc=f"{split}: samples and images", unit="sample", disable=desc_off):
        image, has_image, context = image_and_context(resolver, contexts, sample.image_id, split)
        rows["id"].append(f"{split}-{sample.line}")
        rows["words"].append(sample.words)
        if joint:
            rows["entities"].append([{"start": s, "end": e, "type": t} for s, e, t in sample.entities])
            rows["triples"].append([dict(zip(("head_start", "head_end", "tail_start", "tail_end", "relation"), t))
                                    for t in sample.triples])
        else:
            rows["head"].append({"start": sample.head[0], "end": sample.head[1]})
            rows["tail"].append({"start": sample.tail[0], "end": sample.tail[1]})
            rows["relation"].append(sample.relation)
        rows["image_id"].append(sample.image_id)
        rows["image"].append(image)
        rows["has_image"].append(has_image)
        rows["context"].append(context)
    return datasets.Dataset.from_dict(rows, features=features)


def _build(read: dict, paths: dict, image_dir, contexts, report, features, joint: bool) -> datasets.DatasetDict:
    resolver = ImageResolver(image_dir)
    contexts = contexts or {}
    report = report if report is not None else {}
    splits = {}
    for split, (raw_lines, samples) in read.items():
        splits[split] = _rows(split, samples, features, resolver, contexts, joint, image_dir is None)
        report[split] = {"raw_lines": raw_lines, "samples": len(samples),
                         "with_context": sum(bool(c) for c in splits[split]["context"])}
    report["sources"] = {split: Path(path).name for split, path in paths.items()}
    report["labels"] = _label_report(features)
    report["images"] = resolver.report()
    return datasets.DatasetDict(splits)


def _label_report(features) -> dict:
    if "relation" in features:
        return {"relation": list(features["relation"].names)}
    return {"entity": list(features["entities"].feature["type"].names),
            "relation": list(features["triples"].feature["relation"].names)}


def build_mjere(raw_dir, image_dir=None, contexts=None, report=None) -> datasets.DatasetDict:
    """MJERE: one sample per sentence group of MNRE (see `group_mjere`)."""
    return build_mnre(raw_dir, image_dir, contexts, report, joint=True)


def build_mnre(raw_dir, image_dir=None, contexts=None, report=None, joint: bool = False) -> datasets.DatasetDict:
    """MNRE (one sample per entity pair) or, with `joint=True`, MJERE (one per sentence group)."""
    paths = {split: Path(raw_dir) / name for split, name in SPLIT_FILES.items()}
    read = {}
    for split, path in paths.items():
        instances = read_mnre(path)
        unknown = sorted({inst.relation for inst in instances} - set(MNRE_RELATIONS))
        if unknown:
            raise ValueError(f"{path}: unknown relation labels {unknown}; the MNRE preset has the 23 MNRE-2 "
                             "relations. For your own relation set use --dataset_path on the folder, or build it "
                             "as 'mre' / 'mjere' from JSON lines (docs/data.md)")
        samples = [_mnre_joint(group) for group in group_mjere(instances)] if joint else instances
        read[split] = (len(instances), samples)
    features = mjere_features() if joint else mnre_features()
    return _build(read, paths, image_dir, contexts, report, features, joint)


def build_relation_jsonl(raw_dir, image_dir=None, contexts=None, report=None) -> datasets.DatasetDict:
    """Relation extraction from JSON lines (`train.jsonl`, `validation.jsonl` / `valid` / `dev`,
    `test.jsonl`), any relation set; `None` is the no-relation label."""
    paths = find_split_files(raw_dir, JSONL_SUFFIXES)
    read = {split: read_relation_jsonl(path) for split, path in paths.items()}
    features = mnre_features(relation_names(inst.relation for instances in read.values() for inst in instances))
    return _build({s: (len(v), v) for s, v in read.items()}, paths, image_dir, contexts, report, features, False)


def build_joint_jsonl(raw_dir, image_dir=None, contexts=None, report=None) -> datasets.DatasetDict:
    """Joint extraction from JSON lines, one sentence per line, any entity types and relations."""
    paths = find_split_files(raw_dir, JSONL_SUFFIXES)
    read = {split: read_joint_jsonl(path) for split, path in paths.items()}
    sentences = [s for split in read.values() for s in split]
    types = sorted({e[2] for s in sentences for e in s.entities})
    relations = sorted({t[4] for s in sentences for t in s.triples})
    if not types:
        raise ValueError(f"{raw_dir}: no entity in any split; joint extraction needs labelled entities")
    return _build({s: (len(v), v) for s, v in read.items()}, paths, image_dir, contexts, report,
                  mjere_features(types, relations), True)
