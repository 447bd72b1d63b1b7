"""The paper's corpora as named presets, and the raw formats of a user's own corpus per task:
what the builders, training and the card need to know of a corpus beyond its files (sources,
citations, the paper's F1, the builder that reads it). Not part of the remote code.
"""

from __future__ import annotations

from dataclasses import dataclass


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
class RawFormat:
    """How a user's own raw files of a task are read (any label set)."""

    builder: str  # "module:function" under datasets_scripts/
    description: str  # what the files are (docs/data.md)
    tag: str  # the dataset card's task tag


RAW_FORMATS: dict[str, RawFormat] = {
    "ner": RawFormat("datasets_scripts.ner:build_ner", "CoNLL-style token<TAB>tag files, IMGID:<id> lines optional",
                     "named-entity-recognition"),
    "mre": RawFormat("datasets_scripts.relations:build_relation_jsonl", "JSON lines, one entity pair per line",
                     "relation-extraction"),
    "mjere": RawFormat("datasets_scripts.relations:build_joint_jsonl",
                       "JSON lines, one sentence with its entities and relations per line", "relation-extraction"),
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


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "DatasetSpec", "RAW_FORMATS", "RawFormat", "get_dataset"]
