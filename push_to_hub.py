"""Publish a trained Shap-CA model of any task (NER, MRE, MJERE): weights (safetensors), config
with auto_map and custom_pipelines, the remote-code modules, the processor, the results and a
model card rendered from them.

    python push_to_hub.py outputs/twitter2015-minilm --repo-id user/shapca-twitter2015 [--private]
    python push_to_hub.py outputs/mnre-minilm --repo-id user/shapca-mnre --dry-run staged/

ONNX: when the run folder has `onnx/` (`shapca-export RUN RUN --quantize int8 --validation ...`),
its files (`onnx/model.onnx`, `onnx/model_int8.onnx`, `onnx/vision.onnx`, `onnx/export.json`) are
uploaded too and the card shows how to load them with their measured F1 and speed;
`--no-onnx` leaves them out. Only the files `export.json` lists are staged, never through a
symbolic link (a link is refused by name), and only when `export.json`'s fingerprint matches
the folder's model (labels and weights): a stale `onnx/` (another task, an earlier training of
the folder) is refused with the command that exports it again.

`--dry-run OUT` writes exactly what would be uploaded into OUT (a new or empty folder) and
uploads nothing. Staging happens in a folder beside OUT that is renamed into place when
complete, so OUT never holds a partial upload.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import modeling_shapca  # noqa: E402
from shapca_training.model_card import render_card  # noqa: E402
from modeling_shapca import ShapCAConfig, ShapCAProcessor  # noqa: E402
from modeling_shapca.tasks import TaskSpec, get_task  # noqa: E402

REQUIRED = {"config.json": "the model config (train.py writes it)",
            "processor_config.json": "the processor (train.py saves it next to the weights)",
            "results.json": "results.json (the card is filled from what training measured)"}


def check_run(model_dir: Path) -> TaskSpec:
    """The run's task (from its config, older `word_pair` configs included); a one-line error
    naming what is missing or wrong."""
    if not model_dir.is_dir():
        raise SystemExit(f"error: {model_dir} is not a folder")
    missing = [f"{name} ({why})" for name, why in REQUIRED.items() if not (model_dir / name).exists()]
    if not any((model_dir / name).exists() for name in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors (the weights)")
    if missing:
        raise SystemExit(f"error: {model_dir} cannot be published, it lacks: {'; '.join(missing)}")
    try:
        return get_task(ShapCAConfig.from_pretrained(model_dir).task)
    except ValueError as error:
        raise SystemExit(f"error: {model_dir}/config.json: {error}") from None


def check_repo_id(repo_id: str) -> str:
    """A Hub repo id (`name` or `user/name`), checked before anything is staged or sent."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise SystemExit(f"error: --repo-id {repo_id!r} is not a Hub repo id: {error}") from None
    return repo_id


OWN_MODULES = {"configuration_shapca", "modeling_shapca", "processing_shapca", "pipeline_shapca"}


def _own_target(target) -> bool:
    return target is None or (isinstance(target, str) and "--" not in target and target.split(".")[0] in OWN_MODULES)


