"""What one multimodal prediction costs, by step (issue 43, item 1), and what the context cache saves.

    python -m benchmarks.image_cost --output outputs/image_cost/cpu.json          # this CPU
    python -m benchmarks.image_cost --device cuda --output $OUT/image_cost.json     # a GPU (bf16)
    python -m benchmarks.image_cost --quick                                          # tiny sizes (the test)
    python -m benchmarks.image_cost --table outputs/image_cost/cpu.json              # the markdown table

Steps, each timed per image at batch 1 and batch 8 (`--batch-sizes`), inputs a 1024 x 768 picture
(a common tweet photo size) and the first Twitter-2015 test sentences:

* `text-only`: a MiniLM Shap-CA NER model's prediction (`model.predict`, eager) of one sentence;
* `resnet-152` (the paper's image encoder, 224 x 224) and `clip-vit-b16` (a CLIP ViT-B/16-sized
  tower, 224 x 224): the image encoder a multimodal prediction adds;
* context generators built from their configurations (`benchmarks/vlm_configs/`) with random
  weights: weights do not change the cost of a fixed-length generation, so every call writes
  exactly `--max-new-tokens` tokens (`min_new_tokens = max_new_tokens`, the project's default
  256), after the prompt and image tokens the published preprocessing gives (the image processor
  runs on the picture; the prompt's text tokens are `PROMPT_TOKENS`, as the tokenizers are not
  available offline). `llava-1.5-7b` is built whole where `--layers` is 32 (a GPU); on a CPU
  with `--layers k` (default 2) it has k of its 32 decoder layers at full width, with the vision
  tower, embeddings and lm_head whole: the time inside the decoder layers (`t_layers`, forward
  hooks) is scaled, `t_fixed + (32 / k) * t_layers`, and the row says so. `smolvlm-256m` and
  `blip-large` are built whole.
* `cache`: the context cache's cost per image (the sha256 of the picture's file bytes and one
  entry read; a miss), and the speedup on a stream where a share of the images repeat.

Float32 on a CPU (what `ContextGenerator` uses there), bfloat16 on a GPU. Each figure is the
median over `--repeats` calls after one warm-up call (generators: `--generator-repeats` calls, after
one warm-up of 2 tokens at the first batch size).
Not part of CI; `tests/benchmarks/test_benchmarks.py` runs `--quick`.
"""

from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent / "vlm_configs"
GENERATORS = ("llava-1.5-7b", "smolvlm-256m", "blip-large")
ENCODERS = ("resnet-152", "clip-vit-b16")
PICTURE = (1024, 768)  # width, height
PROMPT_TOKENS = 40  # the default prompt (~25 words) in a chat template
REPEAT_SHARES = (0.1, 0.3, 0.5)


# ---------------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, warmup=None) -> tuple[float, object]:
    """Median seconds of `repeats` calls of `fn` after one warm-up call (`warmup` or `fn`)."""
    (warmup or fn)()
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def picture(size=PICTURE):
    """A photo-like RGB picture (smooth colours and noise) of `size`, and its JPEG bytes."""
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), buffer.getvalue()


