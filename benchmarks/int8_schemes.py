"""int8 that keeps quality (issue 45): every int8 scheme of `shapca-export` on a fully trained
model, chosen on validation and reported on test.

    python -m benchmarks.int8_schemes --model outputs/twitter2015-minilm --data twitter2015 \
        [--output outputs/int8-schemes/twitter2015.json] [--rounds 3] [--table FILE ...]

The model is exported once (a later run reuses the export of the same weights) with every scheme of `shapca_serving.quantization.SCHEMES` into
`<model>-int8-schemes/` (the static schemes calibrated as `shapca-export` calibrates them: 256
sentences of the data's train split, seed 0). Each graph (fp32 and each int8 scheme) is scored on
the validation and the test split through the ONNX predictor's runner (`export.measure`), and its
speed at batch 32 is timed over the test split in `--rounds` rounds, the graphs' order rotated
each round (median round). The kept scheme is `export.pick_scheme` on the validation figures,
with the timed speeds: what `shapca-export --quantize int8 --validation DATA` keeps. `--table`
prints the markdown rows of saved results. Run on a quiet machine (the speeds are compared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_SPLITS = ("validation", "test")


def run(model: Path, data: str, rounds: int, batch_size: int = 32) -> dict:
    from types import SimpleNamespace

    from modeling_shapca import ShapCAConfig
    from shapca_serving.loading import load_trained
    from shapca_serving.onnx_export import candidate_file, export_onnx, model_fingerprint
    from shapca_serving.onnx_predictor import MODEL_FILE, ShapCAOnnxPredictor
    from shapca_serving.quantization import SCHEMES
    from shapca_training.export import CALIBRATION_SENTENCES, calibration_rows, load_split, measure, pick_scheme

    config = ShapCAConfig.from_pretrained(model)
    folder = model.with_name(model.name + "-int8-schemes")
    args = SimpleNamespace(calibration=None, validation=data, model=str(model), calibration_split="train",
                           calibration_sentences=CALIBRATION_SENTENCES)
    saved = folder / "onnx" / "export.json"
    report = json.loads(saved.read_text()) if saved.is_file() else {}
    if report.get("fingerprint") == model_fingerprint(load_trained(str(model), processor=False)[0]) and \
            list(report.get("int8_candidates", ())) == list(SCHEMES):
        source, export_seconds = report["int8_candidates"][SCHEMES[-1]]["calibration"], None  # exported before
    else:
        calibration, source = calibration_rows(args, config.task)
        began = time.perf_counter()
        report = export_onnx(str(model), folder, quantize=SCHEMES, calibration=calibration, calibration_source=source)
        export_seconds = round(time.perf_counter() - began, 1)
    graphs = {"fp32": MODEL_FILE, **{s: candidate_file(s, k == 0) for k, s in enumerate(SCHEMES)}}
    runners = {name: ShapCAOnnxPredictor.from_pretrained(folder, file=file).runner for name, file in graphs.items()}
    splits = {split: load_split(data, split, config.task) for split in DEFAULT_SPLITS}
    scores = {name: {split: measure(runner, rows, config, batch_size) for split, rows in splits.items()}
              for name, runner in runners.items()}
    names = list(runners)
    times = {name: [] for name in names}
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            times[name].append(measure(runners[name], splits["test"], config, batch_size)["sentences_per_second"])
    speed = {name: round(statistics.median(t), 1) for name, t in times.items()}
    candidates = {s: {"f1": scores[s]["validation"]["f1"], "sentences_per_second": speed[s]} for s in SCHEMES}
    kept, why = pick_scheme(candidates)
    return {
        "model": str(model), "data": data, "task": config.task, "calibration": source, "rounds": rounds,
        "export_seconds": export_seconds,
        "int8": {s: {k: v for k, v in report["int8_candidates"][s].items() if k != "calibration"} for s in SCHEMES},
        "f1": {name: {split: scores[name][split]["f1"] for split in DEFAULT_SPLITS} for name in names},
        "sentences_per_second": speed, "speed_spread": {n: [min(t), max(t)] for n, t in times.items()},
        "kept": kept, "chosen_by": why,
        "kept_test_change": round(scores[kept]["test"]["f1"] - scores["fp32"]["test"]["f1"], 2),
        "kept_speed_vs_dynamic": round(speed[kept] / speed["dynamic"], 3),
        "sizes_bytes": report["sizes_bytes"],
    }


def table(paths: list[str]) -> str:
    """Markdown rows: per model and graph, validation / test F1, test change and speed."""
    lines = ["| data | graph | validation F1 | test F1 | test int8 - fp32 | sentences/s (batch 32) | vs dynamic |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for path in paths:
        result = json.loads(Path(path).read_text())
        fp32 = result["f1"]["fp32"]["test"]
        for name, f1 in result["f1"].items():
            kept = " (kept)" if name == result["kept"] else ""
            change = "" if name == "fp32" else f"{f1['test'] - fp32:+.2f}"
            ratio = "" if name == "fp32" else \
                f"{result['sentences_per_second'][name] / result['sentences_per_second']['dynamic']:.2f}"
            lines.append(f"| {result['data']} | {name}{kept} | {f1['validation']:.2f} | {f1['test']:.2f} | {change} | "
                         f"{result['sentences_per_second'][name]} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--table", nargs="+", help="print the markdown rows of these result files and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return None
    if args.model is None or args.data is None:
        parser.error("--model and --data are needed (or --table)")
    result = run(args.model, args.data, args.rounds)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
