"""ONNX export and the torch-free predictor: tiny models of the three tasks exported, checked
against PyTorch, quantized, served by ONNX Runtime with the pipeline's records, from the CLI,
the Hub folder layout and a process where torch cannot be imported."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from modeling_shapca import ShapCAForTokenClassification, ShapCAForWordPairExtraction
from shapca_serving.onnx_export import ExportError, export_onnx
from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
from modeling_shapca.pipeline_shapca import ShapCAPipeline

from tests.helpers import (
    MINILM_PATH, ROOT, TASK_GROUPS, TASK_TEXTS, random_image, tiny_model, tiny_config, tiny_processor,
)

GROUPS, TEXTS = TASK_GROUPS, TASK_TEXTS
_model = tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{task: (model, processor, folder)}: each tiny model saved, then exported into its own
    folder (NER with its vision graph and int8, the word-pair tasks text-only)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    out = {}
    for task in ("ner", "mre", "mjere"):
        processor = tiny_processor(tokenizer)
        model = _model(task).eval()
        folder = tmp_path_factory.mktemp(f"onnx-{task}")
        report = export_onnx(model, folder, processor=processor, quantize=True, with_vision=task == "ner")
        out[task] = (model, processor, folder, report)
    return out


def _pipeline(model, processor):
    from modeling_shapca.tasks import get_task

    return ShapCAPipeline(model=model, processor=processor, task=get_task(model.config.task).pipeline_task)


def assert_same_records(got, expected, atol=1e-4):
    """Same structure, labels, words and offsets; scores within `atol`."""
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            if key == "score":
                assert abs(got[key] - expected[key]) <= atol, (got, expected)
            else:
                assert_same_records(got[key], expected[key], atol)
    elif isinstance(expected, list):
        assert len(got) == len(expected), (got, expected)
        for a, b in zip(got, expected):
            assert_same_records(a, b, atol)
    else:
        assert got == expected


def _count(records) -> int:
    """Entities and relations found (so a comparison of empty outputs is not taken for a check)."""
    if isinstance(records, dict):
        return len(records.get("entities", [])) + len(records.get("relations", []))
    return sum(_count(r) for r in records) if records and isinstance(records[0], (list, dict)) and \
        not ("entity_group" in records[0] or "label" in records[0]) else len(records)


def test_export_writes_checked_graphs_and_their_report(exported):
    _, _, folder, report = exported["ner"]
    files = sorted(p.name for p in (folder / "onnx").iterdir())
    assert files == ["export.json", "model.onnx", "model_int8.onnx", "vision.onnx"]
    assert json.loads((folder / "onnx" / "export.json").read_text()) == report
    assert report["check"]["max_abs_difference"] <= 1e-4 and report["check"]["vision_max_abs_difference"] <= 1e-4
    assert report["check"]["batches"] == [4, 3]  # other batch sizes and lengths than the export's 2
    assert report["sizes_bytes"]["int8"] < report["sizes_bytes"]["model"] / 2
    assert len(report["crf"]["transitions"]) == 9 and report["task"] == "ner"
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert sorted(p.name for p in (exported["mre"][2] / "onnx").iterdir()) == ["export.json", "model.onnx",
                                                                                "model_int8.onnx"]


@pytest.mark.parametrize("task", ["ner", "mre", "mjere"])
def test_fp32_records_equal_the_pytorch_pipeline(exported, task):
    model, processor, folder, _ = exported[task]
    inputs = list(TEXTS[task])
    if task == "ner":  # an image on one input, a context on another
        inputs[1] = {"text": inputs[1], "image": random_image(3), "context": "A flooded street."}
    expected = _pipeline(model, processor)(inputs, batch_size=2)
    predictor = ShapCAOnnxPredictor.from_pretrained(folder)
    got = predictor(inputs, batch_size=2)
    assert _count(expected) >= 2
    assert_same_records(got, expected)
    assert_same_records(predictor(inputs[0]), expected[0])  # a single input gives its own records


def test_windows_streams_and_ignored_labels_as_the_pipeline(exported):
    model, processor, folder, _ = exported["ner"]
    predictor, pipe = ShapCAOnnxPredictor.from_pretrained(folder), _pipeline(model, processor)
    long_text = " ".join(["Kevin Durant enters Oracle Arena tonight ."] * 30)  # 210 words, windows of 64
    expected = pipe(long_text, window=40, stride=10)
    assert_same_records(predictor(long_text, window=40, stride=10), expected)
    assert expected[-1]["end"] > len(long_text) - 10  # the whole text is read
    assert_same_records(list(predictor(iter(TEXTS["ner"]), batch_size=2)), pipe(TEXTS["ner"]))
    kept = predictor(TEXTS["ner"], ignore_labels=["ORG", "MISC"])
    assert_same_records(kept, pipe(TEXTS["ner"], ignore_labels=["ORG", "MISC"]))
    with pytest.raises(ValueError, match="input 1: word 0 must be a non-empty string"):
        predictor([{"words": ["ok"]}, {"words": [""]}])
    with pytest.raises(ValueError, match="window must be a positive int"):
        predictor("text", window=0)
    with pytest.raises(ValueError, match="^line 3: word 1 must be a non-empty string"):  # the name given, not "input 0"
        predictor.prepare(["ok", ""], "line 3")


def test_int8_serves_the_same_records_structure(exported):
    model, processor, folder, report = exported["mjere"]
    fp32 = ShapCAOnnxPredictor.from_pretrained(folder).runner
    int8 = ShapCAOnnxPredictor.from_pretrained(folder, quantized=True)
    feed = fp32.encode([{"words": t.split(), "context": "", "image": None} for t in TEXTS["mjere"]])
    difference = np.abs(int8.runner.logits(feed) - fp32.logits(feed)).max()
    assert 0 < difference <= report["int8"]["max_abs_difference"] + 1e-6 or difference == pytest.approx(
        report["int8"]["max_abs_difference"], rel=0.5)
    records = int8(TEXTS["mjere"])
    assert [set(r) for r in records] == [{"entities", "relations"}] * 3


def test_a_failed_check_raises_and_leaves_no_files(exported, tmp_path):
    model, processor, _, _ = exported["mre"]
    with pytest.raises(ExportError, match=r"largest absolute difference model .* > atol 0"):
        export_onnx(model, tmp_path / "out", processor=processor, atol=0.0, with_vision=False)
    assert not (tmp_path / "out" / "onnx").exists() and list((tmp_path / "out").iterdir()) == []


def test_missing_int8_and_unexported_folders_are_named(exported, tmp_path):
    folder = exported["ner"][2]
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(OSError, match="has no export.json: export the model with `shapca-export` first"):
        ShapCAOnnxPredictor(tmp_path)
    with pytest.raises(OSError, match="has no onnx/model_q.onnx"):
        ShapCAOnnxPredictor(folder, file="model_q.onnx")


HIDE_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "datasets", "accelerate"):
            raise ImportError(name + " is hidden: the ONNX predictor must not need it")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_the_predictor_runs_where_torch_cannot_be_imported(exported, tmp_path):
    model, processor, folder, _ = exported["ner"]
    inputs = [TEXTS["ner"][0], {"text": TEXTS["ner"][1], "image": str(tmp_path / "tweet.png"), "context": "A street."}]
    random_image(4).save(tmp_path / "tweet.png")
    expected = _pipeline(model, processor)(inputs)
    script = HIDE_TORCH + f"""
