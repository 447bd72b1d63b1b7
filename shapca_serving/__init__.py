"""Serving Shap-CA outside the Hub payload: the torch-free ONNX Runtime predictor (with its
tokenizer and image transforms), the ONNX export, the prediction CLI, the spaCy component and
the loading of a trained folder. It imports `modeling_shapca`'s torch-free modules, never the
reverse; nothing here travels to the Hub as remote code.

Names load on first use: importing the package imports nothing else (spaCy imports it through
the `spacy_factories` entry point whenever it loads a pipeline, so it must stay light).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"ShapCAOnnxPredictor": "onnx_predictor", "load_trained": "loading"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
