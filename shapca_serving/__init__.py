"""Serving Shap-CA outside the Hub payload: the torch-free ONNX Runtime predictor (with its
tokenizer and image transforms), the ONNX export, the prediction CLI and the loading of a
trained folder. It imports `modeling_shapca`'s torch-free modules (the inference engine, the
records, the decoding), never the reverse; nothing here travels to the Hub as remote code.

Importing this package does not import torch: `ShapCAOnnxPredictor` is loaded on first use,
and the export (`shapca_serving.onnx_export`, which needs torch) only when imported by name.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"ShapCAOnnxPredictor": "onnx_predictor", "load_trained": "loading"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