sys.path.insert(0, {str(ROOT)!r})
import json
from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
records = ShapCAOnnxPredictor.from_pretrained({str(folder)!r})({inputs!r})
try:
    import torch
except ImportError:
    print(json.dumps(records))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_records(json.loads(result.stdout), expected)


def test_predict_cli_onnx_backend_writes_the_torch_records(exported, tmp_path):
    from shapca_serving.predict import main

    model, processor, folder, _ = exported["mre"]
    model.save_pretrained(folder)  # the folder then holds both backends, as after `shapca-export RUN RUN`
    lines = [json.dumps({"id": i, **r}) for i, r in enumerate(TEXTS["mre"])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    main([str(folder), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "torch.jsonl")])
    main([str(folder), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "onnx.jsonl"),
          "--backend", "onnx"])
    torch_rows = [json.loads(line) for line in (tmp_path / "torch.jsonl").read_text().splitlines()]
    onnx_rows = [json.loads(line) for line in (tmp_path / "onnx.jsonl").read_text().splitlines()]
    assert [r["id"] for r in onnx_rows] == [0, 1] and sum(len(r["relations"]) for r in onnx_rows) == 3
    assert_same_records(onnx_rows, torch_rows)
    with pytest.raises(SystemExit):
        main([str(folder), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "x.jsonl"), "--quantized"])


