"""Build a Shap-CA dataset from its raw files and save it (and optionally push it to the Hub).

    python -m datasets_scripts.build twitter2015 --raw-dir data/twitter2015 --output-dir built/twitter2015
    python -m datasets_scripts.build mjere --raw-dir data/mnre --image-dir imgs/ --contexts ctx.jsonl \
        --output-dir built/mjere --push-to-hub user/mjere-shapca

The `DatasetDict` (train/validation/test) is written with `save_to_disk(OUTPUT_DIR)`, next to
`build_report.json` (split sizes, IOB2 repairs, missing/corrupt images). `--push-to-hub`
uploads Parquet files per split with a generated dataset card; `--hub-folder DIR` writes
exactly those files to a local folder instead (no network).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets

from .contexts import load_contexts
from .mnre import build_mnre
from .twitter import build_twitter_ner

DATASETS = ("twitter2015", "twitter2017", "mnre", "mjere")
SOURCES = {
    "twitter2015": ("https://github.com/jefferyYu/UMT", "Zhang et al., AAAI 2018; Yu et al., ACL 2020"),
    "twitter2017": ("https://github.com/jefferyYu/UMT", "Lu et al., ACL 2018; Yu et al., ACL 2020"),
    "mnre": ("https://github.com/thecharm/MNRE", "Zheng et al., ICME 2021 (MNRE-2)"),
    "mjere": ("https://github.com/YuanLi95/EEGA-for-JMERE", "Yuan et al., AAAI 2023, rebuilt from MNRE-2"),
}


def build(name: str, raw_dir, image_dir=None, contexts_path=None) -> tuple[datasets.DatasetDict, dict]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    contexts = load_contexts(contexts_path)
    report: dict = {"dataset": name, "raw_dir": str(raw_dir), "contexts": str(contexts_path) if contexts_path else None}
    if name in ("twitter2015", "twitter2017"):
        dataset = build_twitter_ner(raw_dir, image_dir, contexts, report)
    else:
        dataset = build_mnre(raw_dir, image_dir, contexts, report, joint=name == "mjere")
    return dataset, report


def _label_sets(dataset: datasets.DatasetDict) -> dict[str, list[str]]:
    labels = {}
    for column, feature in dataset["train"].features.items():
        inner = getattr(feature, "feature", feature)
        if isinstance(inner, datasets.ClassLabel):
            labels[column] = inner.names
        elif isinstance(inner, dict):
            for key, sub in inner.items():
                if isinstance(sub, datasets.ClassLabel):
                    labels[f"{column}.{key}"] = sub.names
    return labels


def dataset_card(name: str, dataset: datasets.DatasetDict, report: dict) -> str:
    url, paper = SOURCES[name]
    sizes = "\n".join(f"| {split} | {len(ds):,} |" for split, ds in dataset.items())
    labels = "\n".join(f"- `{column}`: {', '.join(f'`{n}`' for n in names)}" for column, names in _label_sets(dataset).items())
    images = report.get("images", {})
    return f"""---
configs:
- config_name: default
  data_files:
{chr(10).join(f'  - split: {split}{chr(10)}    path: data/{split}-*.parquet' for split in dataset)}
---
# {name} for Shap-CA

Built with `python -m datasets_scripts.build {name}` from the Shap-CA repository.

## Source
Raw text from {url} ({paper}). Images come from the archive linked in that repository.

## License
The source repository states no license; the texts are tweets. Using them means accepting the
terms set by Twitter and by the dataset providers.

## Splits
| split | samples |
|---|---:|
{sizes}

## Labels
{labels}

## Images and contexts
Images found: {images.get('found', 0)}, missing: {images.get('missing', 0)}, corrupt: {images.get('corrupt', 0)}
(missing or corrupt images are kept as `image=None, has_image=False`, never dropped).
Contexts: `context` holds the description of the image written once per image by a large
multimodal model (LLaVA-1.5 in the paper) with `datasets_scripts.generate_contexts`; the
prompt and the generator are recorded in the contexts JSONL. Empty where no context was given
(contexts file: {report.get('contexts')}).

## Build report
```json
{json.dumps({k: v for k, v in report.items() if k != 'images'}, indent=2)}
```
"""


def export_hub_folder(dataset: datasets.DatasetDict, folder, card: str) -> list[Path]:
    """Write what `--push-to-hub` uploads: `data/<split>-00000-of-00001.parquet` and `README.md`."""
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    written = []
    for split, ds in dataset.items():
        path = folder / "data" / f"{split}-00000-of-00001.parquet"
        ds.to_parquet(str(path))
        written.append(path)
    (folder / "README.md").write_text(card, encoding="utf-8")
    written.append(folder / "README.md")
    return written


def push_to_hub(folder, repo_id: str, private: bool = False) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message="Build with datasets_scripts.build")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--raw-dir", required=True)
    parser.add_argument("--image-dir")
    parser.add_argument("--contexts", help="contexts JSONL (image_id, context, generator, prompt)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--push-to-hub", metavar="REPO_ID")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub-folder", help="write the Hub upload (Parquet + card) here instead of pushing")
    args = parser.parse_args(argv)

    dataset, report = build(args.dataset, args.raw_dir, args.image_dir, args.contexts)
    output = Path(args.output_dir)
    dataset.save_to_disk(str(output))
    (output / "build_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    sizes = {split: len(ds) for split, ds in dataset.items()}
    images = report["images"]
    print(f"{args.dataset}: {sizes}; images found {images['found']}, missing {images['missing']}, "
          f"corrupt {images['corrupt']}; saved to {output}")
    if args.push_to_hub or args.hub_folder:
        card = dataset_card(args.dataset, dataset, report)
        folder = Path(args.hub_folder) if args.hub_folder else output / "hub"
        export_hub_folder(dataset, folder, card)
        if args.push_to_hub:
            push_to_hub(folder, args.push_to_hub, args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return report


if __name__ == "__main__":
    main()
