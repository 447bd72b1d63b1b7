"""The int8 schemes of the exported main graph (`onnx/model_int8.onnx`), one function each way:

* `dynamic`: ONNX Runtime's `quantize_dynamic` with its default op types: MatMul / Gemm weights
  int8 per output channel, activations quantized per call from their own range, the embedding
  tables (Gather) int8 (no data needed).
* `static-minmax`, `static-percentile`: `quantize_static` in the QDQ format: the same
  per-channel int8 weights, activations uint8 with ranges fixed beforehand by running the fp32
  graph on calibration sentences (each activation's observed min and max, or its 99.999th
  percentile); no range is computed at serving time. Only MatMul / Gemm are quantized (the
  embedding tables stay fp32, so the file is larger than the dynamic one).

    from shapca_serving.quantization import quantize
    info = quantize("onnx/model.onnx", "onnx/model_int8.onnx", "static-minmax", feeds=feeds)

`feeds` are the graph's input dicts (NumPy), as `onnx_export` builds them from the model's
processor; `info` is what export.json records under `int8`. Which scheme a model ships is
decided by `shapca-export` (measured on `--validation` when given: docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SCHEMES = ("dynamic", "static-minmax", "static-percentile")
QUANTIZED_OPS = ("MatMul", "Gemm")
PERCENTILE = 99.999  # of |activation| for the static-percentile scheme (ONNX Runtime's default)


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"int8 scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")


def needs_calibration(scheme: str) -> bool:
    check_scheme(scheme)
    return scheme.startswith("static")


def quantize(model_path: str | Path, output_path: str | Path, scheme: str, feeds: Sequence[dict] | None = None) -> dict:
    """Write the int8 graph of `model_path` to `output_path` with `scheme`; returns its
    description. The static schemes need `feeds` (a non-empty list of input dicts)."""
    check_scheme(scheme)
    from onnxruntime.quantization import QuantType

    description = {"scheme": scheme, "weights": "int8, per output channel", "quantized_ops": list(QUANTIZED_OPS)}
    if scheme == "dynamic":
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(str(model_path), str(output_path), weight_type=QuantType.QInt8, per_channel=True)
        return {**description, "quantized_ops": [*QUANTIZED_OPS, "Gather"],  # ONNX Runtime's default op types
                "activations": "uint8, dynamic (per call)", "embeddings": "int8 (the Gather tables)"}
    method = scheme.split("-", 1)[1]
    feeds = list(feeds or ())
    if not feeds:
        raise ValueError(f"int8 scheme {scheme!r} needs calibration inputs (feeds): none were given")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if method == "percentile":
        extra.update(CalibPercentile=PERCENTILE)
    quantize_static(str(model_path), str(output_path), _reader(feeds, _input_names(model_path)),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile,
                    extra_options=extra)
    return {**description, "embeddings": "fp32",
            "activations": f"uint8, static ({method} ranges over the calibration batches)",
            "format": "QDQ", "calibration_batches": len(feeds)}


def _input_names(model_path) -> set[str]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {i.name for i in model.graph.input}


def _reader(feeds: Iterable[dict], names: set[str]):
    """ONNX Runtime's `CalibrationDataReader` over a list of input dicts (the graph's inputs only)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = [{k: np.asarray(v) for k, v in feed.items() if k in names} for feed in feeds]
            self.rewind()

        def get_next(self):
            return next(self._next, None)

        def rewind(self) -> None:
            self._next = iter(self.feeds)

    return Reader()


__all__ = ["SCHEMES", "check_scheme", "needs_calibration", "quantize"]
