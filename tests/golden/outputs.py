"""Golden outputs of the inference paths, recorded on main before the one-engine refactor
(issue 32): the records and scores of every predictor (transformers pipeline, `model.predict`,
the ONNX predictor in fp32 and int8, the prediction CLI on both backends) for tiny models of
the three tasks, the console scripts' flags, the names of the files staged for the Hub and the
card's sections. `tests/test_golden.py` recomputes them and compares.

    python -m tests.golden.outputs --write        # re-record (only when a change of output is meant)
    python -m tests.golden.outputs --write-int8   # re-record only the int8 graphs' records (a change
                                                  # of the export or of the quantization; the rest stays)

The file holds a sample (`sample`): a list of more than SAMPLE items is stored as its length and
its first SAMPLE items (an untrained MJERE model's long input has 10,000 relations), so the file
stays small (issue 42: 19 MB before, under 1 MB after); the test samples what it computes the
same way. The sampled file was made from the full one recorded before, not re-recorded.

Re-recorded: the int8 records on 2026-12-06 (issue 35: the TorchScript exporter's graph is
quantized at other points than the dynamo graph, and lists are batched in order of length; the
int8 graph quantizes activations per batch, so its scores depend on the batch's other inputs;
fp32 records were unchanged within 1e-5).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden.json")
SAMPLE = 20  # items kept of a longer list


def sample(value):
    """`value` with every list of more than SAMPLE items replaced by `{"count", "first"}` (the
    records and the CLI's lines; flags, staged files and card sections are kept whole)."""
    if isinstance(value, dict):
        return {key: sample(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [sample(item) for item in value[:SAMPLE]]
        return {"count": len(value), "first": items} if len(value) > SAMPLE else items
    return value


def _inputs(task: str, image_path: str) -> list:
    from tests.helpers import TASK_TEXTS

    items = list(TASK_TEXTS[task])
    long_words = " ".join(f"w{i}" for i in range(30))
    if task == "ner":
        items.append({"text": "Kevin Durant at Oracle Arena", "image": image_path, "context": "a basketball player"})
        items.append({"words": ["Kevin", "Durant", "in", "Paris", "tonight"], "context": "a city"})
    elif task == "mre":
        items.append({"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]], "image": image_path})
    else:
        items.append({"text": "Kevin Durant joins the Warriors", "context": "a player"})
    items.append({"text": long_words, **({"pairs": [[[20, 21], [25, 27]]]} if task == "mre" else {})})
    return items


def _cli_flags() -> dict:
    """The option strings of every console script's --help."""
    from shapca_training.cli import JOBS

    flags = {}
    for name, target in JOBS.items():
        import importlib

        module, function = target.split(":")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            getattr(importlib.import_module(module), function)(["--help"])
        flags[name] = sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", out.getvalue())))
    return flags


def compute(work: Path, trained_dir: Path | None = None) -> dict:
    """Everything the golden file holds, computed in `work` (a fresh folder)."""
    import transformers

    from tests.helpers import MINILM_PATH, random_image, tiny_model, tiny_processor
    from shapca_serving.onnx_export import export_onnx
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
    from modeling_shapca.pipeline_shapca import ShapCAPipeline
    from shapca_serving.predict import main as predict_main
    from modeling_shapca.tasks import get_task

    work.mkdir(parents=True, exist_ok=True)
    image_path = str(work / "photo.png")
    random_image(3, size=(48, 40)).save(image_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    golden: dict = {"records": {}, "cli": {}}
    for task in ("ner", "mre", "mjere"):
        processor = tiny_processor(tokenizer)
        model = tiny_model(task).eval()
        folder = work / task
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        export_onnx(model, folder, processor=processor, quantize=True, with_vision=True)
        items = _inputs(task, image_path)
        windows = dict(window=8, stride=2)
        pipe = ShapCAPipeline(model=model, processor=processor, task=get_task(task).pipeline_task)
        onnx = ShapCAOnnxPredictor.from_pretrained(folder)
        int8 = ShapCAOnnxPredictor.from_pretrained(folder, quantized=True)
        texts = [t for t in items if isinstance(t, str)]
        golden["records"][task] = {
            "pipeline": pipe(items, batch_size=2, **windows),
            "pipeline_single": pipe(items[0]),
            "pipeline_ignore": pipe(items, batch_size=3, ignore_labels=[_first_label(task, model.config)]),
            "model_predict": model.predict(texts, processor=processor) if texts else [],
            "onnx_fp32": onnx(items, batch_size=2, **windows),
            "onnx_int8": int8(items, batch_size=2, **windows),
        }
        lines = work / f"{task}.jsonl"
        rows = [{"id": i, **(item if isinstance(item, dict) else {"text": item})} for i, item in enumerate(items)]
        for row in rows:  # relative to the input file (the CLI's rule), so the lines are the same everywhere
            if "image" in row:
                row["image"] = Path(row["image"]).name
        lines.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        for backend in ("torch", "onnx"):
            out = work / f"{task}-{backend}.jsonl"
            predict_main([str(folder), "--input", str(lines), "--output", str(out), "--batch-size", "2",
                          "--window", "8", "--stride", "2", "--backend", backend])
            golden["cli"][f"{task}-{backend}"] = [json.loads(line) for line in out.read_text().splitlines()]
    golden["cli_flags"] = _cli_flags()
    if trained_dir is not None:
        from push_to_hub import main as push_main

        staged = work / "staged"
        push_main([str(trained_dir), "--repo-id", "user/shapca-golden", "--dry-run", str(staged)])
        golden["staged_files"] = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
        card = (staged / "README.md").read_text(encoding="utf-8")
        golden["card_sections"] = [line for line in card.splitlines() if line.startswith("#")]
    golden = json.loads(json.dumps(golden))  # tuples as lists, as the file holds them
    return {**golden, "records": sample(golden["records"]), "cli": sample(golden["cli"])}


def _first_label(task: str, config) -> str:
    groups = getattr(config, "label_groups", None) or {}
    if task == "ner":
        return "PER"
    if task == "mre":
        return groups["relation"][1]
    return groups["entity"][1]


def main(argv=None) -> None:
    import tempfile

    import train
    from tests.helpers import base_args, tiny_text_model_at

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--write-int8", action="store_true")
    args = parser.parse_args(argv)
    if args.write_int8:
        with tempfile.TemporaryDirectory() as tmp:
            now = compute(Path(tmp))
        golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
        for task, records in now["records"].items():
            golden["records"][task]["onnx_int8"] = records["onnx_int8"]
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text_model = tiny_text_model_at(work / "bert")
        trained = work / "trained"
        train.main(base_args(text_model, trained, "--num_train_epochs", "1"))
        golden = compute(work / "golden", trained)
    if args.write:
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({k: len(v) for k, v in golden.items()}))


if __name__ == "__main__":
    main()
