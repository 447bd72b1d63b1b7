"""Write one image context per image with a large multimodal model (LLaVA-1.5 in the paper).

    python -m datasets_scripts.generate_contexts --image-dir images/twitter2015 \
        --model llava-hf/llava-1.5-7b-hf --output contexts/twitter2015.jsonl

Each output line is `{"image_id", "context", "generator", "prompt", "max_new_tokens",
"temperature"}` (plus `"error"` for an image that could not be read: it gets an empty context
and is not retried). `image_id` is the file name; the builders join contexts on it (Twitter ids
also match without `.jpg`). The generator is `modeling_shapca.context_generation`, the same one
the processor uses at inference.

Resumable and atomic: records go to `OUTPUT.partial`, appended and flushed batch by batch, and
the file is renamed to OUTPUT when every image is done. On restart the images already in the
partial file (or in a finished OUTPUT, when new images were added) are skipped, and a last line
cut by an interruption is dropped and regenerated, so no image is lost or written twice and
OUTPUT is never a half-written file. Sampling temperature 1.0 as in the paper; bf16 on GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import shutil
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from modeling_shapca.context_generation import (
    DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, DEFAULT_TEMPERATURE, ContextGenerator, ContextSettings,
)
from modeling_shapca.inference import check_positive_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
logger = logging.getLogger("shapca.generate_contexts")


def list_images(image_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def recover_output(path: Path) -> set[str]:
    """Image ids already written. A trailing partial line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    done, keep = set(), 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        done.add(record["image_id"])
        keep += len(line)
    if keep != len(data):
        logger.warning("dropping %d bytes of an interrupted record at the end of %s", len(data) - keep, path)
        with path.open("r+b") as handle:
            handle.truncate(keep)
    return done


def load_generator(model_name: str, device: str | None = None, trust_remote_code: bool = False,
                   **settings) -> ContextGenerator:
    """The shared context generator, loaded (settings: prompt, max_new_tokens, temperature)."""
    generator = ContextGenerator(ContextSettings(model_name, **settings), device=device,
                                 trust_remote_code=trust_remote_code)
    generator.load()
    return generator


def describe(generator: ContextGenerator, images: list[Image.Image]) -> list[str]:
    return generator.describe(images)


def _open(path: Path) -> tuple[Image.Image | None, str | None]:
    """An RGB image, or the reason it cannot be read (corrupt, or over PIL's size guard)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert("RGB"), None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as error:
        return None, f"{type(error).__name__}: {error}"


def generate(
    image_dir, output, model_name: str, prompt: str = DEFAULT_PROMPT, batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
    limit: int | None = None, generator: ContextGenerator | None = None, trust_remote_code: bool = False,
) -> dict:
    """Generate the missing contexts of `image_dir` into `output`; returns counts."""
    check_positive_int(batch_size, "batch_size")
    settings = ContextSettings(model_name, prompt, max_new_tokens, temperature)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    if not partial.exists() and output.exists():
        shutil.copyfile(output, partial)  # new images join a finished file: it stays untouched until done
    done = recover_output(partial)
    todo = [p for p in list_images(image_dir) if p.name not in done]
    limited = limit is not None and len(todo) > limit
    todo = todo[:limit] if limit is not None else todo
    counts = {"already_done": len(done), "generated": 0, "unreadable": 0}
    if todo:
        if generator is None:
            generator = ContextGenerator(settings, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        with partial.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc="contexts", unit="img") as bar:
            for start in range(0, len(todo), batch_size):
                paths = todo[start:start + batch_size]
                opened = [_open(p) for p in paths]
                readable = [img for img, err in opened if img is not None]
                texts = iter(describe(generator, readable) if readable else ())
                lines = []
                for path, (image, error) in zip(paths, opened):
                    record = {"image_id": path.name, "context": next(texts) if image is not None else "",
                              "generator": settings.model, "prompt": settings.prompt,
                              "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature}
                    if error:
                        record["error"] = error
                        counts["unreadable"] += 1
                    else:
                        counts["generated"] += 1
                    lines.append(json.dumps(record, ensure_ascii=False) + "\n")
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
                bar.update(len(paths))
    if partial.exists() and not limited:
        os.replace(partial, output)  # complete: the finished file appears in one step
    return counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--model", required=True, help="image-text-to-text model id or folder (LLaVA-1.5 in the paper)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the generator model's own code to run (off by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="stop after this many new images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    counts = generate(args.image_dir, args.output, args.model, args.prompt, args.batch_size,
                      args.max_new_tokens, args.temperature, args.seed, args.limit,
                      trust_remote_code=args.trust_remote_code)
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
