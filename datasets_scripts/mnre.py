"""MNRE (MRE) and MJERE (joint entity-relation extraction, built from MNRE) -> `DatasetDict`."""

from __future__ import annotations

from pathlib import Path

import datasets
from tqdm.auto import tqdm

from .images import ImageResolver
from .readers import MnreInstance, read_mnre

SPLIT_FILES = {"train": "mnre_train.txt", "validation": "mnre_val.txt", "test": "mnre_test.txt"}
NONE_LABEL = "None"
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


def mnre_features() -> datasets.Features:
    span = {"start": datasets.Value("int32"), "end": datasets.Value("int32")}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "head": span,
            "tail": span,
            "relation": datasets.ClassLabel(names=list(MNRE_RELATIONS)),
            **_image_and_context_columns(),
        }
    )


def mjere_features() -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "entities": datasets.List(
                {
                    "start": datasets.Value("int32"),
                    "end": datasets.Value("int32"),
                    "type": datasets.ClassLabel(names=list(MJERE_ENTITY_TYPES)),
                }
            ),
            "triples": datasets.List(
                {
                    "head_start": datasets.Value("int32"),
                    "head_end": datasets.Value("int32"),
                    "tail_start": datasets.Value("int32"),
                    "tail_end": datasets.Value("int32"),
                    "relation": datasets.ClassLabel(names=list(MJERE_RELATIONS)),
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


def _mjere_row(sample: list[MnreInstance]) -> dict:
    entities: dict[tuple[int, int], str] = {}
    triples = []
    for inst in sample:
        head_type, tail_type, relation = split_relation(inst.relation)
        entities.setdefault(inst.head, head_type)
        entities.setdefault(inst.tail, tail_type)
        triples.append(
            {"head_start": inst.head[0], "head_end": inst.head[1], "tail_start": inst.tail[0],
             "tail_end": inst.tail[1], "relation": relation}
        )
    return {
        "entities": [{"start": s, "end": e, "type": t} for (s, e), t in sorted(entities.items())],
        "triples": triples,
    }


def build_mjere(raw_dir, image_dir=None, contexts=None, report=None) -> datasets.DatasetDict:
    """MJERE: one sample per sentence group of MNRE (see `group_mjere`)."""
    return build_mnre(raw_dir, image_dir, contexts, report, joint=True)


def build_mnre(raw_dir, image_dir=None, contexts=None, report=None, joint: bool = False) -> datasets.DatasetDict:
    """MNRE (one sample per entity pair) or, with `joint=True`, MJERE (one per sentence group)."""
    raw_dir = Path(raw_dir)
    resolver = ImageResolver(image_dir)
    contexts = contexts or {}
    report = report if report is not None else {}
    features = mjere_features() if joint else mnre_features()
    splits = {}
    for split, filename in SPLIT_FILES.items():
        instances = read_mnre(raw_dir / filename)
        unknown = sorted({inst.relation for inst in instances} - set(MNRE_RELATIONS))
        if unknown:
            raise ValueError(f"{raw_dir / filename}: unknown relation labels {unknown}")
        groups = group_mjere(instances) if joint else [[inst] for inst in instances]
        rows = {name: [] for name in features}
        for group in tqdm(groups, desc=f"{split}: samples and images", unit="sample", disable=image_dir is None):
            first = group[0]
            image = resolver.resolve(first.image_id, split)
            rows["id"].append(f"{split}-{first.line}")
            rows["words"].append(first.words)
            if joint:
                row = _mjere_row(group)
                rows["entities"].append(row["entities"])
                rows["triples"].append(row["triples"])
            else:
                rows["head"].append({"start": first.head[0], "end": first.head[1]})
                rows["tail"].append({"start": first.tail[0], "end": first.tail[1]})
                rows["relation"].append(first.relation)
            rows["image_id"].append(first.image_id)
            rows["image"].append(image)
            rows["has_image"].append(image is not None)
            rows["context"].append(contexts.get(first.image_id, ""))
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
        report[split] = {"raw_lines": len(instances), "samples": len(groups),
                         "with_context": sum(bool(c) for c in rows["context"])}
    report["images"] = resolver.report()
    return datasets.DatasetDict(splits)
