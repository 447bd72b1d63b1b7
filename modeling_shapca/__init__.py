"""Shap-CA: Shapley value-based contrastive alignment for multimodal information extraction.

The modules of this package travel to the Hugging Face Hub as remote code; they import each
other relatively and register nothing on import beyond their auto classes.
"""

from .alignment import cyclic_shapley, exact_shapley, info_nce_loss, shapley_contrastive_loss
from .configuration_shapca import ShapCAConfig
from .modeling_shapca import (
    ShapCAForTokenClassification,
    ShapCAForWordPairExtraction,
    ShapCAModel,
    ShapCAPreTrainedModel,
)
from .processing_shapca import ShapCAProcessor

__version__ = "0.1.0"

__all__ = [
    "ShapCAConfig",
    "ShapCAForTokenClassification",
    "ShapCAForWordPairExtraction",
    "ShapCAModel",
    "ShapCAPreTrainedModel",
    "ShapCAProcessor",
    "cyclic_shapley",
    "exact_shapley",
    "info_nce_loss",
    "shapley_contrastive_loss",
]