# ---------------------------------------------------------------- a folder checked at load (issue 34)
def _tampered(exported, tmp_path, task="ner", config=None, info=None, graph_from=None):
    """A copy of an exported folder with config.json / export.json edited (functions of the
    dict) or the graph of another task's export."""
    import shutil

    folder = tmp_path / "tampered"
    shutil.copytree(exported[task][2], folder)
    for name, edit in (("config.json", config), ("onnx/export.json", info)):
        if edit is not None:
            path = folder / name
            data = json.loads(path.read_text())
            edit(data)
            path.write_text(json.dumps(data))
    if graph_from:
        shutil.copyfile(exported[graph_from][2] / "onnx" / "model.onnx", folder / "onnx" / "model.onnx")
    return folder


def _labels(n):
    def edit(data):
        names = ["O"] + [f"{p}-T{k}" for k in range(n) for p in "BI"][: n - 1]
        data["id2label"] = {str(i): name for i, name in enumerate(names)}
        data["label2id"] = {name: i for i, name in enumerate(names)}
        if "labels" in data or "format" in data:
            data["labels"] = names
    return edit


def _crf(key, value):
    def edit(data):
        if value is None:
            del data["crf"]
        else:
            data["crf"][key] = value
    return edit


@pytest.mark.parametrize("case, message", [
    ("11 labels, config only", r"was exported for other labels than .*config.json's"),
    ("11 labels on a 9-output graph", r"the graph's output has shape \['batch', 'words', 9\], but a 'ner' model with "
                                      r"11 labels gives 3 axes ending in 11"),
    ("5 labels on a 9-output graph", r"the graph's output has shape .* with 5 labels"),
    ("ids with a gap", r"config.json: id2label ids must be 0..8"),
    ("a CRF of the wrong shape", r"export.json: CRF transitions has shape \(2, 2\), \(9, 9\) expected for 9 labels"),
    ("no CRF", r"export.json has no CRF parameters \(start, end, transitions\) of a NER export"),
    ("NaN in the CRF", r"export.json: CRF start holds values that are not finite"),
    ("an MRE graph in a NER folder", r"the graph's output has shape \['batch', 'words', 'words', 3\], but a 'ner' "
                                     r"model with 9 labels gives 3 axes"),
    ("export.json of another task", r"was exported from a 'mre' model, but .*config.json is 'ner'"),
])
def test_a_wrong_or_tampered_folder_is_refused_at_load(exported, tmp_path, case, message):
    """Each case predicted silently wrong labels, or failed at predict time with a bare
    KeyError, a NumPy broadcast error or 'NoneType is not subscriptable' (issue 34)."""
    def gap(data):
        data["id2label"] = {str(i if i < 8 else 9): v for i, v in enumerate(data["id2label"].values())}

    edits = {
        "11 labels, config only": dict(config=_labels(11)),
        "11 labels on a 9-output graph": dict(config=_labels(11), info=_labels(11)),
        "5 labels on a 9-output graph": dict(config=_labels(5), info=_labels(5)),
        "ids with a gap": dict(config=gap),
        "a CRF of the wrong shape": dict(info=_crf("transitions", [[0.0, 0.0], [0.0, 0.0]])),
        "no CRF": dict(info=_crf("crf", None)),
        "NaN in the CRF": dict(info=_crf("start", [float("nan")] * 9)),
        "an MRE graph in a NER folder": dict(graph_from="mre"),
        "export.json of another task": dict(info=lambda d: d.update(task="mre")),
    }[case]
    folder = _tampered(exported, tmp_path, **edits)
    with pytest.raises(ValueError, match=message):
        ShapCAOnnxPredictor(folder)
    ShapCAOnnxPredictor(exported["ner"][2])  # the untouched folder loads


