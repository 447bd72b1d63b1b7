"""Write one image context per image with a large multimodal model (LLaVA-1.5 in the paper).

    python -m datasets_scripts.generate_contexts --image-dir images/twitter2015 \
        --model llava-hf/llava-1.5-7b-hf --output contexts/twitter2015.jsonl

Each output line is `{"image_id", "context", "generator", "prompt"}` (plus `"error"` for an
image that could not be read: it gets an empty context and is not retried). `image_id` is
the file name; the builders join contexts on it (Twitter ids also match without `.jpg`).

Resumable: records are appended and flushed batch by batch; on restart the images already in
the output are skipped, and a last line cut by an interruption is dropped and regenerated, so
no image is lost or written twice. Sampling temperature 1.0 as in the paper; bf16 on GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

DEFAULT_PROMPT = (
    "Describe this image in detail: the people, objects, places, text and events it shows, "
    "and any names you can recognise."
)
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


def load_generator(model_name: str, device: str | None = None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(model_name)
    processor.tokenizer.padding_side = "left"  # decoder-only batched generation
    model = AutoModelForImageTextToText.from_pretrained(model_name, dtype=dtype).to(device).eval()
    return processor, model


@torch.no_grad()
def describe(processor, model, images: list[Image.Image], prompt: str, max_new_tokens: int, temperature: float) -> list[str]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _open(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"


def generate(
    image_dir, output, model_name: str, prompt: str = DEFAULT_PROMPT, batch_size: int = 8,
    max_new_tokens: int = 256, temperature: float = 1.0, seed: int = 0, limit: int | None = None,
    generator=None,
) -> dict:
    """Generate the missing contexts of `image_dir` into `output`; returns counts."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = recover_output(output)
    todo = [p for p in list_images(image_dir) if p.name not in done]
    if limit is not None:
        todo = todo[:limit]
    counts = {"already_done": len(done), "generated": 0, "unreadable": 0}
    if not todo:
        return counts
    processor, model = generator or load_generator(model_name)
    torch.manual_seed(seed)
    with output.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc="contexts", unit="img") as bar:
        for start in range(0, len(todo), batch_size):
            paths = todo[start:start + batch_size]
            opened = [_open(p) for p in paths]
            readable = [(p, img) for p, (img, err) in zip(paths, opened) if img is not None]
            texts = iter(describe(processor, model, [img for _, img in readable], prompt, max_new_tokens, temperature)) if readable else iter(())
            lines = []
            for path, (image, error) in zip(paths, opened):
                record = {"image_id": path.name, "context": next(texts) if image is not None else "",
                          "generator": model_name, "prompt": prompt}
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
    return counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--model", required=True, help="image-text-to-text model id or folder (LLaVA-1.5 in the paper)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="stop after this many new images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    counts = generate(args.image_dir, args.output, args.model, args.prompt, args.batch_size,
                      args.max_new_tokens, args.temperature, args.seed, args.limit)
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
