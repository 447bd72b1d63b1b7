"""`shapca-export` on a model trained by train.py: the files, the F1 measured through the ONNX
predictor (equal to PyTorch's for fp32), the int8 tolerance report, the card and the upload."""

import json
import shutil

import numpy as np
import pytest
import torch

import push_to_hub
from shapca_training import export

from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
from tests.helpers import raw_twitter

SENTENCES = ("IMGID:1\nKevin\tB-PER\nDurant\tI-PER\nenters\tO\nOracle\tB-LOC\nArena\tI-LOC\n\n"
             "IMGID:2\nRT\tO\n@cnni\tO\n:\tO\nParis\tB-LOC\nfloods\tO\n\n"
             "IMGID:3\nGo\tO\n#Bears\tB-ORG\n!\tO\n\n"
             "IMGID:4\nThe\tO\nUnited\tB-ORG\nNations\tI-ORG\nmet\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n")


@pytest.fixture(scope="module")
def run(trained_model_dir, tmp_path_factory):
    """A copy of the trained run, exported into itself with int8 and measured on 4 sentences."""
    folder = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_model_dir, folder)
    data = raw_twitter(tmp_path_factory.mktemp("raw"), SENTENCES)
    report = export.main([str(folder), str(folder), "--quantize", "int8", "--validation", str(data), "--split", "test",
                          "--batch-size", "3"])
    return folder, data, report


def test_export_measures_f1_and_speed_and_fp32_matches_pytorch(run):
    from shapca_serving.loading import load_trained

    folder, data, report = run
    quality = report["quality"]
    assert json.loads((folder / "onnx" / "export.json").read_text()) == report
    assert quality["fp32"]["sentences"] == 4 and quality["int8"]["sentences"] == 4
    assert quality["int8_f1_change"] == round(quality["int8"]["f1"] - quality["fp32"]["f1"], 2)
    assert report["int8"]["within_tolerance"] == quality["within_tolerance"] == (quality["int8_f1_change"] >= -0.5)
    # the fp32 graph predicts exactly what PyTorch predicts on the same inputs
    model = load_trained(str(folder), processor=False)[0].eval()
    rows = export.load_split(str(data), "test", "ner")
    predictor = ShapCAOnnxPredictor.from_pretrained(folder).runner
    feed = export.labelled_feed(predictor, list(rows), model.config)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items() if k not in ("labels", "image_regions")}
    with torch.no_grad():
        expected = model(**{k: v.bool() if k.endswith("mask") or k == "has_image" else v for k, v in inputs.items()})
    assert np.array_equal(predictor.predictions(feed)[0], expected.predictions.numpy())



def _ops(path) -> set:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_auto_measures_every_int8_scheme_and_publishes_the_one_it_keeps(run):
    """`--quantize int8 --validation`: dynamic, static-minmax and static-percentile are exported,
    measured on the split, and the kept one (the rule of `pick_scheme`) is model_int8.onnx."""
    from shapca_serving.quantization import SCHEMES

    folder, data, report = run
    candidates = report["int8"]["candidates"]
    assert list(candidates) == list(SCHEMES)
    kept = report["int8"]["scheme"]
    assert (kept, report["int8"]["chosen_by"]) == export.pick_scheme(candidates)
    assert report["quality"]["int8"]["f1"] == candidates[kept]["f1"]
    for scheme in SCHEMES[1:]:  # calibrated on the --validation data's train split (4 sentences)
        assert candidates[scheme]["calibration"] == {"data": str(data), "split": "train", "sentences": 4,
                                                     "sampled_from": 4, "seed": 0}
    # only the kept graph is left, and it is that scheme's graph
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["export.json", "model.onnx", "model_int8.onnx",
                                                                   "vision.onnx"]
    ops = _ops(folder / "onnx" / "model_int8.onnx")
    assert ("DynamicQuantizeLinear" in ops) == (kept == "dynamic") and ("QuantizeLinear" in ops) == (kept != "dynamic")
    assert report["sizes_bytes"]["int8"] == (folder / "onnx" / "model_int8.onnx").stat().st_size
    card = (folder / "README.md").read_text()
    assert f"`onnx/model_int8.onnx` (int8, {kept}" in card
    assert f"int8 scheme: {kept}, kept as {report['int8']['chosen_by']}; the schemes measured: dynamic " in card


