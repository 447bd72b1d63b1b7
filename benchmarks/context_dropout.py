"""What `context_dropout` costs with contexts and saves without them (issue 43, item 3).

One training per (dropout, seed) on the synthetic multimodal benchmark with contexts in
training (and validation), the pretrained MiniLM as in the objectives table, then two test
evaluations of the same trained model: (a) no context at test (serving without an LMM), (b) the
contexts at test (served with the generator, or with cached contexts). Every dropout runs on the
same data with the same seeds, so differences from dropout 0 are paired: the table gives mean
and standard deviation over seeds and each dropout's paired difference with a 95 % t interval.

    python -m benchmarks.context_dropout --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2
    python -m benchmarks.context_dropout --table-only          # the table from the stored runs
    python -m benchmarks.context_dropout --quick               # the size the tests run

Runs are resumable: each (dropout, seed) writes `results/context-dropout/<dropout>/<seed>.json`
when both evaluations are done and is skipped when that file exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.alignment_ablation import MINILM, _cell, build_regime, paired, train_args

ROOT = Path(__file__).resolve().parents[1]
REGIME = dict(train_size=200, test_contexts=True, validation_contexts=True, image_noise=70.0,
              why="contexts and noisy images (sigma 70) in training and validation; the test split with and without "
                  "its contexts")
DROPOUTS = ("0", "0.3", "0.5")
CONDITIONS = {"none": "no context at test", "contexts": "contexts at test"}


def datasets_for(work: Path, quick: bool) -> dict[str, Path]:
    """The regime's dataset (contexts everywhere) and a copy whose test split has no context."""
    import datasets

    with_contexts = build_regime(work, "context-dropout", REGIME, quick)
    without = work / "context-dropout" / "dataset-test-without-context"
    if not without.is_dir():
        dataset = datasets.load_from_disk(str(with_contexts))
        dataset["test"] = dataset["test"].map(lambda row: {"context": ""})
        tmp = without.with_name(without.name + ".partial")
        dataset.save_to_disk(str(tmp))
        for extra in ("shapca_dataset.json", "build_report.json"):
            if (with_contexts / extra).is_file():
                (tmp / extra).write_bytes((with_contexts / extra).read_bytes())
        tmp.rename(without)
    return {"contexts": with_contexts, "none": without}


def run_one(data: dict[str, Path], out: Path, seed: int, epochs: int, dropout: str, text_model: str) -> dict:
    """Train once (best validation epoch kept), then test the model on both test splits."""
    import shutil

    import train

    results = train.main(train_args(data["contexts"], text_model, out, seed, epochs, ["--context_dropout", dropout],
                                    best_on_validation=True))
    found = {"contexts": round(100 * results["test"]["test_f1"], 2),
             "validation_f1": round(100 * results["validation"]["validation_f1"], 2)}
    evaluated = train.main([str(train.ROOT / "configs" / "twitter2015-minilm.yaml"), "--dataset_path",
                            str(data["none"]), "--model_name_or_path", str(out), "--output_dir", str(out / "eval"),
                            "--do_train", "false", "--do_eval", "false", "--do_predict", "true", "--report_to", "none",
                            "--disable_tqdm", "true", "--image_size", "32"])
    found["none"] = round(100 * evaluated["test"]["test_f1"], 2)
    shutil.rmtree(out, ignore_errors=True)  # weights: only the figures are kept
    return found


def table(results: Path, seeds: list[int]) -> str:
    rows = {d: {s: json.loads((results / d / f"{s}.json").read_text()) for s in seeds
                if (results / d / f"{s}.json").is_file()} for d in DROPOUTS}
    lines = ["| context_dropout | " + " | ".join(f"test F1, {CONDITIONS[c]}" for c in CONDITIONS) + " | seeds | "
             + " | ".join(f"paired difference from 0, {CONDITIONS[c]} (95% CI)" for c in CONDITIONS)
             + " | served without contexts minus with them, same runs (95% CI) |",
             "|---|" + "---:|" * len(CONDITIONS) + "---:|" + "---|" * (len(CONDITIONS) + 1)]
    for dropout in DROPOUTS:
        runs = rows[dropout]
        cells = [_cell([r[c] for r in runs.values()]) for c in CONDITIONS]
        differences = []
        for condition in CONDITIONS:
            common = [s for s in runs if s in rows["0"]]
            if dropout == "0" or not common:
                differences.append("")
                continue
            mean, low, high = paired([runs[s][condition] - rows["0"][s][condition] for s in common])
            differences.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n = {len(common)})")
        if runs:
            mean, low, high = paired([r["none"] - r["contexts"] for r in runs.values()])
            differences.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n = {len(runs)})")
        else:
            differences.append("")
        lines.append(f"| {dropout} | " + " | ".join(cells) + f" | {len(runs)} | " + " | ".join(differences) + " |")
    per_seed = {d: {s: rows[d][s] for s in sorted(rows[d])} for d in DROPOUTS}
    return "\n".join(lines) + "\n\nPer seed: " + json.dumps(per_seed)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--dropouts", nargs="+", default=list(DROPOUTS), choices=DROPOUTS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "context_dropout")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each with OMP_NUM_THREADS=1)")
    parser.add_argument("--quick", action="store_true", help="tiny corpus, a random tiny BERT, 1 epoch")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("DROPOUT", "SEED", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results = args.work / "results" / "context-dropout"
    if args.worker:
        dropout, seed, target = args.worker[0], int(args.worker[1]), Path(args.worker[2])
        data = datasets_for(args.work, args.quick)
        text_model = MINILM if not args.quick else _tiny_text_model(args.work)
        found = run_one(data, args.work / "runs" / f"{dropout}-{seed}", seed, args.epochs, dropout, text_model)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        tmp.write_text(json.dumps(found), encoding="utf-8")
        tmp.replace(target)
        return ""
    if not args.table_only:
        datasets_for(args.work, args.quick)  # built once, before the workers
        if args.quick:
            _tiny_text_model(args.work)
        todo = [(d, s) for d in args.dropouts for s in args.seeds if not (results / d / f"{s}.json").is_file()]
        running: list[subprocess.Popen] = []
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        base = [sys.executable, "-m", "benchmarks.context_dropout", "--work", str(args.work), "--epochs",
                str(args.epochs), *(["--quick"] if args.quick else [])]
        for dropout, seed in todo:
            while len(running) >= args.jobs:
                running.pop(0).wait()
            running.append(subprocess.Popen([*base, "--worker", dropout, str(seed), str(results / dropout / f"{seed}.json")],
                                            cwd=ROOT, env=env))
        for process in running:
            process.wait()
    text = table(results, args.seeds)
    print(text)
    return text


def _tiny_text_model(work: Path) -> str:
    """A random tiny BERT with MiniLM's tokenizer (the quick mode's encoder)."""
    folder = work / "tiny-bert"
    if not (folder / "config.json").is_file():
        sys.path.insert(0, str(ROOT))
        from tests.helpers import tiny_text_model_at

        tiny_text_model_at(folder)
    return str(folder)


if __name__ == "__main__":
    main()
