"""Shap-CA: Shapley value-based contrastive alignment for multimodal information extraction.

The modules of this package travel to the Hugging Face Hub as remote code; they import each
other relatively and register nothing on import beyond their auto classes. The package's own
names are loaded on first use (as transformers does), so importing the light modules
(`configuration_shapca`, `tasks`, `grids`, `windows`) does not import the model and its torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

_EXPORTS = {
    "cyclic_shapley": "alignment", "info_nce_loss": "alignment",
    "shapley_contrastive_loss": "alignment",
    "ShapCAConfig": "configuration_shapca",
    "ShapCAForTokenClassification": "modeling_shapca", "ShapCAForWordPairExtraction": "modeling_shapca",
    "ShapCAModel": "modeling_shapca", "ShapCAPreTrainedModel": "modeling_shapca",
    "ShapCAProcessor": "processing_shapca",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .alignment import cyclic_shapley, info_nce_loss, shapley_contrastive_loss  # noqa: F401
    from .configuration_shapca import ShapCAConfig  # noqa: F401
    from .modeling_shapca import (  # noqa: F401
        ShapCAForTokenClassification, ShapCAForWordPairExtraction, ShapCAModel, ShapCAPreTrainedModel,
    )
    from .processing_shapca import ShapCAProcessor  # noqa: F401


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
