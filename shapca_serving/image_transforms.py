"""Image preprocessing without torch or transformers for the ONNX predictor: the steps of
transformers' PIL image processors (resize with PIL, center crop, rescale, normalize,
channels first), read from the `image_processor` entry a Shap-CA processor saves. The image
processors of the backbones this project trains with are supported (ConvNeXt's for ResNet,
CLIP's, ViT's); `ImageTransform.check` names any other one, so an export refuses it before any
work instead of serving different pixels. Tests compare the output with transformers'."""

from __future__ import annotations

from typing import Mapping

import numpy as np

SUPPORTED = ("ConvNextImageProcessor", "CLIPImageProcessor", "ViTImageProcessor")


def _base_type(name: str) -> str:
    for suffix in ("Pil", "Fast"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _resize_shortest_edge(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side `size` and the aspect ratio kept (transformers'
    `get_resize_output_image_size(default_to_square=False)`)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


class ImageTransform:
    """RGB PIL images -> `pixel_values` `(batch, 3, H, W)` float32."""

    def __init__(self, config: Mapping):
        self.config = dict(config)
        self.kind = _base_type(str(self.config.get("image_processor_type", "")))
        self.check(self.config)

    @staticmethod
    def check(config: Mapping) -> None:
        kind = _base_type(str(config.get("image_processor_type", "")))
        if kind not in SUPPORTED:
            raise ValueError(f"image processor {config.get('image_processor_type')!r} has no torch-free port here "
                             f"(supported: {', '.join(SUPPORTED)})")
        if config.get("do_pad"):
            raise ValueError(f"image processor {kind}: padding (do_pad) has no torch-free port here")

    def _resize(self, image, size: Mapping, resample: int):
        height, width = image.height, image.width
        if self.kind == "ConvNextImageProcessor":  # crop_pct: resize larger, then crop the center
            edge = size["shortest_edge"]
            if edge < 384:
                target = _resize_shortest_edge(height, width, int(edge / self.config.get("crop_pct", 224 / 256)))
                resized = image.resize((target[1], target[0]), resample)
                return _center_crop(np.asarray(resized), edge, edge)
            return np.asarray(image.resize((edge, edge), resample))
        if "shortest_edge" in size:
            target = _resize_shortest_edge(height, width, size["shortest_edge"])
        else:
            target = (size["height"], size["width"])
        return np.asarray(image.resize((target[1], target[0]), resample))

    def __call__(self, images) -> np.ndarray:
        c = self.config
        resample = int(c.get("resample", 2))
        out = []
        for image in images:
            array = self._resize(image, c["size"], resample) if c.get("do_resize", True) else np.asarray(image)
            if c.get("do_center_crop"):
                crop = c.get("crop_size") or {}
                array = _center_crop(array, crop["height"], crop["width"])
            array = array.astype(np.float64)
            if c.get("do_rescale", True):
                array = (array * c.get("rescale_factor", 1 / 255)).astype(np.float32)
            if c.get("do_normalize", True):
                mean = np.asarray(c.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
                std = np.asarray(c.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)
                array = (array.astype(np.float32) - mean) / std
            out.append(np.ascontiguousarray(array.astype(np.float32).transpose(2, 0, 1)))
        return np.stack(out)


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center crop of an `(H, W, C)` array (zero padding where the image is smaller)."""
    h, w = array.shape[:2]
    if height > h or width > w:
        padded = np.zeros((max(h, height), max(w, width), array.shape[2]), dtype=array.dtype)
        top, left = (padded.shape[0] - h) // 2, (padded.shape[1] - w) // 2
        padded[top:top + h, left:left + w] = array
        array, h, w = padded, padded.shape[0], padded.shape[1]
    top, left = (h - height) // 2, (w - width) // 2
    return array[top:top + height, left:left + width]


__all__ = ["SUPPORTED", "ImageTransform"]
