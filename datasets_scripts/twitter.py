"""Twitter-2015 / Twitter-2017 (MNER) -> `DatasetDict` with explicit Features."""

from __future__ import annotations

from pathlib import Path

import datasets
from tqdm.auto import tqdm

from .images import ImageResolver
from .readers import NER_LABELS, read_twitter_ner

SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}


def ner_features() -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "words": datasets.List(datasets.Value("string")),
            "tags": datasets.List(datasets.ClassLabel(names=list(NER_LABELS))),
            "image_id": datasets.Value("string"),
            "image": datasets.Image(),
            "has_image": datasets.Value("bool"),
            "context": datasets.Value("string"),
        }
    )


def build_twitter_ner(
    raw_dir: str | Path,
    image_dir: str | Path | None = None,
    contexts: dict[str, str] | None = None,
    report: dict | None = None,
) -> datasets.DatasetDict:
    """Read `train.txt` / `valid.txt` / `test.txt` of a Twitter MNER folder.

    Images are looked up as `<image_dir>/<IMGID>.jpg`; missing or unreadable images give
    `image=None, has_image=False` and are listed in `report` (never dropped). Contexts are
    joined by image id (empty string where none).
    """
    raw_dir = Path(raw_dir)
    resolver = ImageResolver(image_dir, suffix=".jpg")
    contexts = contexts or {}
    splits = {}
    report = report if report is not None else {}
    for split, filename in SPLIT_FILES.items():
        sentences, read_report = read_twitter_ner(raw_dir / filename)
        rows = {name: [] for name in ner_features()}
        for sentence in tqdm(sentences, desc=f"{split}: sentences and images", unit="sentence",
                             disable=image_dir is None):
            image = resolver.resolve(sentence.image_id, split)
            rows["id"].append(f"{split}-{sentence.line}")
            rows["words"].append(sentence.words)
            rows["tags"].append(sentence.tags)
            rows["image_id"].append(sentence.image_id)
            rows["image"].append(image)
            rows["has_image"].append(image is not None)
            # the context generator keys records by file name (`<IMGID>.jpg`)
            rows["context"].append(contexts.get(sentence.image_id) or contexts.get(f"{sentence.image_id}.jpg", ""))
        splits[split] = datasets.Dataset.from_dict(rows, features=ner_features())
        report[split] = {
            "sentences": read_report.sentences,
            "tokens": read_report.tokens,
            "iob2_repaired_tags": read_report.repaired_tags,
            "iob2_repaired_sentences": read_report.repaired_sentences,
            "with_context": sum(bool(c) for c in rows["context"]),
        }
    report["images"] = resolver.report()
    return datasets.DatasetDict(splits)
