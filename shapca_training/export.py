"""`shapca-export MODEL OUT [--quantize int8] [--validation DATA]`: a trained Shap-CA model as
ONNX files for serving without PyTorch (`shapca_serving/onnx_export.py` for the files and the
check against PyTorch, `shapca_serving/onnx_predictor.py` for the predictor).

With `--validation` (a paper preset such as `twitter2015`, or any data `train.py
--dataset_path` reads, and `--split`), the export measures the task's F1 of the fp32 graph and,
with `--quantize int8`, of the int8 graph on that split through the ONNX predictor, and their
speed (sentences/s on this machine); the figures go to `onnx/export.json` and to the card
(`README.md`) of OUT when there is one. An int8 model that loses more than `--f1-tolerance`
F1 points (default 0.5) is reported (a warning, `"within_tolerance": false` in export.json, exit
status 2) and its graph is removed from `onnx/`, so it is never published (export.json and the
card keep its measured F1); raise `--f1-tolerance` knowingly to keep it.

The int8 scheme (`--int8-scheme`, `shapca_serving/quantization.py`): `dynamic` (activations
quantized per call), `static-minmax` or `static-percentile` (activation ranges calibrated
beforehand on training sentences, QDQ), or `auto` (the default):
- with `--validation`, every scheme is exported and measured on that split, and the one with the
  highest F1 among those at >= 0.9x the dynamic graph's speed is kept (a tie keeps the earlier
  in that order); export.json records every candidate's F1 and speed under `int8.candidates`
  (without calibration sentences only dynamic is measured, and the log says so);
- without it, `DEFAULT_SCHEME`: dynamic, the scheme with the best validation F1 on the fully
  trained Twitter-2015, MNRE and MJERE models (docs/benchmarks.md, "int8 schemes"); it needs no
  data.
Calibration sentences of the static schemes (`--calibration-sentences`, default 256, a seeded
sample): from `--calibration DATA` (`--calibration-split`, default train); else the train split
of the `--validation` data; else the train split of the preset the model was trained on (its
`results.json`). export.json records the source under `int8.calibration`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from shapca_serving.quantization import SCHEMES, needs_calibration

logger = logging.getLogger("shapca.export")
F1_TOLERANCE = 0.5
DEFAULT_SCHEME = "dynamic"  # without --validation: best on validation for the shipped tasks (docs/benchmarks.md)
CALIBRATION_SENTENCES = 256
SPEED_FLOOR = 0.9  # a scheme is kept only at >= this share of the dynamic graph's sentences/s


def _pad_stack(arrays: list[np.ndarray], value: int = -100) -> np.ndarray:
    """Arrays `(b_i, ..., n_i, ...)` padded to common trailing sizes and concatenated."""
    shape = [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
    out = []
    for a in arrays:
        padded = np.full((a.shape[0], *shape), value, dtype=a.dtype)
        padded[(slice(None), *(slice(0, s) for s in a.shape[1:]))] = a
        out.append(padded)
    return np.concatenate(out)


def load_split(source: str, split: str, task: str, flag: str = "--validation"):
    """A split of a paper preset (by name, built from the shipped raw files) or of any data that
    `train.py --dataset_path` reads (`flag`: the option that named it, for the messages)."""
    from datasets_scripts.sources import build_raw, load_data
    from datasets_scripts.presets import DATASETS, get_dataset

    from .resources import resource

    from .data import LABEL_COLUMNS

    if source in DATASETS:
        spec = get_dataset(source)
        if spec.task != task:
            raise ValueError(f"{flag} {source} is a {spec.task!r} corpus; the model is a {task!r} model")
        dataset, _, _ = build_raw(resource("data", spec.raw_folder), spec.task, None, None, preset=spec.name)
    else:
        if not Path(source).exists() and (Path(source).is_absolute() or source.startswith((".", "~"))
                                          or source.count("/") > 1 or source.endswith((".jsonl", ".json", ".txt"))):
            raise ValueError(f"{flag} {source}: no such file or folder (and not a preset: {sorted(DATASETS)})")
        dataset, _, _ = load_data(source, task)
    if split not in dataset:
        raise ValueError(f"{source} has no {split!r} split (it has {sorted(dataset)})")
    missing = [c for c in ("words", *LABEL_COLUMNS[task]) if c not in dataset[split].column_names]
    if missing:
        raise ValueError(f"{flag} {source} ({split}) lacks the columns {missing} that a {task!r} model is "
                         f"scored on (it has {dataset[split].column_names})")
    return dataset[split]


def labelled_feed(runner, batch: list[dict], config) -> dict:
    """An ONNX runner's graph inputs for dataset rows, with the task's labels under `labels`
    (the rows' POS tags are used where the dataset has them, as in training)."""
    from modeling_shapca.tasks import get_task

    spec = get_task(config.task)
    items = [{"words": r["words"], "context": r.get("context") or "",
              "image": r.get("image") if r.get("has_image") else None} for r in batch]
    given = {"pos_tags": [r["pos_tags"] for r in batch]} if all("pos_tags" in r for r in batch) else {}
    if spec.is_word_pair:
        given["pair_labels"] = [spec.encode_row(r) for r in batch]
    else:
        given.update(word_labels=[r["tags"] for r in batch], label2id=config.label2id)
    return runner.encode(items, **given)


def measure(runner, rows, config, batch_size: int = 32) -> dict:
    """The task's scores of an ONNX runner (`ShapCAOnnxPredictor(...).runner`) on labelled rows (a `datasets.Dataset`), and its
    speed (encoding, the graph and the decoding)."""
    from transformers.trainer_utils import EvalPrediction

    from .scoring import make_compute_metrics

    compute, _ = make_compute_metrics(config.task, config)
    predictions, labels, seconds = [], [], 0.0
    for start in range(0, len(rows), batch_size):
        batch = list(rows.select(range(start, min(start + batch_size, len(rows)))))
        began = time.perf_counter()
        feed = labelled_feed(runner, batch, config)
        predicted, _ = runner.predictions(feed)
        seconds += time.perf_counter() - began
        predictions.append(predicted)
        labels.append(feed["labels"])
    scores = compute(EvalPrediction(predictions=_pad_stack(predictions), label_ids=_pad_stack(labels)))
    return {"f1": round(100 * scores["f1"], 2), "precision": round(100 * scores["precision"], 2),
            "recall": round(100 * scores["recall"], 2), "sentences": len(rows),
            "sentences_per_second": round(len(rows) / seconds, 1)}


def calibration_rows(args, task: str) -> tuple[list[dict] | None, dict | None]:
    """The calibration sentences `{"words", "context"}` and where they come from (see the module
    docstring), or (None, None) when no source is found."""
    import random

    source = args.calibration or args.validation or _trained_preset(args.model)
    if source is None:
        return None, None
    split = args.calibration_split if args.calibration else "train"
    try:
        rows = load_split(source, split, task, "--calibration" if args.calibration else "--validation")
    except ValueError:
        if args.calibration:
            raise
        return None, None  # the --validation data without a train split: say so, use dynamic
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    picked = sorted(order[:args.calibration_sentences])
    chosen = rows.select(picked)
    found = [{"words": r["words"], "context": r.get("context") or ""} for r in chosen if r["words"]]
    return found, {"data": source, "split": split, "sentences": len(found), "sampled_from": len(rows), "seed": 0}


def _trained_preset(model: str) -> str | None:
    """The paper preset a local model folder was trained on (its results.json), if any."""
    from datasets_scripts.presets import DATASETS

    path = Path(model) / "results.json"
    if not path.is_file():
        return None
    name = json.loads(path.read_text(encoding="utf-8")).get("dataset")
    return name if name in DATASETS else None


def pick_scheme(candidates: dict) -> tuple[str, str]:
    """The kept scheme among measured candidates `{scheme: {"f1", "sentences_per_second"}}`
    (dynamic among them), and why, in words."""
    floor = SPEED_FLOOR * candidates["dynamic"]["sentences_per_second"]
    fast = [name for name, c in candidates.items() if c["sentences_per_second"] >= floor]
    best = max(fast, key=lambda name: candidates[name]["f1"])  # max keeps the first of equals
    return best, (f"the highest validation F1 ({candidates[best]['f1']:.2f}) among the schemes at >= {SPEED_FLOOR}x "
                  f"the dynamic graph's sentences/s ({', '.join(fast)})")


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def update_card(folder: Path) -> bool:
    """Render `folder/README.md` again, now with the ONNX section of `onnx/export.json` (the card
    template has it: one card writer); False when the folder has no card or no results.json."""
    from .model_card import render_card
    from modeling_shapca.files import write_atomic

    card = folder / "README.md"
    if not card.is_file() or not (folder / "results.json").is_file():
        return False
    write_atomic(card, render_card(folder))
    return True


def _schemes(args, task: str) -> tuple[tuple[str, ...], list | None, dict | None]:
    """The int8 schemes to export (the first is kept unless --validation measures them all),
    the calibration sentences and their source (only a static scheme reads them)."""
    if args.int8_scheme != "auto":
        schemes = (args.int8_scheme,)
    elif args.validation:
        schemes = SCHEMES  # measured on --validation, one kept
    else:
        schemes = (DEFAULT_SCHEME,)
        logger.info("int8: %s (the scheme measured best on the shipped tasks; --validation DATA measures every "
                    "scheme on your data)", DEFAULT_SCHEME)
    if not any(needs_calibration(s) for s in schemes):
        if args.calibration:
            raise SystemExit(f"error: --calibration calibrates the static int8 schemes; this export uses "
                             f"{schemes[0]} (add --int8-scheme static-minmax or static-percentile, or --validation)")
        return schemes, None, None
    calibration, source = calibration_rows(args, task)
    if not calibration:
        if args.int8_scheme != "auto":
            raise SystemExit(f"error: --int8-scheme {args.int8_scheme} needs calibration sentences: give "
                             "--calibration DATA (or --validation DATA with a train split)")
        logger.info("int8: dynamic only (no calibration sentences found: give --calibration DATA to measure the "
                    "static schemes too)")
        return ("dynamic",), None, None
    logger.info("int8 calibration: %d sentences of %s (%s)", source["sentences"], source["data"], source["split"])
    return schemes, calibration, source


def _keep(folder: Path, report: dict, schemes: tuple, kept: str, why: str, measured: dict) -> None:
    """`kept`'s graph becomes `model_int8.onnx`; the other candidates' graphs are removed (their
    figures stay in export.json)."""
    from shapca_serving.onnx_export import candidate_file
    from shapca_serving.onnx_predictor import INT8_FILE

    candidates = report.pop("int8_candidates")
    for scheme, figures in candidates.items():
        figures.update({k: measured[scheme][k] for k in ("f1", "sentences_per_second")})
    for k, scheme in enumerate(schemes):
        file = folder / candidate_file(scheme, k == 0)
        if scheme == kept:
            os.replace(file, folder / INT8_FILE)
        elif k > 0:
            file.unlink()
        report["files"].pop(f"int8.{scheme}", None)
    report["int8"] = {**candidates[kept], "chosen_by": why, "candidates": candidates}
    report["sizes_bytes"] = {key: (folder / name).stat().st_size for key, name in report["files"].items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained model folder or Hub id")
    parser.add_argument("output", type=Path, help="folder for onnx/ (the model folder itself adds onnx/ beside the weights)")
    parser.add_argument("--quantize", choices=["int8"], help="also write onnx/model_int8.onnx (see --int8-scheme)")
    parser.add_argument("--int8-scheme", choices=["auto", *SCHEMES], default="auto",
                        help="dynamic, static-minmax, static-percentile, or auto (the default): every scheme "
                             f"measured on --validation and one kept, else {DEFAULT_SCHEME}")
    parser.add_argument("--calibration", help="calibration sentences of the static schemes: a preset or any "
                                              "--dataset_path of train.py (default: the train split of --validation, "
                                              "else of the preset the model was trained on)")
    parser.add_argument("--calibration-split", default="train", help="split of --calibration (default: train)")
    parser.add_argument("--calibration-sentences", type=int, default=CALIBRATION_SENTENCES,
                        help=f"how many (a seeded sample, default {CALIBRATION_SENTENCES})")
    parser.add_argument("--validation", help="measure F1 and speed on this data: a preset (twitter2015, mnre, ...) or "
                                             "any --dataset_path of train.py")
    parser.add_argument("--split", default="validation", help="split of --validation (default: validation)")
    parser.add_argument("--f1-tolerance", type=float, default=F1_TOLERANCE,
                        help=f"largest F1 loss of int8 in points before it is reported (default {F1_TOLERANCE})")
    parser.add_argument("--atol", type=float, help="largest absolute difference of the fp32 graph from PyTorch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                        help="torch.onnx exporter: torchscript (opset 17, eager attention: the graph ONNX Runtime "
                             "fuses best, the default) or dynamo (opset 18)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.calibration_sentences < 1:
        parser.error(f"--calibration-sentences must be a positive integer, got {args.calibration_sentences}")
    if not args.quantize and (args.int8_scheme != "auto" or args.calibration):
        parser.error("--int8-scheme and --calibration are options of --quantize int8")
    if args.atol is not None and not args.atol > 0:
        parser.error(f"--atol must be a positive number, got {args.atol}")
    if not args.f1_tolerance >= 0:
        parser.error(f"--f1-tolerance must be a number >= 0, got {args.f1_tolerance}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from modeling_shapca import ShapCAConfig
    from modeling_shapca.files import write_atomic
    from shapca_serving.onnx_export import ATOL, candidate_file, check_output_folder, export_onnx
    from shapca_serving.onnx_predictor import INFO_FILE, MODEL_FILE, ONNX_FOLDER, ShapCAOnnxPredictor

    # every argument checked before anything is written: the model, the output folder, the data
    config = ShapCAConfig.from_pretrained(args.model)
    check_output_folder(args.output, args.model)
    rows = load_split(args.validation, args.split, config.task) if args.validation else None
    schemes, calibration, calibration_source = (), None, None
    if args.quantize:
        schemes, calibration, calibration_source = _schemes(args, config.task)
    report = export_onnx(args.model, args.output, quantize=schemes or False, atol=args.atol or ATOL,
                         exporter=args.exporter, calibration=calibration, calibration_source=calibration_source)
    logger.info("exported %s to %s/%s (largest difference from PyTorch %.2g)", report["task"], args.output,
                ONNX_FOLDER, report["check"]["max_abs_difference"])
    status = 0
    if args.validation:
        quality = {"data": args.validation, "split": args.split, "batch_size": args.batch_size, "machine": machine(),
                   "date": time.strftime("%Y-%m-%d"), "tolerance": args.f1_tolerance}
        graphs = {"fp32": MODEL_FILE, **{scheme: candidate_file(scheme, k == 0) for k, scheme in enumerate(schemes)}}
        for key, file in graphs.items():
            runner = ShapCAOnnxPredictor.from_pretrained(args.output, file=file).runner
            quality[key] = measure(runner, rows, config, args.batch_size)
            logger.info("%s: F1 %.2f, %.1f sentences/s", key, quality[key]["f1"], quality[key]["sentences_per_second"])
        if len(schemes) > 1:
            kept, why = pick_scheme({scheme: quality[scheme] for scheme in schemes})
            _keep(args.output / ONNX_FOLDER, report, schemes, kept, why, quality)
            logger.info("int8: kept %s, %s", kept, why)
        if args.quantize:
            quality["int8"] = quality[report["int8"]["scheme"]]
            for scheme in schemes:
                quality.pop(scheme)
            quality["int8_f1_change"] = round(quality["int8"]["f1"] - quality["fp32"]["f1"], 2)
            quality["within_tolerance"] = quality["int8_f1_change"] >= -args.f1_tolerance
            report["int8"]["within_tolerance"] = quality["within_tolerance"]
            if not quality["within_tolerance"]:
                logger.warning("int8 loses %.2f F1 points on %s (%s), more than the tolerance of %.2f: its graph is "
                               "removed from %s/%s (serve the fp32 graph, or raise --f1-tolerance knowingly)",
                               -quality["int8_f1_change"], args.validation, args.split, args.f1_tolerance,
                               args.output, ONNX_FOLDER)
                (args.output / ONNX_FOLDER / report["files"].pop("int8")).unlink(missing_ok=True)
                report["int8"]["removed"] = True
                status = 2
        report["quality"] = quality
        write_atomic(args.output / ONNX_FOLDER / INFO_FILE, json.dumps(report, indent=2) + "\n")
    if update_card(args.output):
        logger.info("added the ONNX section to %s", args.output / "README.md")
    if status:
        sys.exit(status)
    return report


if __name__ == "__main__":
    main()
