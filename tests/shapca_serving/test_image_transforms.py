"""The torch-free image preprocessing against transformers' image processors."""

import numpy as np
import pytest
import transformers

from shapca_serving.image_transforms import ImageTransform

from tests.helpers import random_image

SIZES = [(40, 56), (77, 31), (32, 32), (300, 200)]


@pytest.mark.parametrize("processor", [
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32}),  # crop_pct: resize, then crop
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 400}),  # >= 384: warp, no crop
    transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 28}),
    transformers.ViTImageProcessorPil(size={"height": 24, "width": 20}, image_mean=[0.1, 0.2, 0.3]),
], ids=["convnext", "convnext-large", "clip", "vit"])
def test_pixels_equal_transformers(processor):
    images = [random_image(i, size) for i, size in enumerate(SIZES)]
    expected = processor(images, return_tensors="np")["pixel_values"]
    got = ImageTransform(processor.to_dict())(images)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6


def test_an_image_processor_without_a_port_is_named():
    with pytest.raises(ValueError, match="'SiglipImageProcessor' has no torch-free port"):
        ImageTransform({"image_processor_type": "SiglipImageProcessor"})
