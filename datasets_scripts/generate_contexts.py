"""Write one image context per image with a large multimodal model (LLaVA-1.5 in the paper).

    python -m datasets_scripts.generate_contexts --image-dir images/twitter2015 \
        --model llava-hf/llava-1.5-7b-hf --output contexts/twitter2015.jsonl

Each output line is `{"image_id", "sha256", "context", "generator", "prompt", "max_new_tokens",
"temperature", "seed"}` (plus `"error"` for an image that could not be read: it gets an empty
context and is not retried), one line per image of `--image-dir`, in file-name order. `image_id`
is the file name; the builders join contexts on it (Twitter ids also match without `.jpg`). The
generator is `modeling_shapca.context_generation`, the same one the processor uses at inference.

The work runs on the corpus runner (`shapca_serving/runner.py`), keyed by content: each image by
the sha256 of its bytes and the generator's settings (model, prompt, max new tokens,
temperature, seed). So a renamed copy of an image is described once, a replaced image is
described again, a deleted image's line leaves the output, and a rerun with other settings
reuses nothing of the earlier ones (it says which setting changed, in one line). Finished
contexts are stored as parts in `.<OUTPUT>.parts/` beside the output (each batch written whole
or not at all), and a finished OUTPUT's own lines count as done; the output is written through a
partial file and renamed when every image is described, then the parts are removed. One run per
output at a time (a lock beside it). Sampling temperature 1.0 as in the paper; bf16 on GPU.

The context cache (`modeling_shapca/context_cache.py`, in the user's cache folder; the
`SHAPCA_CONTEXT_CACHE` variable moves or disables it, as `--no-context-cache` does) is the
per-image store across runs: an image whose bytes and generator settings (model, prompt, max
new tokens, temperature; not the seed) it holds is not described again, whatever its file name
or output (counted as `cached`), and every context written is stored in it. The same cache
gives contexts to the PyTorch pipeline, `model.predict`, `shapca-predict` and spaCy, and is
read by the ONNX predictor.

On N processes (`torchrun --nproc_per_node N -m datasets_scripts.generate_contexts ...`, or
`accelerate launch -m ...`: one process per GPU), the images still to describe are split over
the processes in batches; every process reads every part, so a rerun with any N resumes any
other N's work, and the main process writes OUTPUT. With sampling, a context depends on which
process drew it (each process seeds its own generator with `--seed` plus its index); with
`--temperature 0` the contexts are those of one process.
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

from modeling_shapca.context_cache import ContextCache
from modeling_shapca.context_generation import (
    DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, DEFAULT_TEMPERATURE, ContextGenerator, ContextSettings,
)
from modeling_shapca.inference import check_positive_int
from modeling_shapca.files import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
logger = logging.getLogger("shapca.generate_contexts")


def list_images(image_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


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


SETTING_KEYS = ("generator", "prompt", "max_new_tokens", "temperature", "seed")


def context_key(image_sha256: str, settings: dict) -> str:
    """The content key of one image's context: its bytes' sha256 and the generator's settings
    (`SETTING_KEYS`). The run and a finished output's lines are matched by this one rule."""
    from shapca_serving.runner import digest_of

    return f"{image_sha256}:{digest_of({name: settings.get(name) for name in SETTING_KEYS})[:16]}"