def test_a_missing_local_folder_is_named_as_such(tmp_path):
    for name in (str(tmp_path / "nope"), "./outputs/nope", "outputs/run/nope"):
        with pytest.raises(OSError, match=f"^{name}: no such model folder$"):
            ShapCAOnnxPredictor.from_pretrained(name)


def test_export_refuses_a_folder_holding_another_model_and_cleans_its_leftovers(exported, tmp_path):
    import os
    import shutil

    from shapca_serving.locks import WriterLock

    model, processor, ner_folder, _ = exported["ner"]
    other = tmp_path / "mre-run"
    exported["mre"][0].save_pretrained(other)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    with pytest.raises(ValueError, match=f"^{other} holds another model \\(model.safetensors\\); exporting"):
        export_onnx(model, other, processor=processor)
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before  # nothing written
    # a killed export's partial folder is removed by the next export (here one whose check fails)
    out = tmp_path / "out"
    (out / ".onnx-partial-killed").mkdir(parents=True)
    with pytest.raises(ExportError):
        export_onnx(exported["mre"][0], out, processor=processor, atol=0.0, with_vision=False)
    assert list(out.iterdir()) == []
    with WriterLock(out / ".shapca-export.lock", "busy"):
        with pytest.raises(ValueError, match=f"another export is writing {out} right now"):
            export_onnx(exported["mre"][0], out, processor=processor, with_vision=False)
    # onnx/ gets the umask's modes, not mkdtemp's 0700
    umask = os.umask(0)
    os.umask(umask)
    assert (ner_folder / "onnx").stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in (ner_folder / "onnx").iterdir()} == {0o666 & ~umask}
    shutil.rmtree(other)


def test_the_default_export_traces_eager_attention_and_gives_the_model_back(exported):
    import onnx

    model, _, folder, report = exported["ner"]
    assert (report["exporter"], report["opset"]) == ("torchscript", 17)
    graph = onnx.load(str(folder / "onnx" / "model.onnx"))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    ops = [node.op_type for node in graph.graph.node]
    # a Softmax per encoder layer plus the fusion's; exported SDPA guards its Softmax with IsNaN:
    # with the encoder traced in eager attention only the fusion's attention has one
    assert ops.count("Softmax") == model.config.text_config.num_hidden_layers + 1
    assert ops.count("IsNaN") == 1
    assert model.shapca.text_model.config._attn_implementation == "sdpa"  # the user's model is as it was


@pytest.mark.slow
def test_the_dynamo_exporter_gives_the_same_records(exported, tmp_path):
    model, processor, _, _ = exported["mre"]
    report = export_onnx(model, tmp_path, processor=processor, exporter="dynamo")
    assert (report["exporter"], report["opset"]) == ("dynamo", 18) and report["check"]["max_abs_difference"] <= 1e-4
    inputs = list(TEXTS["mre"])
    assert_same_records(ShapCAOnnxPredictor.from_pretrained(tmp_path)(inputs, batch_size=2),
                        _pipeline(model, processor)(inputs, batch_size=2))
    with pytest.raises(ValueError, match="exporter must be one of torchscript, dynamo, not 'jit'"):
        export_onnx(model, tmp_path / "x", processor=processor, exporter="jit")
