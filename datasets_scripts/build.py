"""Build a Shap-CA dataset from its raw files and save it (and optionally push it to the Hub).

    python -m datasets_scripts.build twitter2015 --raw-dir data/twitter2015 --output-dir built/twitter2015
    python -m datasets_scripts.build mjere --raw-dir data/mnre --image-dir imgs/ --contexts ctx.jsonl \
        --output-dir built/mjere --push-to-hub user/mjere-shapca
    python -m datasets_scripts.build ner --raw-dir my_tweets/ --name my-tweets --output-dir built/my-tweets

The first argument is a paper corpus (a preset of the task registry, `modeling_shapca/tasks.py`:
its files, its fixed label set, its source and citation) or a task (`ner`, `mre`, `mjere`) for
your own corpus in that task's raw format, any label set (`docs/data.md`), named by `--name`.
The `DatasetDict`
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
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import datasets

from modeling_shapca.tasks import TASKS, get_task

from .presets import DATASETS, RAW_FORMATS, get_dataset
from .sources import DATASET_INFO_FILE, DataInfo, build_raw, load_data


def build(name: str, raw_dir, image_dir=None, contexts_path=None, dataset_name: str | None = None
          ) -> tuple[datasets.DatasetDict, dict]:
    """A preset (`twitter2015`, ...) or a task (`ner`, `mre`, `mjere`: any label set) built from
    raw files; returns the dataset and the build report (its `info` says what the data is)."""
    if name in DATASETS:
        preset, task = name, get_dataset(name).task
    elif name in TASKS:
        preset, task = None, name
    else:
        raise ValueError(f"unknown dataset {name!r}; expected a preset {sorted(DATASETS)} or a task {sorted(TASKS)} "
                         "for your own corpus")
    dataset, info, report = build_raw(raw_dir, task, image_dir, contexts_path, dataset_name, preset)
    report["info"] = info.to_json()
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


def dataset_card(dataset: datasets.DatasetDict, report: dict) -> str:
    info = DataInfo.from_json(report["info"])
    spec = get_dataset(info.preset) if info.preset else None
    task = get_task(info.task)
    pretty = spec.pretty_name if spec else info.name
    sizes = "\n".join(f"| {split} | {len(ds):,} |" for split, ds in dataset.items())
    labels = "\n".join(f"- `{column}`: {', '.join(f'`{n}`' for n in names)}" for column, names in _label_sets(dataset).items())
    images = report.get("images", {})
    settings = report.get("context_settings")
    generator = (f"`{settings['model']}`, prompt \"{settings['prompt']}\", max_new_tokens {settings['max_new_tokens']}, "
                 f"temperature {settings['temperature']}") if settings else "none (no contexts given)"
    public_report = {k: v for k, v in report.items() if k not in ("images", "context_settings", "info")}
    data_files = "\n".join(f"  - split: {split}\n    path: data/{split}-*.parquet" for split in dataset)
    task_category = "token-classification" if info.task != "mre" else "text-classification"
    command = f"{info.preset} --raw-dir RAW" if spec else f"{info.task} --raw-dir RAW --name {info.name}"
    if spec:
        source = (f"Raw text from {spec.source_url} ({spec.citation}). Images come from the archive linked in that "
                  "repository.\n\n## License\nThe source repository states no license; the texts are tweets. Using "
                  "them means accepting the terms set by Twitter and by the dataset providers.")
        citation = f"{spec.citation}; Shap-CA: "
    else:
        source = (f"Built from the publisher's own raw files ({RAW_FORMATS[task.name].description}). The license is the "
                  "publisher's to state.")
        citation = "Shap-CA: "
    return f"""---
pretty_name: {json.dumps(pretty + " for Shap-CA")}
license: {spec.license if spec else "other"}
language:
- {spec.language if spec else "en"}
task_categories:
- {task_category}
tags:
- multimodal
- {RAW_FORMATS[task.name].tag}
- shap-ca
configs:
- config_name: default
  data_files:
{data_files}
---
# {pretty} for Shap-CA

{task.description.capitalize()} data, built with `python -m datasets_scripts.build {command}` from the
Shap-CA repository. Images are embedded in the Parquet files.

## Source
{source}

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
{citation}Luo, Xia, Shen, Li, "Shapley Value-based Contrastive Alignment for
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
    """`save_to_disk` + `build_report.json` + what the data is (`shapca_dataset.json`), atomically."""
    output = Path(output)
    tmp = _staging_dir(output)
    try:
        dataset.save_to_disk(str(tmp))
        (tmp / "build_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (tmp / DATASET_INFO_FILE).write_text(json.dumps(report["info"], indent=2), encoding="utf-8")
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_built(path) -> tuple[datasets.DatasetDict, dict | None]:
    """A built dataset (a `save_to_disk` folder, a Hub-export Parquet folder or a Hub id) and
    its context settings."""
    dataset, info, _ = load_data(path)
    return dataset, info.context_settings


def push_to_hub(folder, repo_id: str, private: bool = False) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message="Build with datasets_scripts.build")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS) + sorted(TASKS),
                        help="a paper corpus (preset), or a task for your own corpus in its raw format")
    parser.add_argument("--raw-dir", required=True)
    parser.add_argument("--name", help="your corpus' name, shown in dataset and model cards (default: the raw "
                                       "folder's name; presets keep theirs)")
    parser.add_argument("--image-dir")
    parser.add_argument("--contexts", help="contexts JSONL (image_id, context, generator, prompt, ...)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--push-to-hub", metavar="REPO_ID")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub-folder", help="write the Hub upload (Parquet + card) here instead of pushing")
    args = parser.parse_args(argv)
    if args.name and args.dataset in DATASETS:
        parser.error(f"--name is for your own corpus; the preset {args.dataset!r} keeps its name")

    dataset, report = build(args.dataset, args.raw_dir, args.image_dir, args.contexts, args.name)
    output = Path(args.output_dir)
    save_built(dataset, output, report)
    sizes = {split: len(ds) for split, ds in dataset.items()}
    images = report["images"]
    print(f"{report['dataset']}: {sizes}; labels {report['labels']}; images found {images['found']}, missing "
          f"{images['missing']}, corrupt {images['corrupt']}, invalid {images['invalid']}; saved to {output}")
    if args.push_to_hub or args.hub_folder:
        card = dataset_card(dataset, report)
        folder = Path(args.hub_folder) if args.hub_folder else output.with_name(output.name + "-hub")
        info = dict(report["info"], hub_id=args.push_to_hub) if args.push_to_hub else report["info"]
        export_hub_folder(dataset, folder, card, info)
        if args.push_to_hub:
            push_to_hub(folder, args.push_to_hub, args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return report


if __name__ == "__main__":
    main()