@pytest.mark.parametrize("figures, kept", [
    ({"dynamic": (60.0, 100.0), "static-minmax": (61.0, 95.0), "static-percentile": (62.0, 80.0)}, "static-minmax"),
    ({"dynamic": (60.0, 100.0), "static-minmax": (60.0, 150.0), "static-percentile": (59.0, 150.0)}, "dynamic"),
    ({"dynamic": (60.0, 100.0), "static-minmax": (59.9, 150.0), "static-percentile": (60.5, 90.0)},
     "static-percentile"),
])
def test_the_kept_scheme_is_the_best_f1_at_nine_tenths_of_the_dynamic_speed(figures, kept):
    candidates = {k: {"f1": f1, "sentences_per_second": speed} for k, (f1, speed) in figures.items()}
    assert export.pick_scheme(candidates)[0] == kept


def test_without_validation_dynamic_and_static_schemes_calibrated_on_the_named_data(run, trained_model_dir, tmp_path,
                                                                                    caplog):
    """Without --validation, auto is DEFAULT_SCHEME (dynamic: no data needed); a static scheme
    asked for is calibrated on --calibration, else on the preset the model was trained on, and
    refused by name when there is none."""
    import logging

    _, data, _ = run
    caplog.set_level(logging.INFO, logger="shapca.export")
    report = export.main([str(trained_model_dir), str(tmp_path / "auto"), "--quantize", "int8"])
    assert export.DEFAULT_SCHEME == "dynamic" and report["int8"]["scheme"] == "dynamic"
    assert "calibration" not in report["int8"] and "int8: dynamic (the scheme measured best" in caplog.text
    with pytest.raises(SystemExit, match="--calibration calibrates the static int8 schemes; this export uses dynamic"):
        export.main([str(trained_model_dir), str(tmp_path / "y"), "--quantize", "int8", "--calibration", str(data)])
    assert not (tmp_path / "y").exists()
    assert "DynamicQuantizeLinear" in _ops(tmp_path / "auto" / "onnx" / "model_int8.onnx")
    out = tmp_path / "named"
    report = export.main([str(trained_model_dir), str(out), "--quantize", "int8", "--int8-scheme", "static-minmax",
                          "--calibration", str(data)])
    assert report["int8"]["scheme"] == "static-minmax"
    assert report["int8"]["calibration"] == {"data": str(data), "split": "train", "sentences": 4, "sampled_from": 4,
                                             "seed": 0}
    assert "int8 calibration: 4 sentences of" in caplog.text
    assert "QuantizeLinear" in _ops(out / "onnx" / "model_int8.onnx")
    # the model's results.json names the preset it was trained on: its train split calibrates
    report = export.main([str(trained_model_dir), str(tmp_path / "preset"), "--quantize", "int8", "--int8-scheme",
                          "static-percentile"])
    train_rows = len(export.load_split("twitter2015", "train", "ner"))
    assert report["int8"]["calibration"] == {"data": "twitter2015", "split": "train", "sentences": 256,
                                             "sampled_from": train_rows, "seed": 0}
    # no calibration source (no results.json): a static scheme is refused before anything is written
    bare = tmp_path / "bare"
    shutil.copytree(trained_model_dir, bare)
    (bare / "results.json").unlink()
    with pytest.raises(SystemExit, match="--int8-scheme static-minmax needs calibration sentences"):
        export.main([str(bare), str(tmp_path / "x"), "--quantize", "int8", "--int8-scheme", "static-minmax"])
    assert not (tmp_path / "x").exists()

def test_the_card_and_the_upload_carry_the_onnx_files(run, tmp_path):
    folder, _, report = run
    card = (folder / "README.md").read_text()
    assert card.count("## ONNX (serving without PyTorch)") == 1
    assert f"| fp32 | {report['quality']['fp32']['f1']:.2f} |" in card
    assert card.index("## ONNX") < card.index("## Citation")
    export.update_card(folder)  # a second export renders the card again, with one section
    assert (folder / "README.md").read_text().count("## ONNX (serving without PyTorch)") == 1
    files = push_to_hub.main([str(folder), "--repo-id", "someone/shapca-onnx", "--dry-run", str(tmp_path / "staged")])
    assert {"onnx/model.onnx", "onnx/model_int8.onnx", "onnx/export.json", "onnx/vision.onnx"} <= set(files)
    staged = (tmp_path / "staged" / "README.md").read_text()
    assert "ShapCAOnnxPredictor.from_pretrained('someone/shapca-onnx', quantized=True)" in staged
    assert str(folder) not in (tmp_path / "staged" / "onnx" / "export.json").read_text()
    files = push_to_hub.main([str(folder), "--repo-id", "someone/x", "--no-onnx", "--dry-run", str(tmp_path / "bare")])
    assert not any(f.startswith("onnx/") for f in files)


