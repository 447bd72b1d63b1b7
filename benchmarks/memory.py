"""Activation memory of a training step, measured on any device.

`saved_activation_bytes(fn, module)` runs `fn()` (a forward pass that builds an autograd
graph) and adds up the distinct storages that autograd saves for the backward pass, leaving
out `module`'s parameters. That is the activation memory a training step holds at its peak
(between forward and backward), independent of the allocator and of the device, so it can
be compared on CPU for the GPU's sake (e.g. the word-pair grid's n^2 features).
"""

from __future__ import annotations

import torch
from torch import nn


def saved_activation_bytes(fn, module: nn.Module | None = None) -> int:
    """Bytes of the distinct tensors saved for backward while `fn()` runs (parameters excluded)."""
    excluded = set()
    if module is not None:
        excluded = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded and tensor.device.type != "meta":
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


__all__ = ["saved_activation_bytes"]
