"""Does the Shapley alignment matter anywhere? Table 3's ablations over seeds, in regimes of the
synthetic multimodal benchmark built so that alignment *could* help (issue: ablation).

The corpus is `synthetic_multimodal.py`'s: one made-up entity per sentence, its type only in the
image (the type's colour) and in the context ("a red picture with a circle"). There every
ablation reaches 100 F1, because the context alone gives the type away at test time. The
regimes below take that shortcut away or starve the model, each through one documented knob,
with the reason it could favour alignment beside it:

* `test-without-context` (`--test_contexts none`): contexts in training and validation, none at
  test. The model must then read the type from the image. The modality loss (context-image,
  Eq. 7) pulls each image's features toward its context's; if that teaches the image path the
  context's semantics faster than the tagging loss does, the aligned variants keep more F1 when
  the context is gone. This is the paper's semantic-gap argument made testable.
* `few-labels` (`--train_size 48`, contexts and images everywhere): few labelled sentences. The
  alignment is a second training signal on the same pairs (a contrastive one, over the batch);
  with little supervision an extra signal is where a difference could show.
* `noisy-images` (`--image_noise 90`, no context at test): the colour is buried in noise
  (per-pixel sigma 90 instead of 20) and only the image carries the type at test time. Aligning
  the noisy image with a clean context could act as a denoising teacher.

Variants (the paper's Table 3 rows): full Shap-CA, `--alignment infonce` (w/o Shapley value),
`--alignment none` (w/o alignment), `--context_in_alignment false` (text aligned with the image
directly), `--fusion plain` (w/o adaptive fusion). Every variant runs on the same data with the
same seeds (`--seeds`), so differences are paired: the table gives mean and standard deviation
over seeds, and each ablation's paired difference from full Shap-CA with a 95% t interval.

    python -m benchmarks.alignment_ablation --regimes test-without-context few-labels --seeds 0 1 2 3 4 --jobs 2
    python -m benchmarks.alignment_ablation --quick          # the size the tests run

Runs are resumable: each (regime, variant, seed) writes `results/<regime>/<variant>/<seed>.json`
when it finishes and is skipped when that file exists.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "Shap-CA (full)": [],
    "w/o Shapley value (infonce)": ["--alignment", "infonce"],
    "w/o alignment (none)": ["--alignment", "none"],
    "w/o context in alignment": ["--context_in_alignment", "false"],
    "w/o adaptive fusion (plain)": ["--fusion", "plain"],
}
REGIMES = {
    "test-without-context": dict(train_size=200, test_contexts=False, image_noise=20.0,
                                 why="the context is gone at test: only the image carries the type"),
    "few-labels": dict(train_size=48, test_contexts=True, image_noise=20.0,
                       why="48 labelled sentences: the alignment is a second training signal"),
    "noisy-images": dict(train_size=200, test_contexts=False, image_noise=90.0,
                         why="noisy images, no context at test: the clean context as a teacher"),
}
SIZES = {"validation": 60, "test": 150}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def build_regime(work: Path, regime: str, settings: dict, quick: bool) -> Path:
    """The regime's corpus, built by the real builder, with its knobs applied; returns the
    dataset folder (`train.py --dataset_path`)."""
    import datasets

    from benchmarks import synthetic_multimodal as synthetic
    from datasets_scripts import build

    folder = work / regime
    target = folder / "dataset"
    if (target / "shapca_dataset.json").is_file():
        return target
    sizes = {"train": settings["train_size"], **SIZES} if not quick else {"train": 32, "validation": 8, "test": 16}
    if not (folder / "raw").exists():
        synthetic.write_corpus(folder, sizes, seed=1234, noise=settings["image_noise"])
    built = folder / "built"
    if not built.exists():
        build.main(["twitter2015", "--raw-dir", str(folder / "raw"), "--image-dir", str(folder / "images"),
                    "--contexts", str(folder / "contexts.jsonl"), "--output-dir", str(built)])
    dataset = datasets.load_from_disk(str(built))
    if not settings["test_contexts"]:
        dataset["test"] = dataset["test"].map(lambda row: {"context": ""})
    tmp = folder / "dataset.partial"
    dataset.save_to_disk(str(tmp))
    for extra in ("shapca_dataset.json", "build_report.json"):
        if (built / extra).is_file():
            (tmp / extra).write_bytes((built / extra).read_bytes())
    tmp.rename(target)
    return target


def train_args(dataset: Path, text_model: str, out: Path, seed: int, epochs: int, flags: list[str]) -> list[str]:
    import train

    return [
        str(train.ROOT / "configs" / "twitter2015-minilm.yaml"), "--dataset_path", str(dataset),
        "--text_model", text_model, "--image_size", "32",
        "--vision_config", '{"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1]}',
        "--projection_dim", "32", "--fusion_dim", "32", "--fusion_heads", "2", "--hidden_dim", "32",
        "--pos_embedding_dim", "16", "--position_embedding_dim", "16",
        "--learning_rate", "1e-3", "--head_learning_rate", "3e-3", "--warmup_steps", "0",
        "--lr_scheduler_type", "constant", "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "16",
        "--logging_steps", "2", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--eval_strategy", "epoch", "--early_stopping_patience", "0", "--output_dir", str(out), "--seed", str(seed),
        "--disable_tqdm", "true", "--start_over", "true", "--report_to", "none", *flags,
    ]


def run_one(dataset: Path, text_model: str, out: Path, seed: int, epochs: int, flags: list[str]) -> dict:
    import train

    results = train.main(train_args(dataset, text_model, out, seed, epochs, flags))
    logs = [e for e in results["log_history"] if "loss" in e]
    return {"test_f1": round(100 * results["test"]["test_f1"], 2),
            "log": [{k: v for k, v in e.items() if k in ("epoch", "loss", "main_loss", "semantic_loss", "modality_loss")
                     or k.startswith("shapley/")} for e in logs]}


def worker(args) -> None:
    """One run in this process (how `--jobs` spreads runs over processes)."""
    result = run_one(Path(args.dataset), args.text_model, Path(args.out), args.seed, args.epochs,
                     json.loads(args.flags))
    target = Path(args.result)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(target)


def paired(differences: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t interval."""
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, float("nan"), float("nan")
    half = T_975.get(n - 1, 1.96) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def table(results_dir: Path, regimes: list[str], seeds: list[int]) -> str:
    lines = []
    for regime in regimes:
        scores = {}
        for variant in VARIANTS:
            found = {}
            for seed in seeds:
                path = results_dir / regime / slug(variant) / f"{seed}.json"
                if path.is_file():
                    found[seed] = json.loads(path.read_text())["test_f1"]
            scores[variant] = found
        lines += [f"**{regime}** ({REGIMES[regime]['why']})", "",
                  "| variant | test F1, mean ± sd | seeds | paired difference from full (95% CI) |",
                  "|---|---:|---:|---|"]
        full = scores["Shap-CA (full)"]
        for variant, found in scores.items():
            if not found:
                lines.append(f"| {variant} | not run | 0 | |")
                continue
            values = list(found.values())
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            cell = ""
            if variant != "Shap-CA (full)":
                common = sorted(set(found) & set(full))
                if common:
                    mean, low, high = paired([found[s] - full[s] for s in common])
                    cell = f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"
            lines.append(f"| {variant} | {statistics.fmean(values):.2f} ± {sd:.2f} | {len(values)} | {cell} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", choices=sorted(REGIMES), default=["test-without-context", "few-labels"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/alignment-ablation"))
    parser.add_argument("--quick", action="store_true", help="tiny corpus, 1 epoch (the tests)")
    parser.add_argument("--table-only", action="store_true")
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    for name in ("dataset", "text_model", "out", "flags", "result"):
        w.add_argument(f"--{name}", required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--epochs", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args)
        return ""
    from benchmarks import synthetic_multimodal as synthetic

    work = args.work_dir
    results_dir = work / "results"
    epochs = 1 if args.quick else args.epochs
    if not args.table_only:
        work.mkdir(parents=True, exist_ok=True)
        text_model = str(work / "text_model")
        if not Path(text_model).exists():
            synthetic.tiny_text_model(Path(text_model))
        todo = []
        for regime in args.regimes:
            dataset = build_regime(work, regime, REGIMES[regime], args.quick)
            for variant in args.variants:
                for seed in args.seeds:
                    result = results_dir / regime / slug(variant) / f"{seed}.json"
                    if not result.is_file():
                        todo.append((regime, variant, seed, dataset, result))
        running: list[subprocess.Popen] = []
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        for done, (regime, variant, seed, dataset, result) in enumerate(todo):
            while len(running) >= args.jobs:
                running.pop(0).wait()
            out = work / "runs" / regime / slug(variant) / str(seed)
            out.parent.mkdir(parents=True, exist_ok=True)
            print(f"[{done + 1}/{len(todo)}] {regime} / {variant} / seed {seed}", flush=True)
            with open(f"{out}.log", "w") as log:  # the child keeps its own copy of the handle
                running.append(subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.alignment_ablation", "worker", "--dataset", str(dataset),
                     "--text_model", text_model, "--out", str(out), "--flags", json.dumps(VARIANTS[variant]),
                     "--result", str(result), "--seed", str(seed), "--epochs", str(epochs)],
                    env=env, stdout=subprocess.DEVNULL, stderr=log))
        for process in running:
            process.wait()
    text = table(results_dir, args.regimes, args.seeds)
    print(text)
    return text


if __name__ == "__main__":
    main()
