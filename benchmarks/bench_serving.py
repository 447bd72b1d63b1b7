"""CPU serving, round two (issue 35): Shap-CA against the plain MiniLM tagger it competes with.

    python -m benchmarks.bench_serving speed --model RUN [--rounds 4]
    python -m benchmarks.bench_serving latency --model RUN [--sentences 300]
    python -m benchmarks.bench_serving profile --model RUN
    python -m benchmarks.bench_serving memory --model RUN
    python -m benchmarks.bench_serving pos
    python -m benchmarks.bench_serving tag-ahead --model RUN [--rounds 6]
    python -m benchmarks.bench_serving threads --model RUN [--sentences 300]

`RUN` is a trained Twitter-2015 folder (`train.py configs/twitter2015-minilm.yaml`); it is
exported with int8 into `RUN-onnx` unless that folder has `onnx/` already. The anchor is
`bench_onnx.Tagger(exporter="torchscript")`: the same MiniLM with a linear head, exported by
`torch.onnx.export(dynamo=False, opset_version=17)`, int8 by `quantize_dynamic(QInt8)` with its
defaults, run with the tokenizer, argmax and first-subword word labels. Every path goes from
words to entity records; Shap-CA's include its POS tagging.

`speed`: sentences/s at batch 32 of six paths on the Twitter-2015 test word lists, in one
process (Shap-CA batches a list in order of length, as its predictors do by default; `--no-sort`
keeps input order, as the anchors do): `--rounds` timed rounds after a warm-up round, each round on sentences no path has
seen (the split cut into rounds + 1 slices), the paths' order rotated each round; the median
round per path, and the issue's four ratios. `latency`: one sentence a call (batch 1), the
validation split's sentences (not seen by `speed`), each sentence through every ONNX path in
rotated order; p50 / p95 ms per sentence. `profile`: ONNX Runtime's per-node profile of the
Shap-CA and plain graphs (fp32 and int8) on the same sentences at batch 32, summed by operator,
and where the Shap-CA int8 predictor's time goes (POS, tokenizer, graph, rest). `memory`: each
path's peak RSS in a fresh process (loading included). `pos`: the POS tagger's fast path against
spaCy as loaded on every shipped split: words/s and equal tags. `tag-ahead`: the PyTorch
pipeline (eager, batch 32, sorted) as it is and with its DataLoader's batches POS-tagged one
ahead in a thread (`engine.tagged_ahead`, as the pipeline did before issue 42), alternating
rounds on fresh slices; the median round each and the gain (issue 42 kept it only if removing it
cost more than 2 %). `threads`: the Shap-CA int8 predictor under ONNX Runtime's thread-pool
settings (`SESSION_VARIANTS`: threads that sleep, that spin within a run and stop when it
returns, that spin), batch-1 p50 / p95 and batch-32 sentences/s. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource as rusage
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_onnx import SPEED_PATHS, Tagger, _pipeline, exported

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "twitter2015"
TARGETS = {  # (Shap-CA path, anchor path, lowest ratio) as issue 35 fixes them
    "int8": ("shapca-onnx-int8", "tagger-onnx-int8", 0.8),
    "fp32": ("shapca-onnx-fp32", "tagger-onnx-fp32", 0.9),
    "eager": ("shapca-torch", "tagger-torch", 1.0),
}
P95_TARGET = 1.5
P50_TARGET = 1.2  # issue 45: Shap-CA int8's median batch-1 latency against the plain int8 tagger's


LIMIT = None  # --limit: the first N sentences of each split (the tests' quick mode)


def _words(split: str) -> list[list[str]]:
    from datasets_scripts.readers import read_twitter_ner

    return [s.words for s in read_twitter_ner(DATA / f"{split}.txt")[0]][:LIMIT]


def _paths(model: Path, tagger: Tagger, batch_size: int, sort: bool = True) -> dict:
    """Each path as `run(word lists)`, words to records (Shap-CA's lists batched in order of
    length unless `sort=False`)."""
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(model)
    pipe = _pipeline(model)
    fp32, int8 = ShapCAOnnxPredictor.from_pretrained(folder), ShapCAOnnxPredictor.from_pretrained(folder, quantized=True)
    sessions = {False: tagger.session(False), True: tagger.session(True)}
    return {
        "shapca-torch": lambda words: pipe([{"words": w} for w in words], batch_size=batch_size, show_progress=False,
                                           sort_by_length=sort),
        "shapca-onnx-fp32": lambda words: fp32([{"words": w} for w in words], batch_size=batch_size,
                                               sort_by_length=sort),
        "shapca-onnx-int8": lambda words: int8([{"words": w} for w in words], batch_size=batch_size,
                                               sort_by_length=sort),
        "tagger-torch": lambda words: tagger.pipe([" ".join(w) for w in words], batch_size=batch_size),
        "tagger-onnx-fp32": lambda words: tagger.run_onnx(sessions[False], words, batch_size),
        "tagger-onnx-int8": lambda words: tagger.run_onnx(sessions[True], words, batch_size),
    }


def tag_ahead(args) -> dict:
    import torch

    words = _words("test")
    slice_size = len(words) // (args.rounds + 1)
    slices = [words[i * slice_size:(i + 1) * slice_size] for i in range(args.rounds + 1)]
    from modeling_shapca import pipeline_shapca
    from modeling_shapca.engine import tagged_ahead

    pipe = _pipeline(args.model)
    plain_loader = pipeline_shapca.DataLoader

    class TaggedAhead:  # the loader's batches, each with the future of its tags (the pipeline's _forward reads it)
        def __init__(self, *loader_args, **loader_kwargs):
            self.loader = plain_loader(*loader_args, **loader_kwargs)

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for batch, row_tags in tagged_ahead(self.loader, lambda batch: pipe.engine.tag_rows(batch["records"])):
                yield {**batch, "row_tags": row_tags}

    times, records = {True: [], False: []}, {}
    with torch.inference_mode():
        try:
            for round_, chunk in enumerate(slices):  # round 0 warms up
                for ahead in ((True, False) if round_ % 2 else (False, True)):
                    pipeline_shapca.DataLoader = TaggedAhead if ahead else plain_loader
                    began = time.perf_counter()
                    records[ahead] = pipe([{"words": w} for w in chunk], batch_size=args.batch_size,
                                          show_progress=False)
                    if round_:
                        times[ahead].append(time.perf_counter() - began)
        finally:
            pipeline_shapca.DataLoader = plain_loader
    same = records[True] == records[False]
    rates = {ahead: slice_size / statistics.median(t) for ahead, t in times.items()}
    return {"sentences_per_round": slice_size, "rounds": args.rounds, "batch_size": args.batch_size,
            "with_tag_ahead": round(rates[True], 1), "without": round(rates[False], 1),
            "gain": round(rates[True] / rates[False] - 1, 4), "same_records_last_round": same}


def _ratios(rates: dict) -> dict:
    return {name: {"ratio": round(rates[ours] / rates[anchor], 2), "target": least,
                   "met": rates[ours] / rates[anchor] >= least} for name, (ours, anchor, least) in TARGETS.items()}


def _rotated_rounds(paths: dict, slices: list) -> dict[str, list[float]]:
    """Seconds of every path on each slice but the first (a warm-up), the paths' order rotated
    each round."""
    names = list(paths)
    times = {name: [] for name in names}
    for round_, chunk in enumerate(slices):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            began = time.perf_counter()
            paths[name](chunk)
            if round_:
                times[name].append(time.perf_counter() - began)
    return times


def _one_sentence_ms(paths: dict, words: list) -> dict[str, dict]:
    """p50 / p95 ms of every path on each sentence alone (after a warm-up on five), the paths'
    order rotated per sentence."""
    names = list(paths)
    for name in names:
        paths[name](words[:5])
    took = {name: [] for name in names}
    for i, sentence in enumerate(words):
        for name in names[i % len(names):] + names[:i % len(names)]:
            began = time.perf_counter()
            paths[name]([sentence])
            took[name].append(1000 * (time.perf_counter() - began))
    return {name: {"p50_ms": round(float(np.percentile(t, 50)), 2), "p95_ms": round(float(np.percentile(t, 95)), 2)}
            for name, t in took.items()}


def speed(args) -> dict:
    import torch

    words = _words("test")
    slice_size = len(words) // (args.rounds + 1)
    slices = [words[i * slice_size:(i + 1) * slice_size] for i in range(args.rounds + 1)]
    paths = _paths(args.model, Tagger(exported(args.model), exporter="torchscript"), args.batch_size, args.sort)
    with torch.inference_mode():
        times = _rotated_rounds(paths, slices)
    rates = {name: slice_size / statistics.median(t) for name, t in times.items()}
    return {"sentences_per_round": slice_size, "rounds": args.rounds, "batch_size": args.batch_size,
            "shapca_sorted_by_length": args.sort,
            "threads": torch.get_num_threads(), "sentences_per_second": {k: round(v, 1) for k, v in rates.items()},
            "spread_seconds": {k: [round(min(t), 3), round(max(t), 3)] for k, t in times.items()},
            "targets": _ratios(rates)}


def latency(args) -> dict:
    import torch

    words = _words("valid")[: args.sentences]
    paths = _paths(args.model, Tagger(exported(args.model), exporter="torchscript"), 1)
    with torch.inference_mode():
        out = _one_sentence_ms({n: paths[n] for n in SPEED_PATHS if "onnx" in n}, words)
    ratio = out["shapca-onnx-int8"]["p95_ms"] / out["tagger-onnx-int8"]["p95_ms"]
    median = out["shapca-onnx-int8"]["p50_ms"] / out["tagger-onnx-int8"]["p50_ms"]
    return {"sentences": len(words), "ms": out,
            "int8_p50_ratio": {"ratio": round(median, 2), "target": P50_TARGET, "met": median <= P50_TARGET},
            "int8_p95_ratio": {"ratio": round(ratio, 2), "target": P95_TARGET, "met": ratio <= P95_TARGET}}


SESSION_VARIANTS = {  # ONNX Runtime's intra-op thread pool between and within runs
    "sleep": {"session.intra_op.allow_spinning": "0"},  # threads never spin
    "spin-within-runs": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "spin": {"session.intra_op.allow_spinning": "1"},  # ONNX Runtime's default
}


def threads(args) -> dict:
    """The Shap-CA int8 predictor under each thread-pool setting: batch-1 p50 / p95 over the
    validation sentences (settings rotated per sentence) and batch-32 sentences/s over the test
    split in rounds (rotated; median round)."""
    import onnxruntime as ort

    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(args.model)
    predictors = {}
    for name, entries in SESSION_VARIANTS.items():
        options = ort.SessionOptions()
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        predictors[name] = ShapCAOnnxPredictor.from_pretrained(folder, quantized=True, session_options=options)
    words, test = _words("valid")[: args.sentences], _words("test")
    one = _one_sentence_ms({name: lambda batch, p=p: p([{"words": w} for w in batch], batch_size=1)
                            for name, p in predictors.items()}, words)
    size = len(test) // (args.rounds + 1)
    rounds = _rotated_rounds({name: lambda batch, p=p: p([{"words": w} for w in batch], batch_size=args.batch_size)
                              for name, p in predictors.items()},
                             [test[k * size:(k + 1) * size] for k in range(args.rounds + 1)])
    return {"sentences": len(words), "batch_size": args.batch_size, "settings": SESSION_VARIANTS,
            **{name: {**one[name], "sentences_per_second": round(size / statistics.median(rounds[name]), 1)}
               for name in predictors}}


# ------------------------------------------------------------------------------- profile
def _node_profile(path: Path, feeds: list[dict], prefix: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    began = time.perf_counter()
    for feed in feeds:
        session.run(None, {k: v for k, v in feed.items() if k in names})
    wall = time.perf_counter() - began
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, calls = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
    total = sum(by_op.values())
    return {"wall_s": round(wall, 3), "node_s": round(total / 1e6, 3),
            "ops": {op: {"share": round(d / total, 3), "calls_per_run": calls[op] // len(feeds)}
                    for op, d in by_op.most_common(10)}}


def profile(args) -> dict:
    import tempfile

    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    folder = exported(args.model)
    tagger = Tagger(folder, exporter="torchscript")
    words = _words("test")[: args.sentences]
    int8 = ShapCAOnnxPredictor.from_pretrained(folder, quantized=True)
    runner = int8.runner
    ours = [runner.encode([{"words": w, "context": "", "image": None} for w in words[i:i + 32]])
            for i in range(0, len(words), 32)]
    plain = [dict(tagger.tokenizer(words[i:i + 32], is_split_into_words=True, padding=True, return_tensors="np"))
             for i in range(0, len(words), 32)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, feeds in (("shapca-fp32", folder / "onnx" / "model.onnx", ours),
                                  ("tagger-fp32", tagger.onnx, plain),
                                  ("shapca-int8", folder / "onnx" / "model_int8.onnx", ours),
                                  ("tagger-int8", tagger.int8, plain)):
            out[name] = _node_profile(path, feeds, Path(tmp) / name)
    # the predictor's own time, by step (one pass over the same sentences, fresh to the tagger's vocabulary)
    spent = collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **k):
            began = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - began
        return wrapper

    runner.tagger = timed("pos", runner.tagger)  # the runner only calls it
    tokenizer_class = type(runner.tokenizer)
    tokenizer_class.__call__ = timed("tokenizer", tokenizer_class.__call__)  # this process only
    runner.session.run = timed("graph", runner.session.run)
    words = _words("valid")[: args.sentences]
    for batch_size in (32, 1):
        spent.clear()
        began = time.perf_counter()
        for start in range(0, len(words), batch_size):  # batch 1: one call per sentence, as `latency`
            int8([{"words": w} for w in words[start:start + batch_size]], batch_size=batch_size)
        total = time.perf_counter() - began
        steps = {k: round(v / total, 3) for k, v in spent.items()}
        steps["rest (encoding, CRF, records)"] = round(1 - sum(spent.values()) / total, 3)
        out[f"shapca-int8 predictor, batch {batch_size}"] = {"ms_per_sentence": round(1000 * total / len(words), 2),
                                                             "shares": steps}
    return out


# -------------------------------------------------------------------------------- memory
def memory_one(args) -> dict:
    words = _words("test")[: args.sentences]
    tagger = Tagger(exported(args.model), exporter="torchscript") if args.path.startswith("tagger") else None
    before = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss
    if tagger is None:
        from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

        folder = exported(args.model)
        if args.path == "shapca-torch":
            _pipeline(args.model)([{"words": w} for w in words], batch_size=32, show_progress=False)
        else:
            ShapCAOnnxPredictor.from_pretrained(folder, quantized=args.path.endswith("int8"))(
                [{"words": w} for w in words], batch_size=32)
    elif args.path == "tagger-torch":
        tagger.pipe([" ".join(w) for w in words], batch_size=32)
    else:
        tagger.run_onnx(tagger.session(args.path.endswith("int8")), words, 32)
    peak = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss
    return {"path": args.path, "peak_rss_mib": round(peak / 1024, 1), "before_model_mib": round(before / 1024, 1)}


def memory(args) -> dict:
    out = {}
    for path in SPEED_PATHS:
        result = subprocess.run([sys.executable, "-m", "benchmarks.bench_serving", "memory-one", "--model",
                                 str(args.model), "--sentences", str(args.sentences), "--path", path]
                                + (["--limit", str(args.limit)] if args.limit else []),
                                capture_output=True, text=True, env={**os.environ}, cwd=ROOT)
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        out[path] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return {"peak_rss_mib": out}


# ----------------------------------------------------------------------------------- pos
def pos(args) -> dict:
    from datasets_scripts.readers import read_mnre
    from modeling_shapca.pos import PosTagger

    words = [w for split in ("train", "valid", "test") for w in _words(split)]
    words += [r.words for split in ("train", "val", "test")
              for r in read_mnre(ROOT / "data" / "mnre" / f"mnre_{split}.txt")[:LIMIT]]
    words = list({tuple(w): None for w in words})  # each distinct sentence once
    out = {"sentences": len(words), "words": sum(map(len, words))}
    tags = {}
    for name, tagger in (("spacy", PosTagger(fast=False)), ("fast", PosTagger())):
        tagger(words[:10])
        began = time.perf_counter()
        tags[name] = tagger(words)
        out[f"{name}_words_per_second"] = round(out["words"] / (time.perf_counter() - began))
        out[f"{name}_path"] = tagger.fast_path
    out["speedup"] = round(out["fast_words_per_second"] / out["spacy_words_per_second"], 2)
    out["words_with_other_tags"] = sum(a != b for x, y in zip(tags["spacy"], tags["fast"]) for a, b in zip(x, y))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["speed", "latency", "profile", "memory", "memory-one", "pos", "tag-ahead",
                                        "threads"])
    parser.add_argument("--model", type=Path, help="a trained Twitter-2015 folder (not for pos)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--path", choices=SPEED_PATHS)
    parser.add_argument("--no-sort", dest="sort", action="store_false",
                        help="speed: Shap-CA's lists in input order (sort_by_length=False), like the anchors")
    parser.add_argument("--limit", type=int, help="read only the first N sentences of each split (a quick run)")
    args = parser.parse_args(argv)
    global LIMIT
    LIMIT = args.limit
    if args.job != "pos" and args.model is None:
        parser.error(f"{args.job} needs --model")
    jobs = {"speed": speed, "latency": latency, "profile": profile, "memory": memory, "memory-one": memory_one,
            "pos": pos, "tag-ahead": tag_ahead, "threads": threads}
    result = jobs[args.job](args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
