"""Publish a trained Shap-CA model: weights (safetensors), config with auto_map, the remote-code
modules, the processor, the results and a model card rendered from them.

    python push_to_hub.py outputs/twitter2015-minilm --repo-id user/shapca-twitter2015 [--private]
    python push_to_hub.py outputs/twitter2015-minilm --repo-id user/shapca-twitter2015 --dry-run staged/

`--dry-run OUT` writes exactly what would be uploaded into OUT and uploads nothing.
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

from model_card import render_card  # noqa: E402
from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor  # noqa: E402

MODEL_CLASSES = {"ShapCAForTokenClassification": ShapCAForTokenClassification}


def stage(model_dir: Path, out: Path, repo_id: str) -> list[str]:
    """Write the upload into `out`; returns the file names."""
    config = json.loads((model_dir / "config.json").read_text())
    architecture = (config.get("architectures") or ["ShapCAForTokenClassification"])[0]
    if architecture not in MODEL_CLASSES:
        raise ValueError(f"{model_dir}: unsupported architecture {architecture!r}; expected one of {sorted(MODEL_CLASSES)}")
    model = MODEL_CLASSES[architecture].from_pretrained(model_dir)
    processor = ShapCAProcessor.from_pretrained(model_dir, trust_remote_code=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # also copies the modeling_shapca modules
    processor.save_pretrained(out)
    shutil.copyfile(model_dir / "results.json", out / "results.json")
    (out / "README.md").write_text(render_card(out, repo_id=repo_id), encoding="utf-8")
    return sorted(p.name for p in out.iterdir())


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", type=Path, metavar="OUT", help="write the upload here instead of pushing")
    args = parser.parse_args(argv)
    if args.dry_run:
        files = stage(args.model_dir, args.dry_run, args.repo_id)
        print(f"dry run: {len(files)} files in {args.dry_run}: {', '.join(files)}")
        return files
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        files = stage(args.model_dir, Path(tmp), args.repo_id)
        api = HfApi()
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=tmp, repo_id=args.repo_id, commit_message="Upload Shap-CA model")
    print(f"pushed {len(files)} files to https://huggingface.co/{args.repo_id}")
    return files


if __name__ == "__main__":
    main()
