"""NER corpora in CoNLL style (Twitter-2015 / Twitter-2017 and any user corpus) ->
`DatasetDict` with explicit Features.

The label set is read from the data (the union of the types in the three splits, sorted;
`O` first) unless a preset fixes it: the Twitter presets keep PER/LOC/ORG/MISC in their order
so that models trained before stay comparable.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from tqdm.auto import tqdm

from .images import ImageResolver
from .readers import ENTITY_TYPES, NER_LABELS, TWITTER_ALIASES, bio_label_names, read_conll_ner, types_of
from .splits import find_split_files

TWITTER_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
CONLL_SUFFIXES = (".txt", ".conll", ".tsv", ".iob", ".bio")


def ner_features(labels=NER_LABELS) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "tags": datasets.List(datasets.ClassLabel(names=list(labels))),
            "image_id": datasets.Value("string"),
            "image": datasets.Image(),
            "has_image": datasets.Value("bool"),
            "context": datasets.Value("string"),
        }
    )


def image_and_context(resolver: ImageResolver, contexts: dict[str, str], image_id: str, split: str) -> tuple:
    """`(image, has_image, context)` of a sample; no image id: no image, no context. The
    context generator keys records by file name, so `<id>` and `<id>.jpg` both match."""
    if not image_id:
        return None, False, ""
    image = resolver.resolve(image_id, split)
    context = contexts.get(image_id) or contexts.get(f"{image_id}{resolver.suffix}", "")
    return image, image is not None, context


def build_ner(raw_dir, image_dir=None, contexts=None, report=None, *, files: dict | None = None,
              types: tuple[str, ...] | None = None, aliases=None, require_image_ids: bool = False,
              image_suffix: str = "") -> datasets.DatasetDict:
    """Read the train / validation / test files of a CoNLL-style NER folder.

    Images are looked up as `<image_dir>/<image id><image_suffix>`; missing or unreadable
    images give `image=None, has_image=False` and are listed in `report` (never dropped).
    Contexts are joined by image id (empty string where none).
    """
    raw_dir = Path(raw_dir)
    paths = {split: raw_dir / name for split, name in files.items()} if files else find_split_files(raw_dir, CONLL_SUFFIXES)
    resolver = ImageResolver(image_dir, suffix=image_suffix)
    contexts = contexts or {}
    report = report if report is not None else {}
    read = {split: read_conll_ner(path, types, aliases, require_image_ids) for split, path in paths.items()}
    labels = bio_label_names(types or types_of(tag for sentences, _ in read.values() for s in sentences for tag in s.tags))
    features = ner_features(labels)
    splits = {}
    for split, (sentences, read_report) in read.items():
        rows = {name: [] for name in features}
        for sentence in tqdm(sentences, desc=f"{split}: sentences and images", unit="sentence",
                             disable=image_dir is None):
            image, has_image, context = image_and_context(resolver, contexts, sentence.image_id, split)
            rows["id"].append(f"{split}-{sentence.line}")
            rows["words"].append(sentence.words)
            rows["tags"].append(sentence.tags)
            rows["image_id"].append(sentence.image_id)
            rows["image"].append(image)
            rows["has_image"].append(has_image)
            rows["context"].append(context)
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
        report[split] = {
            "sentences": read_report.sentences,
            "tokens": read_report.tokens,
            "iob2_repaired_tags": read_report.repaired_tags,
            "iob2_repaired_sentences": read_report.repaired_sentences,
            "with_context": sum(bool(c) for c in rows["context"]),
        }
    report["sources"] = {split: path.name for split, path in paths.items()}
    report["labels"] = labels
    report["images"] = resolver.report()
    return datasets.DatasetDict(splits)


def build_twitter_ner(raw_dir, image_dir=None, contexts=None, report=None) -> datasets.DatasetDict:
    """Twitter-2015 / 2017: `train.txt` / `valid.txt` / `test.txt`, IMGID on every sentence,
    PER/LOC/ORG/MISC (`OTHER` read as `MISC`), images `<IMGID>.jpg`."""
    return build_ner(raw_dir, image_dir, contexts, report, files=TWITTER_FILES, types=ENTITY_TYPES,
                     aliases=TWITTER_ALIASES, require_image_ids=True, image_suffix=".jpg")