def test_an_int8_model_outside_the_tolerance_is_reported(run, tmp_path, monkeypatch, caplog):
    folder, data, _ = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    scores = iter([{"f1": 60.0}, {"f1": 59.2}])
    monkeypatch.setattr(export, "measure", lambda *args, **kwargs: {**next(scores), "sentences": 4, "sentences_per_second": 1.0})
    saved_report = json.loads((copy / "onnx" / "export.json").read_text())  # the copy is exported already
    monkeypatch.setattr("shapca_serving.onnx_export.export_onnx", lambda *args, **kwargs: saved_report)
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(copy), str(copy), "--quantize", "int8", "--int8-scheme", "dynamic", "--validation", str(data),
                     "--split", "test"])
    assert exit_info.value.code == 2
    saved = json.loads((copy / "onnx" / "export.json").read_text())
    assert saved["quality"]["int8_f1_change"] == -0.8 and saved["quality"]["within_tolerance"] is False
    assert "int8 loses 0.80 F1 points" in caplog.text
    card = (copy / "README.md").read_text()
    assert "**outside** the tolerance of 0.5 points. The int8 graph is not published." in card
    # the failed int8 graph is gone from onnx/ (never published); its figures stay
    assert not (copy / "onnx" / "model_int8.onnx").exists() and "int8" not in saved["files"]
    assert saved["int8"]["removed"] is True and "quantized=True" not in card
    with pytest.raises(OSError, match="has no onnx/model_int8.onnx"):
        ShapCAOnnxPredictor.from_pretrained(copy, quantized=True)
    files = push_to_hub.main([str(copy), "--repo-id", "someone/x", "--dry-run", str(tmp_path / "staged")])
    assert "onnx/model.onnx" in files and "onnx/model_int8.onnx" not in files


# ---------------------------------------------------------------- folders you can trust (issue 34)
@pytest.mark.parametrize("extra, message", [
    (["--validation", "missing/data/folder"], r"--validation missing/data/folder: no such file or folder"),
    (["--validation", "mnre"], r"--validation mnre is a 'mre' corpus; the model is a 'ner' model"),
    (["--atol", "0"], None),
    (["--f1-tolerance", "-1"], None),
    (["--int8-scheme", "dynamic"], None),  # an option of --quantize int8
    (["--quantize", "int8", "--calibration-sentences", "0"], None),
    (["--quantize", "int8", "--int8-scheme", "static-minmax", "--calibration", "missing/data/folder"],
     r"--calibration missing/data/folder: no such"),
])
def test_export_checks_its_arguments_before_writing_anything(trained_model_dir, tmp_path, extra, message):
    out = tmp_path / "out"
    if message is None:  # argparse's usage error
        with pytest.raises(SystemExit) as exit_info:
            export.main([str(trained_model_dir), str(out), *extra])
        assert exit_info.value.code == 2
    else:
        with pytest.raises(ValueError, match=message):
            export.main([str(trained_model_dir), str(out), *extra])
    assert not out.exists()