def read_config(name: str) -> dict:
    data = json.loads((CONFIGS / name / "config.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "architectures"}


def read_preprocessing(name: str) -> dict:
    data = json.loads((CONFIGS / name / "preprocessor_config.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "image_processor_type"}


def shrink(config: dict, name: str) -> dict:
    """Tiny sizes of the same architecture (`--quick`)."""
    config = copy.deepcopy(config)
    text, vision = config["text_config"], config["vision_config"]
    text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if "num_key_value_heads" in text:
        text["num_key_value_heads"] = 1
    if "encoder_hidden_size" in text:
        text["encoder_hidden_size"] = 32
    vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision["image_size"] = {"llava-1.5-7b": 28, "smolvlm-256m": 64, "blip-large": 32}[name]
    return config


# ---------------------------------------------------------------------------------- steps
def text_only(batch_sizes, repeats: int, device: str, quick: bool) -> dict:
    """Seconds per sentence of a MiniLM Shap-CA NER model's eager prediction."""
    from modeling_shapca import ShapCAForTokenClassification
    from tests.helpers import save_minilm_shapca, tiny_model, tiny_processor
    from benchmarks.bench_serving import _words

    sentences = _words("test")[:max(batch_sizes)]
    with tempfile.TemporaryDirectory() as folder:
        if quick:
            tiny_model("ner").save_pretrained(folder)
            tiny_processor().save_pretrained(folder)
        else:
            save_minilm_shapca(folder)
        model = ShapCAForTokenClassification.from_pretrained(folder).to(device).eval()
        model.predict(sentences[:1])  # loads the processor and the POS tagger
        out = {}
        for batch in batch_sizes:
            seconds, _ = _timed(lambda: model.predict(sentences[:batch], batch_size=batch), device, repeats)
            out[str(batch)] = seconds / batch
    return {"seconds_per_image": out, "what": "MiniLM Shap-CA NER, eager model.predict, Twitter-2015 test sentences"}


def encoder(name: str, batch_sizes, repeats: int, device: str, quick: bool) -> dict:
    """Seconds per image of an image encoder's forward pass at 224 x 224."""
    import torch
    import transformers

    if name == "resnet-152":
        config = transformers.ResNetConfig(depths=[3, 8, 36, 3], hidden_sizes=[256, 512, 1024, 2048],
                                           layer_type="bottleneck")
        if quick:
            config = transformers.ResNetConfig(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8)
        model = transformers.ResNetModel(config)
    else:
        config = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                               num_attention_heads=12, image_size=224, patch_size=16)
        if quick:
            config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=224, patch_size=16)
        model = transformers.CLIPVisionModel(config)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = model.to(device, dtype).eval()
    parameters = sum(p.numel() for p in model.parameters())
    out = {}
    for batch in batch_sizes:
        pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        with torch.inference_mode():
            seconds, _ = _timed(lambda: model(pixel_values=pixels), device, repeats)
        out[str(batch)] = seconds / batch
    return {"seconds_per_image": out, "parameters": parameters}


def _generator_inputs(name: str, config, preprocessing: dict, batch: int, device: str, dtype):
    """The generator's inputs for `batch` copies of the picture: pixels from the published
    preprocessing, `PROMPT_TOKENS` text tokens around the image tokens it gives."""
    import torch
    import transformers

    image, _ = picture()
    rng = torch.Generator().manual_seed(0)

    def text_ids(n):
        return torch.randint(5, 1000, (n,), generator=rng)  # ordinary tokens, never an image token

    if name == "llava-1.5-7b":
        size = config.vision_config.image_size
        processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": size},
                                                       crop_size={"height": size, "width": size})
        pixels = processor([image] * batch, return_tensors="pt")["pixel_values"]
        image_tokens = (size // config.vision_config.patch_size) ** 2  # "default": the CLS feature dropped
        ids = torch.cat([text_ids(5), torch.full((image_tokens,), config.image_token_id), text_ids(PROMPT_TOKENS - 5)])
        inputs = {"pixel_values": pixels}
    elif name == "smolvlm-256m":
        tile = config.vision_config.image_size
        processor = transformers.Idefics3ImageProcessorPil(
            do_image_splitting=preprocessing["do_image_splitting"],
            size={"longest_edge": preprocessing["size"]["longest_edge"] * tile // 512},
            max_image_size={"longest_edge": tile})
        processed = processor([[image]] * batch, return_tensors="pt", return_row_col_info=True)
        rows, cols = processed["rows"][0][0], processed["cols"][0][0]
        tiles = processed["pixel_values"].shape[1]
        per_tile = (tile // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2
        markers = rows * cols * 2 + rows + 3  # <fake_token_around_image><row_r_col_c> per tile, a newline per row, the global image's
        ids = torch.cat([text_ids(markers), torch.full((tiles * per_tile,), config.image_token_id),
                         text_ids(PROMPT_TOKENS)])
        inputs = {"pixel_values": processed["pixel_values"], "pixel_attention_mask": processed["pixel_attention_mask"]}
        image_tokens = tiles * per_tile
    else:  # blip-large: unconditional captioning, no prompt
        size = config.vision_config.image_size
        processor = transformers.BlipImageProcessorPil(size={"height": size, "width": size})
        inputs = {"pixel_values": processor([image] * batch, return_tensors="pt")["pixel_values"]}
        image_tokens, ids = (size // config.vision_config.patch_size) ** 2 + 1, None
    if ids is not None:
        inputs["input_ids"] = ids.repeat(batch, 1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    for key in ("pixel_values",):
        inputs[key] = inputs[key].to(dtype)
    prompt = 0 if ids is None else ids.numel()
    return inputs, {"image_tokens": image_tokens, "prompt_tokens": prompt}


def generator(name: str, batch_sizes, repeats: int, device: str, max_new_tokens: int, layers: int,
              quick: bool) -> dict:
    """Seconds per image of one fixed-length generation (see the module docstring)."""
    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    raw = read_config(name)
    if quick:
        raw = shrink(raw, name)
    full_layers = raw["text_config"]["num_hidden_layers"]
    scaled = name == "llava-1.5-7b" and layers < full_layers
    if scaled:
        raw["text_config"]["num_hidden_layers"] = layers
    config = CONFIG_MAPPING[raw.pop("model_type")](**raw)
    cls = {"llava-1.5-7b": transformers.LlavaForConditionalGeneration,
           "smolvlm-256m": transformers.Idefics3ForConditionalGeneration,
           "blip-large": transformers.BlipForConditionalGeneration}[name]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    began = time.perf_counter()
    with torch.device(device):
        model = cls(config).to(dtype).eval()
    built_s = time.perf_counter() - began
    parameters = sum(p.numel() for p in model.parameters())
    decoder_layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    in_layers = {"s": 0.0}
    if scaled:  # time inside the decoder layers (hooks; a sync on either side on a GPU)
        def pre(module, args):
            _sync(device)
            module._began = time.perf_counter()

        def post(module, args, output):
            _sync(device)
            in_layers["s"] += time.perf_counter() - module._began

        for layer in decoder_layers:
            layer.register_forward_pre_hook(pre)
            layer.register_forward_hook(post)
    preprocessing = read_preprocessing(name)
    out, per_batch, shapes = {}, {}, {}
    for batch in batch_sizes:
        inputs, shapes[str(batch)] = _generator_inputs(name, model.config, preprocessing, batch, device, dtype)
        settings = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)

        def call(tokens=max_new_tokens):
            with torch.inference_mode():
                return model.generate(**inputs, **{**settings, "max_new_tokens": tokens, "min_new_tokens": tokens})

        if batch == batch_sizes[0]:
            call(2)  # warm-up, once per generator (a large batch's prefill alone takes minutes on a CPU)
        times, layer_times = [], []
        for _ in range(repeats):
            in_layers["s"] = 0.0
            _sync(device)
            started = time.perf_counter()
            generated = call()
            _sync(device)
            times.append(time.perf_counter() - started)
            layer_times.append(in_layers["s"])
        new_tokens = generated.shape[1] - (inputs["input_ids"].shape[1] if "input_ids" in inputs else 0)
        total, t_layers = statistics.median(times), statistics.median(layer_times)
        if name == "blip-large":
            new_tokens -= 1  # BLIP's output starts with the BOS token it was given
        record = {"measured_s": total, "new_tokens": int(new_tokens)}
        if scaled:
            estimate = (total - t_layers) + (full_layers / layers) * t_layers
            record.update(t_fixed_s=total - t_layers, t_layers_s=t_layers, estimated_full_s=estimate)
            total = estimate
        per_batch[str(batch)] = record
        out[str(batch)] = total / batch
    model = call = None  # the weights go before the next generator is built
    gc.collect()
    return {"seconds_per_image": out, "calls": per_batch, "inputs": shapes, "parameters": parameters,
            "layers_built": raw["text_config"]["num_hidden_layers"], "layers_full": full_layers,
            "scaled": scaled, "build_s": built_s, "max_new_tokens": max_new_tokens}


def cache_cost(repeats: int, generation_s: dict) -> dict:
    """The context cache per image: the picture's bytes hashed and an entry read (hit) or
    missed, and the stream speedup for shares of repeated images (from this run's text-only
    and generator seconds: `(text + gen) / (text + (1 - r) gen + lookup)`)."""
    import hashlib

    from modeling_shapca.context_cache import ContextCache
    from modeling_shapca.context_generation import ContextSettings

    _, data = picture()
    settings = ContextSettings("llava-hf/llava-1.5-7b-hf")
    context = "A basketball player in a white jersey drives to the basket. " * 20  # ~256 tokens of text
    with tempfile.TemporaryDirectory() as folder:
        cache = ContextCache(folder)
        for i in range(1000):  # a cache that already holds other images
            cache.put(f"{i:064x}", context, settings)
        digest = hashlib.sha256(data).hexdigest()
        cache.put(digest, context, settings)
        n = max(repeats, 200)

        def lookups(key_bytes: bytes):
            for _ in range(n):
                cache.get(hashlib.sha256(key_bytes).hexdigest(), settings)

        hit, _ = _timed(lambda: lookups(data), "cpu", 3)
        miss, _ = _timed(lambda: lookups(data + b"other"), "cpu", 3)
        write, _ = _timed(lambda: cache.put("f" * 64, context, settings), "cpu", 20)
    hit, miss = hit / n, miss / n
    streams = {}
    for name, seconds in generation_s.items():
        text, gen = seconds["text"], seconds["generator"]
        streams[name] = {str(share): (text + gen) / (text + (1 - share) * gen + hit) for share in REPEAT_SHARES}
    return {"hit_s": hit, "miss_s": miss, "write_s": write, "picture_bytes": len(data), "entries": 1001,
            "stream_speedup": streams}


# ---------------------------------------------------------------------------------- the job
def run(args) -> dict:
    import torch

    batch_sizes = args.batch_sizes
    result = {"device": args.device, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
              "picture": list(PICTURE), "steps": {}}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    steps = result["steps"]
    print("text-only", flush=True)
    steps["text-only"] = text_only(batch_sizes, args.repeats, args.device, args.quick)
    for name in ENCODERS:
        print(name, flush=True)
        steps[name] = encoder(name, batch_sizes, args.repeats, args.device, args.quick)
    layers = 32 if args.layers is None and args.device.startswith("cuda") else (args.layers or 2)
    for name in args.generators:
        print(name, flush=True)
        steps[name] = generator(name, batch_sizes, args.generator_repeats, args.device, args.max_new_tokens,
                                layers, args.quick)
        result["peak_rss_gb"] = _peak_rss_gb()
        if args.output:  # written after every step: a killed run keeps what it measured
            _write(args.output, result)
    text = steps["text-only"]["seconds_per_image"]["1"]
    result["cache"] = cache_cost(args.repeats, {
        name: {"text": text, "generator": steps[name]["seconds_per_image"]["1"]} for name in args.generators})
    result["peak_rss_gb"] = _peak_rss_gb()
    if args.output:
        _write(args.output, result)
    return result


def _write(path, result) -> None:
    from modeling_shapca.files import write_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=2) + "\n")


def table(result: dict) -> str:
    """The markdown table of a result: seconds per image and the ratio to text-only prediction."""
    steps = result["steps"]
    sizes = list(steps["text-only"]["seconds_per_image"])
    head = "| step | " + " | ".join(f"s / image, batch {b} | x text-only, batch {b}" for b in sizes) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(sizes))]
    for name, step in steps.items():
        label = name
        if step.get("scaled"):
            label += f" ({step['layers_built']} of {step['layers_full']} layers built, scaled to {step['layers_full']})"
        cells = []
        for b in sizes:
            seconds = step["seconds_per_image"][b]
            cells += [f"{seconds:.4g}", f"{seconds / steps['text-only']['seconds_per_image'][b]:,.3g}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cache = result.get("cache")
    if cache:
        lines += ["", f"Context cache: a hit costs {cache['hit_s'] * 1e6:.0f} µs per image (sha256 of a "
                      f"{cache['picture_bytes'] // 1000} KB picture plus one entry read, {cache['entries']} entries "
                      f"cached), a miss {cache['miss_s'] * 1e6:.0f} µs, a write {cache['write_s'] * 1e3:.1f} ms.", "",
                  "| generator | " + " | ".join(f"speedup, {int(float(s) * 100)} % repeated" for s in
                                               map(str, REPEAT_SHARES)) + " |",
                  "|---|" + "---:|" * len(REPEAT_SHARES)]
        for name, speedups in cache["stream_speedup"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}x" for v in speedups.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--generators", nargs="+", choices=GENERATORS, default=list(GENERATORS))
    parser.add_argument("--layers", type=int, help="LLaVA decoder layers built (default: 32 on a GPU, 2 on a CPU)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the text and encoder steps")
    parser.add_argument("--generator-repeats", type=int, default=1, help="timed calls of each generation")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 new tokens (the test)")
    parser.add_argument("--output", help="write the result (JSON) here, after every step")
    parser.add_argument("--table", metavar="RESULT", help="print the markdown table of a result file and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return {}
    if args.quick:
        args.max_new_tokens, args.repeats, args.batch_sizes = min(args.max_new_tokens, 3), 1, [1, 2]
    result = run(args)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
