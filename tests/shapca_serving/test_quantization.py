"""The int8 schemes (`shapca_serving/quantization.py`) and how `export_onnx` takes them; the
schemes' graphs, their measurement and the choice among them are tested through
`shapca-export` (tests/test_export.py)."""

import pytest

from shapca_serving.onnx_export import candidate_file, export_onnx, int8_schemes
from shapca_serving.quantization import SCHEMES, needs_calibration, quantize


def test_the_schemes_export_onnx_takes():
    assert int8_schemes(False) == () and int8_schemes(True) == ("dynamic",)
    assert int8_schemes("static-minmax") == ("static-minmax",) and int8_schemes(SCHEMES) == SCHEMES
    assert [needs_calibration(s) for s in SCHEMES] == [False, True, True]
    assert [candidate_file(s, k == 0) for k, s in enumerate(SCHEMES)] == [
        "model_int8.onnx", "model_int8.static-minmax.onnx", "model_int8.static-percentile.onnx"]
    with pytest.raises(ValueError, match=r"^int8 scheme must be one of dynamic, static-minmax, static-percentile, "
                                         r"not 'int4'$"):
        int8_schemes("int4")
    with pytest.raises(ValueError, match=r"give each int8 scheme once"):
        int8_schemes(("dynamic", "dynamic"))


def test_a_static_scheme_without_calibration_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"int8 schemes static-percentile need calibration sentences"):
        export_onnx("never/loaded", tmp_path / "out", quantize=("dynamic", "static-percentile"))
    with pytest.raises(ValueError, match=r"int8 scheme 'static-minmax' needs calibration inputs \(feeds\)"):
        quantize(tmp_path / "model.onnx", tmp_path / "int8.onnx", "static-minmax", feeds=[])
    assert list(tmp_path.iterdir()) == []


def test_calibration_batches_have_one_shape(processor):
    """The percentile calibrator stacks every batch's activations: all batches one shape, the
    last filled up with the first rows."""
    from shapca_serving.onnx_export import calibration_feeds
    from tests.helpers import tiny_model

    rows = [{"words": ["a"] * n, "context": "a picture" if n % 2 else ""} for n in (1, 5, 2, 7, 3)]
    feeds = calibration_feeds(tiny_model("ner").eval(), processor, rows, batch_size=2)
    assert len(feeds) == 3
    assert len({tuple((k, v.shape) for k, v in sorted(f.items())) for f in feeds}) == 1
    assert feeds[0]["word_mask"].shape == (2, 7)
    assert feeds[2]["word_mask"].sum(1).tolist() == [3, 1]  # row 5, then row 1 again