def test_an_onnx_file_in_the_output_folder_is_refused_before_anything_is_written(trained_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "onnx").write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"out/onnx is not a folder: the export writes its graphs there"):
        export.main([str(trained_model_dir), str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["onnx"]  # no config, processor, tokenizer or code written


def test_an_invalid_export_json_is_named(run, tmp_path):
    import shutil

    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor

    copy = tmp_path / "copy"
    shutil.copytree(run[0], copy)
    (copy / "onnx" / "export.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"copy/onnx/export.json is not valid JSON \(.*\): export the model again"):
        ShapCAOnnxPredictor.from_pretrained(copy)


def test_export_refuses_another_models_folder(run, trained_model_dir, tmp_path):
    folder, _, _ = run
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-run"
    shutil.copytree(trained_model_dir, other)
    weights = load_file(other / "model.safetensors")  # another model: other weights
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}, other / "model.safetensors")
    config = (other / "config.json").read_bytes()
    with pytest.raises(ValueError, match=f"{other} holds another model \\(model.safetensors\\)"):
        export.main([str(folder), str(other), "--quantize", "int8"])
    assert (other / "config.json").read_bytes() == config and not (other / "onnx").exists()
    shutil.copyfile(folder / "model.safetensors", other / "model.safetensors")  # a copy of the same model: allowed
    from shapca_serving.onnx_export import check_output_folder

    check_output_folder(other, str(folder))


def test_publishing_never_follows_links_nor_stages_files_that_are_not_the_models(run, tmp_path):
    folder, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    (copy / "onnx" / "notes.txt").symlink_to(secret)  # not listed in export.json: not staged
    (copy / "onnx" / "scratch.bin").write_bytes(b"x")
    files = push_to_hub.main([str(copy), "--repo-id", "user/x", "--dry-run", str(tmp_path / "staged")])
    assert sorted(f for f in files if f.startswith("onnx/")) == ["onnx/export.json", "onnx/model.onnx",
                                                                  "onnx/model_int8.onnx", "onnx/vision.onnx"]
    assert "not for the Hub" not in "".join(p.read_text(errors="ignore") for p in (tmp_path / "staged").rglob("*")
                                            if p.is_file())
    (copy / "onnx" / "model_int8.onnx").unlink()
    (copy / "onnx" / "model_int8.onnx").symlink_to(secret)  # listed, but a link
    with pytest.raises(SystemExit, match=f"error: {copy / 'onnx' / 'model_int8.onnx'} is a symbolic link"):
        push_to_hub.main([str(copy), "--repo-id", "user/x", "--dry-run", str(tmp_path / "staged2")])
    assert not (tmp_path / "staged2").exists()


def test_a_stale_onnx_folder_is_not_published(run, tmp_path):
    """onnx/ of an earlier training of the folder (other weights) or of another task."""
    from safetensors.torch import load_file, save_file

    folder, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    weights = load_file(copy / "model.safetensors")
    name = sorted(k for k in weights if k.endswith(".bias"))[-1]
    weights[name] = weights[name] + 0.5  # the folder trained again after the export
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit, match=r"onnx was exported from another model than the one in this folder .* "
                                         rf"Export again \(shapca-export {copy} {copy}\) or pass --no-onnx"):
        push_to_hub.main([str(copy), "--repo-id", "user/x", "--dry-run", str(tmp_path / "staged")])
    files = push_to_hub.main([str(copy), "--repo-id", "user/x", "--no-onnx", "--dry-run", str(tmp_path / "bare")])
    assert not any(f.startswith("onnx/") for f in files)


def test_a_nested_auto_map_is_scrubbed(run, tmp_path):
    folder, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    processor = json.loads((copy / "processor_config.json").read_text())
    processor["image_processor"]["auto_map"] = {"AutoImageProcessor": "ghost_module.GhostProcessor"}
    (copy / "processor_config.json").write_text(json.dumps(processor))
    push_to_hub.main([str(copy), "--repo-id", "user/x", "--dry-run", str(tmp_path / "staged")])
    staged = (tmp_path / "staged" / "processor_config.json").read_text()
    assert "ghost_module" not in staged
    assert json.loads(staged)["image_processor"]["auto_map"] == {"AutoProcessor": "processing_shapca.ShapCAProcessor"}


def test_console_scripts_print_one_line_for_input_errors(run, tmp_path, monkeypatch, capsys):
    from shapca_training import cli

    folder, _, _ = run
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    argv = ["shapca-predict", str(folder), "--input", str(bad), "--output", str(tmp_path / "out.jsonl")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.predict()
    assert exit_info.value.code == (f"shapca-predict: error: {bad}:2: not JSON (Expecting value) (rerun with --debug "
                                    "for the traceback)")
    monkeypatch.setattr("sys.argv", argv + ["--debug"])
    with pytest.raises(ValueError, match=f"{bad}:2: not JSON"):
        cli.predict()
    monkeypatch.setattr("sys.argv", ["shapca-export", str(folder), str(tmp_path / "x"), "--validation", "mnre"])
    with pytest.raises(SystemExit) as exit_info:
        cli.export()
    assert exit_info.value.code.startswith("shapca-export: error: --validation mnre is a 'mre' corpus")
