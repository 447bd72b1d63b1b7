"""Build a Shap-CA dataset from its raw files and save it (and optionally push it to the Hub).

    python -m datasets_scripts.build twitter2015 --raw-dir data/twitter2015 --output-dir built/twitter2015
    python -m datasets_scripts.build mjere --raw-dir data/mnre --image-dir imgs/ --contexts ctx.jsonl \
        --output-dir built/mjere --push-to-hub user/mjere-shapca

The datasets are the task registry's (`modeling_shapca/tasks.py`). The `DatasetDict`
(train/validation/test) is written with `save_to_disk(OUTPUT_DIR)`, next to
`build_report.json` (split sizes, IOB2 repairs, missing/corrupt/invalid images, the context
generator's settings). `--push-to-hub` uploads Parquet files per split, image bytes embedded,
with a generated dataset card; `--hub-folder DIR` writes exactly those files to a local folder
instead (no network). Such a folder trains like the `save_to_disk` one (`--dataset_path DIR`).

Every output folder is written beside its target and renamed into place when complete: an
interrupted build leaves the previous output untouched. An empty split is an error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import datasets

from modeling_shapca.tasks import DATASETS, get_dataset, get_task

from .contexts import load_contexts, load_context_settings

DATASET_INFO_FILE = "shapca_dataset.json"  # name and context settings, next to the data


def build(name: str, raw_dir, image_dir=None, contexts_path=None) -> tuple[datasets.DatasetDict, dict]:
    spec = get_dataset(name)
    contexts = load_contexts(contexts_path)
    settings = load_context_settings(contexts_path)
    report: dict = {"dataset": name, "task": spec.task,
                    "contexts": Path(contexts_path).name if contexts_path else None,
                    "context_settings": settings}
    module, function = spec.builder.split(":")
    builder = getattr(importlib.import_module(module), function)
    dataset = builder(raw_dir, image_dir, contexts, report)
    for split, ds in dataset.items():
        if len(ds) == 0:
            raise ValueError(f"{name}: the {split!r} split read from {raw_dir} is empty; a dataset needs samples "
                             "in train, validation and test")
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
    spec = get_dataset(name)
    task = get_task(spec.task)
    sizes = "\n".join(f"| {split} | {len(ds):,} |" for split, ds in dataset.items())
    labels = "\n".join(f"- `{column}`: {', '.join(f'`{n}`' for n in names)}" for column, names in _label_sets(dataset).items())
    images = report.get("images", {})
    settings = report.get("context_settings")
    generator = (f"`{settings['model']}`, prompt \"{settings['prompt']}\", max_new_tokens {settings['max_new_tokens']}, "
                 f"temperature {settings['temperature']}") if settings else "none (no contexts given)"
    public_report = {k: v for k, v in report.items() if k not in ("images", "context_settings")}
    data_files = "\n".join(f"  - split: {split}\n    path: data/{split}-*.parquet" for split in dataset)
    task_category = "token-classification" if spec.task != "mre" else "text-classification"
    return f"""---
pretty_name: {spec.pretty_name} for Shap-CA
license: {spec.license}
language:
- {spec.language}
task_categories:
- {task_category}
tags:
- multimodal
- {task.tags[0]}
- shap-ca
configs:
- config_name: default
  data_files:
{data_files}
---
# {spec.pretty_name} for Shap-CA

{task.description.capitalize()} data, built with `python -m datasets_scripts.build {name}` from the
Shap-CA repository. Images are embedded in the Parquet files.

## Source
Raw text from {spec.source_url} ({spec.citation}). Images come from the archive linked in that repository.

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
Images found: {images.get('found', 0)}, missing: {images.get('missing', 0)}, corrupt: {images.get('corrupt', 0)},
invalid ids (outside the image folder): {images.get('invalid', 0)}. Missing, corrupt and invalid images are
kept as `image=None, has_image=False`, never dropped.
Contexts: `context` holds the description of the image written once per image by a large
multimodal model (LLaVA-1.5 in the paper) with `datasets_scripts.generate_contexts`.
Generator: {generator}. Empty where no context was given.