def _scrub(data):
    """`data` with every `auto_map` (at any depth: `processor_config.json` nests the image
    processor's and tokenizer's) reduced to entries pointing at this package's modules."""
    if isinstance(data, list):
        return [_scrub(item) for item in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key == "auto_map":
            kept = {k: v for k, v in (value if isinstance(value, dict) else {}).items()
                    if all(_own_target(t) for t in (v if isinstance(v, (list, tuple)) else [v]))}
            if kept:
                out[key] = kept
        else:
            out[key] = _scrub(value)
    return out


def scrub_auto_maps(folder: Path) -> None:
    """Keep, in the staged JSON files, only `auto_map` entries that point at this package's own
    modules, at any depth: one planted in a run folder's tokenizer or processor config (code
    the upload would ask its users to trust) is dropped, and the staged folder loads with our
    code."""
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        scrubbed = _scrub(data)
        if scrubbed != data:
            path.write_text(json.dumps(scrubbed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def onnx_files(model_dir: Path, model) -> list[str]:
    """The files of the run's `onnx/` to publish: those its `export.json` lists, and itself,
    each a regular file (a symbolic link is refused by name, never followed), and only when the
    export was made from this folder's model (its fingerprint: labels and weights). Anything
    else in `onnx/` is not the model's and is not staged."""
    from shapca_serving.onnx_export import model_fingerprint

    folder = model_dir / "onnx"
    if folder.is_symlink():
        raise SystemExit(f"error: {folder} is a symbolic link; publishing never follows links (export into the run "
                         "folder itself, or pass --no-onnx)")
    info_path = folder / "export.json"
    if info_path.is_symlink():
        raise SystemExit(f"error: {info_path} is a symbolic link; publishing never follows links")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    names = ["export.json"] + [name for name in (info.get("files") or {}).values()]
    for name in names:
        path = folder / str(name)
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise SystemExit(f"error: {info_path} lists {name!r}, not a file name of onnx/")
        if path.is_symlink():
            raise SystemExit(f"error: {path} is a symbolic link; publishing never follows links (copy the file in, "
                             "or pass --no-onnx)")
        if not path.is_file():
            raise SystemExit(f"error: {info_path} lists {name}, which {folder} does not hold: export again "
                             f"(shapca-export {model_dir} {model_dir}) or pass --no-onnx")
    fingerprint = info.get("fingerprint")
    if fingerprint != model_fingerprint(model):
        why = ("was exported by an earlier version without a fingerprint" if fingerprint is None else
               "was exported from another model than the one in this folder (other labels or weights: another task, "
               "or an earlier training of the folder)")
        raise SystemExit(f"error: {folder} {why}; its graphs would not give this model's predictions. Export again "
                         f"(shapca-export {model_dir} {model_dir}) or pass --no-onnx")
    return names


def public_results(results: dict) -> dict:
    """results.json as uploaded: no local paths."""
    results = dict(results)
    if results.get("best_checkpoint"):
        results["best_checkpoint"] = Path(str(results["best_checkpoint"])).name
    return results


def stage(model_dir: Path, out: Path, repo_id: str, onnx: bool = True) -> list[str]:
    """Write the upload into `out` (new or empty), atomically; returns the file names (`onnx/`
    files as `onnx/<name>`). `onnx`: upload the run's `onnx/` folder when it has one."""
    model_dir = Path(model_dir)
    out = Path(out)
    spec = check_run(model_dir)
    if out.is_symlink():
        raise SystemExit(f"error: {out} is a symbolic link; staging writes into a new or empty folder, name that")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: {out} is a file; staging writes exactly what is uploaded into a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty; staging writes exactly what is uploaded into a new or "
                         "empty folder")
    if out.resolve() == model_dir.resolve():
        raise SystemExit("error: the staging folder must not be the run folder")
    model = getattr(modeling_shapca, spec.model_class).from_pretrained(model_dir)
    processor = ShapCAProcessor.from_pretrained(model_dir, trust_remote_code=False)  # our class; no code of the run runs
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config._name_or_path = ""  # the run's local backbone folders are nobody else's paths
    try:
        model.save_pretrained(tmp, safe_serialization=True)  # also copies the modeling_shapca modules
        processor.save_pretrained(tmp)
        results = public_results(json.loads((model_dir / "results.json").read_text()))
        (tmp / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        if onnx and (model_dir / "onnx" / "export.json").exists():
            (tmp / "onnx").mkdir()
            for name in onnx_files(model_dir, model):
                shutil.copyfile(model_dir / "onnx" / name, tmp / "onnx" / name, follow_symlinks=False)
        (tmp / "README.md").write_text(render_card(tmp, repo_id=repo_id), encoding="utf-8")
        scrub_auto_maps(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", type=Path, metavar="OUT", help="write the upload here instead of pushing")
    parser.add_argument("--no-onnx", action="store_true", help="leave the run's onnx/ files out of the upload")
    args = parser.parse_args(argv)
    check_repo_id(args.repo_id)
    if args.dry_run:
        files = stage(args.model_dir, args.dry_run, args.repo_id, onnx=not args.no_onnx)
        print(f"dry run: {len(files)} files in {args.dry_run}: {', '.join(files)}")
        return files
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        files = stage(args.model_dir, Path(tmp) / "upload", args.repo_id, onnx=not args.no_onnx)
        api = HfApi()
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=str(Path(tmp) / "upload"), repo_id=args.repo_id,
                          commit_message="Upload Shap-CA model")
    print(f"pushed {len(files)} files to https://huggingface.co/{args.repo_id}")
    return files


if __name__ == "__main__":
    main()
