"""`shapca-export` on a model trained by train.py: the files, the F1 measured through the ONNX
predictor (equal to PyTorch's for fp32), the int8 tolerance report, the card and the upload."""

import json
import shutil

import numpy as np
import pytest
import torch

import push_to_hub
from shapca_training import export

from .conftest import raw_twitter

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
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
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
    predictor = ShapCAOnnxPredictor.from_pretrained(folder)
    feed = export.labelled_feed(predictor, list(rows), model.config)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items() if k not in ("labels", "image_regions")}
    with torch.no_grad():
        expected = model(**{k: v.bool() if k.endswith("mask") or k == "has_image" else v for k, v in inputs.items()})
    assert np.array_equal(predictor.predictions(feed)[0], expected.predictions.numpy())


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
        export.main([str(copy), str(copy), "--quantize", "int8", "--validation", str(data), "--split", "test"])
    assert exit_info.value.code == 2
    saved = json.loads((copy / "onnx" / "export.json").read_text())
    assert saved["quality"]["int8_f1_change"] == -0.8 and saved["quality"]["within_tolerance"] is False
    assert "int8 loses 0.80 F1 points" in caplog.text
    assert "**outside** the tolerance of 0.5 points" in (copy / "README.md").read_text()