def generate(
    image_dir, output, model_name: str, prompt: str = DEFAULT_PROMPT, batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
    limit: int | None = None, generator: ContextGenerator | None = None, trust_remote_code: bool = False,
    context_cache=True,
) -> dict:
    """The contexts of `image_dir` into `output` (see the module docstring); returns counts:
    `already_done` (images whose context this output's parts or lines held), `cached` (taken
    from the context cache), `generated`, `unreadable` (this run, all processes). With `limit`,
    at most that many new images are described and OUTPUT is written only once nothing is left.
    `context_cache`: True (the environment's), False (off) or a folder."""
    from shapca_serving.runner import OutputLock, PartStore, file_digest, run_parts, world

    check_positive_int(batch_size, "batch_size")
    settings = ContextSettings(model_name, prompt, max_new_tokens, temperature)
    cache = ContextCache.resolve(context_cache)
    record_settings = {"generator": settings.model, "prompt": settings.prompt,
                       "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature, "seed": seed}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    images = list_images(image_dir)
    hashes = [file_digest(path) for path in images]
    key_of = [context_key(digest, record_settings) for digest in hashes]
    path_of, digest_by_key = {}, dict(zip(key_of, hashes))
    for path, key in zip(images, key_of):
        path_of.setdefault(key, path)  # a renamed copy is the same image: described once
    keys = list(path_of)
    with world() as place, OutputLock(output, place):
        store = PartStore(output.with_name(f".{output.name}.parts"))
        cached = 0
        if place.is_main:
            _seed_from_output(output, store, keys, record_settings, hashes)
            cached = _seed_from_cache(cache, settings, store, keys, digest_by_key)
        cached = place.gather(cached)[0]
        found = store.done(keys)  # seeded before any process reads the parts
        todo = [key for key in keys if key not in found]
        limited = limit is not None and len(todo) > limit
        if limit is not None:
            keys = [key for key in keys if key in found] + todo[:limit]
        counts = {"already_done": len(found) - cached, "cached": cached, "generated": 0, "unreadable": 0}
        state = {"generator": generator}

        def work(chunk: list[str]) -> list[dict]:
            if state["generator"] is None:
                state["generator"] = ContextGenerator(settings, trust_remote_code=trust_remote_code)
            opened = [_open(path_of[key]) for key in chunk]
            readable = [image for image, error in opened if image is not None]
            texts = iter(describe(state["generator"], readable) if readable else ())
            values = []
            for image, error in opened:
                values.append({"context": next(texts)} if image is not None else {"context": "", "error": error})
                counts["unreadable" if error else "generated"] += 1
            if cache is not None:  # the next run, under any output and file names, finds them
                cache.put_many([(digest_by_key[key], value["context"]) for key, value in zip(chunk, values)
                                if "error" not in value], settings)
            return values

        torch.manual_seed(seed + place.rank)
        with tqdm(total=len(keys), desc="contexts", unit="img", disable=not place.is_main) as bar:
            run_parts(keys, store, work, place, batch_size, bar)
        every = place.gather(counts)
        counts = {"already_done": counts["already_done"], "cached": cached,
                  **{k: sum(c[k] for c in every) for k in ("generated", "unreadable")}}
        if place.is_main and not limited:
            values = store.done(key_of)
            lines = []
            for path, digest, key in zip(images, hashes, key_of):
                lines.append(json.dumps({"image_id": path.name, "sha256": digest, **values[key], **record_settings},
                                        ensure_ascii=False) + "\n")
            write_atomic(output, "".join(lines))
            shutil.rmtree(store.folder, ignore_errors=True)
        place.gather(None)
    return counts


def _seed_from_output(output: Path, store, keys: list[str], settings_now: dict, hashes: list[str]) -> None:
    """A finished OUTPUT's lines count as done (a part of them is stored), when their image bytes
    and settings are this run's; one line says so when the settings changed."""
    if not output.is_file():
        return
    wanted, entries, other, hashes = set(keys), [], {}, set(hashes)
    with output.open("r", encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or "sha256" not in record:
                continue  # written before contexts were keyed by content
            settings = {name: record.get(name) for name in SETTING_KEYS}
            key = context_key(record["sha256"], settings)
            if key in wanted:
                value = {"context": record.get("context", "")}
                if "error" in record:
                    value["error"] = record["error"]
                entries.append((key, value))
                wanted.discard(key)
            elif record["sha256"] in hashes:
                other = settings
    if entries:
        store.write(entries)
    if other and len(entries) < len(keys):
        changed = [name for name in SETTING_KEYS if other.get(name) != settings_now[name]]
        logger.warning("%s: contexts written with another %s are not reused; those images are described again",
                       output, " and ".join(changed) or "setting")


def _seed_from_cache(cache, settings: ContextSettings, store, keys: list[str], digest_by_key: dict) -> int:
    """The context cache's contexts of images still to describe are stored as a part (done);
    returns how many."""
    if cache is None:
        return 0
    todo = [key for key in keys if key not in store.done(keys)]
    found = cache.get_many([digest_by_key[key] for key in todo], settings)
    entries = [(key, {"context": found[digest_by_key[key]]}) for key in todo if digest_by_key[key] in found]
    if entries:
        store.write(entries)
    return len(entries)


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
    parser.add_argument("--no-context-cache", dest="context_cache", action="store_false",
                        help="neither read nor write the context cache (see SHAPCA_CONTEXT_CACHE)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    counts = generate(args.image_dir, args.output, args.model, args.prompt, args.batch_size,
                      args.max_new_tokens, args.temperature, args.seed, args.limit,
                      trust_remote_code=args.trust_remote_code, context_cache=args.context_cache)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary for all processes
        print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
