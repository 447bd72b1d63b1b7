"""Seed-averaged headline figures: train the offline configs over seeds 42, 43 and 44 and
write the mean and standard deviation of the test scores, as the paper reports them.

    python -m benchmarks.run_seeds                       # all nine runs (several hours on 2 cores)
    python -m benchmarks.run_seeds --datasets mjere      # one dataset
    python -m benchmarks.run_seeds --table-only          # just the table from the runs that exist

A run whose `results.json` exists is skipped, and an interrupted run resumes from its last
checkpoint (train.py's default), so the runs can be spread over several sittings. The table
goes to stdout and to `RUNS_DIR/seeds.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("twitter2015", "mnre", "mjere")
SEEDS = (42, 43, 44)
# score columns per dataset: (results key, name)
COLUMNS = {"twitter2015": [("test_f1", "test F1")], "mnre": [("test_f1", "test F1")],
           "mjere": [("test_f1", "test MJERE_j"), ("test_entity_f1", "test MJERE_e")]}


def run_dir(runs: Path, dataset: str, seed: int) -> Path:
    return runs / f"{dataset}-seed{seed}"


def train(runs: Path, dataset: str, seed: int, extra: list[str]) -> None:
    out = run_dir(runs, dataset, seed)
    if (out / "results.json").exists():
        print(f"skip {out.name}: results.json exists", flush=True)
        return
    command = [sys.executable, str(ROOT / "train.py"), str(ROOT / "configs" / f"{dataset}-minilm.yaml"),
               "--seed", str(seed), "--output_dir", str(out), "--disable_tqdm", "true", *extra]
    print("run:", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=ROOT)


def table(runs: Path, datasets, seeds) -> str:
    lines = ["| dataset | score | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std (runs) |",
             "|---|---|" + "---:|" * (len(seeds) + 1)]
    for dataset in datasets:
        results = {}
        for seed in seeds:
            path = run_dir(runs, dataset, seed) / "results.json"
            if path.exists():
                results[seed] = json.loads(path.read_text())["test"]
        for key, name in COLUMNS[dataset]:
            values = [100 * results[s][key] for s in seeds if s in results]
            cells = [f"{100 * results[s][key]:.2f}" if s in results else "–" for s in seeds]
            if len(values) >= 2:
                summary = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"
            elif values:
                summary = f"{values[0]:.2f} (1)"
            else:
                summary = "–"
            lines.append(f"| {dataset} | {name} | " + " | ".join(cells) + f" | {summary} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "seeds")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more train.py flags for every run")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if not args.table_only:
        for dataset in args.datasets:
            for seed in args.seeds:
                train(args.runs_dir, dataset, seed, extra)
    text = table(args.runs_dir, args.datasets, args.seeds)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    (args.runs_dir / "seeds.md").write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    main()