## Build report
```json
{json.dumps(public_report, indent=2)}
```

## Citation
{spec.citation}; Shap-CA: Luo, Xia, Shen, Li, "Shapley Value-based Contrastive Alignment for
Multimodal Information Extraction", ACM MM 2024.
"""


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place; an older target is removed only after that succeeds."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old)


def _staging_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def export_hub_folder(dataset: datasets.DatasetDict, folder, card: str, info: dict | None = None) -> list[Path]:
    """Write what `--push-to-hub` uploads: `data/<split>-00000-of-00001.parquet` (image bytes
    embedded, as `datasets`' own push does) and `README.md`, atomically."""
    from datasets.table import embed_table_storage

    folder = Path(folder)
    tmp = _staging_dir(folder)
    try:
        (tmp / "data").mkdir()
        for split, ds in dataset.items():
            embedded = ds.with_format("arrow").map(embed_table_storage, batched=True, desc=f"embedding {split} images")
            embedded.with_format(None).to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if info is not None:
            (tmp / DATASET_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p for p in folder.rglob("*") if p.is_file())


def save_built(dataset: datasets.DatasetDict, output, report: dict) -> None:
    """`save_to_disk` + `build_report.json`, atomically."""
    output = Path(output)
    tmp = _staging_dir(output)
    try:
        dataset.save_to_disk(str(tmp))
        (tmp / "build_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (tmp / DATASET_INFO_FILE).write_text(json.dumps(_info(report), indent=2), encoding="utf-8")
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _info(report: dict) -> dict:
    return {"dataset": report["dataset"], "task": report["task"], "context_settings": report.get("context_settings")}


def load_built(path) -> tuple[datasets.DatasetDict, dict | None]:
    """A built dataset and its context settings: a `save_to_disk` folder, a Hub-export folder
    (`data/<split>-*.parquet`), or a Hub id."""
    folder = Path(path)
    if folder.is_dir():
        info_file = folder / DATASET_INFO_FILE
        settings = json.loads(info_file.read_text())["context_settings"] if info_file.exists() else None
        if (folder / "dataset_dict.json").exists():
            try:
                return datasets.load_from_disk(str(folder)), settings
            except (IndexError, FileNotFoundError) as error:  # datasets cannot read back an empty split
                raise ValueError(f"{folder}: the saved dataset cannot be read ({type(error).__name__}: {error}); "
                                 "a split saved empty is the usual cause: rebuild it") from error
        parquet = {split: sorted(str(p) for p in (folder / "data").glob(f"{split}-*.parquet"))
                   for split in ("train", "validation", "test")}
        if all(parquet.values()):
            return datasets.load_dataset("parquet", data_files=parquet), settings
        raise ValueError(f"{folder} is neither a save_to_disk folder nor a folder of data/<split>-*.parquet files")
    return datasets.load_dataset(str(path)), None


def push_to_hub(folder, repo_id: str, private: bool = False) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message="Build with datasets_scripts.build")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--raw-dir", required=True)
    parser.add_argument("--image-dir")
    parser.add_argument("--contexts", help="contexts JSONL (image_id, context, generator, prompt, ...)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--push-to-hub", metavar="REPO_ID")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub-folder", help="write the Hub upload (Parquet + card) here instead of pushing")
    args = parser.parse_args(argv)

    dataset, report = build(args.dataset, args.raw_dir, args.image_dir, args.contexts)
    output = Path(args.output_dir)
    save_built(dataset, output, report)
    sizes = {split: len(ds) for split, ds in dataset.items()}
    images = report["images"]
    print(f"{args.dataset}: {sizes}; images found {images['found']}, missing {images['missing']}, "
          f"corrupt {images['corrupt']}, invalid {images['invalid']}; saved to {output}")
    if args.push_to_hub or args.hub_folder:
        card = dataset_card(args.dataset, dataset, report)
        folder = Path(args.hub_folder) if args.hub_folder else output.with_name(output.name + "-hub")
        export_hub_folder(dataset, folder, card, _info(report))
        if args.push_to_hub:
            push_to_hub(folder, args.push_to_hub, args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return report


if __name__ == "__main__":
    main()
