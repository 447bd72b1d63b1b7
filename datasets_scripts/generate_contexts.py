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

On N processes (`torchrun --nproc_per_node N -m datasets_scripts.generate_contexts ...`, or
`accelerate launch -m ...`: one process per GPU), the images still to describe are split over
the processes (image k of them to process k % N); each appends to its own
`OUTPUT.partial.rank-<i>` the same way, and every process reads every part (and `OUTPUT.partial`)
to know what is done, so a rerun, with any N, resumes. After all processes finish, the main
process writes OUTPUT in image order and removes the parts. With sampling, the contexts depend
on which process drew them (each process seeds its own generator with `--seed` plus its index);
with `--temperature 0` they are those of one process.
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


def recover_output(path: Path, truncate: bool = True) -> set[str]:
    """Image ids already written. A trailing partial line (killed mid-write) is cut off (left in
    place with `truncate=False`: another process's file, which only its owner changes)."""
    return set(_complete_records(path, truncate))


def _complete_records(path: Path, truncate: bool = True) -> dict[str, bytes]:
    """`{image_id: line}` of the complete lines of `path`, in file order."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    done, keep = {}, 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        done.setdefault(record["image_id"], line)
        keep += len(line)
    if keep != len(data) and truncate:
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
    from shapca_serving.batch import world

    place = world()
    if place.is_main and not partial.exists() and output.exists():
        shutil.copyfile(output, partial)  # new images join a finished file: it stays untouched until done
    place.gather(None)  # (several processes: the copy is there before anyone reads)
    mine = partial if place.size == 1 else output.with_name(f"{output.name}.partial.rank-{place.rank}")
    parts = [partial, *sorted(output.parent.glob(f"{output.name}.partial.rank-*"))]
    done = set()
    for part in parts:
        done |= recover_output(part, truncate=part == mine)
    place.gather(None)  # every process knows what is done before any writes
    images = list_images(image_dir)
    todo = [p for p in images if p.name not in done]
    limited = limit is not None and len(todo) > limit
    todo = todo[:limit] if limit is not None else todo
    todo = todo[place.rank::place.size]
    counts = {"already_done": len(done), "generated": 0, "unreadable": 0}
    if todo:
        if generator is None:
            generator = ContextGenerator(settings, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed + place.rank)
        with mine.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc="contexts", unit="img",
                                                              disable=not place.is_main) as bar:
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
    if place.size > 1:
        every = place.gather(counts)
        counts = {"already_done": counts["already_done"],
                  **{k: sum(c[k] for c in every) for k in ("generated", "unreadable")}}
        if place.is_main and not limited:
            _merge(parts + [p for p in output.parent.glob(f"{output.name}.partial.rank-*") if p not in parts],
                   partial, images)
        place.gather(None)
    if place.is_main and partial.exists() and not limited:
        os.replace(partial, output)  # complete: the finished file appears in one step
    return counts


def _merge(parts: list[Path], partial: Path, images: list[Path]) -> None:
    """The processes' parts as one `partial` file in image order (images no longer in the folder
    after them, in file order), then the parts removed."""
    records: dict[str, bytes] = {}
    for part in parts:
        for image_id, line in _complete_records(part, truncate=False).items():
            records.setdefault(image_id, line)
    order = {p.name: i for i, p in enumerate(images)}
    position = {k: i for i, k in enumerate(records)}
    ids = sorted(records, key=lambda k: (order.get(k, len(order)), position[k]))
    tmp = partial.with_name(partial.name + ".merge")
    with tmp.open("wb") as handle:
        handle.writelines(records[k] for k in ids)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, partial)
    for part in parts:
        if part != partial:
            part.unlink(missing_ok=True)


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
    if int(os.environ.get("RANK", "0")) == 0:  # one summary for all processes
        print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
