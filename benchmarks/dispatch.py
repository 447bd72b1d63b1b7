"""Counting what a piece of PyTorch code asks the device to do, on any device.

`DispatchCounter` sees every ATen operator that runs (autograd's backward included) and
sorts it into:
  - kernels: operators that launch device work (on a GPU, one or more kernel launches each);
    views and other metadata-only operators are left out. On a GPU a small model head is
    bound by launch overhead (a few microseconds per kernel), so this count is the CPU-side
    proxy for that cost;
  - host syncs: operators whose result the host must wait for (`.item()`, `bool(tensor)`,
    `nonzero`, boolean-mask indexing, ...). Each one stalls the CPU until the GPU has
    caught up, so none may appear in a forward or backward pass.

    with DispatchCounter() as counter:
        model(**batch).loss.backward()
    counter.kernels, counter.syncs, counter.sync_ops
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators whose output (value or shape) depends on device data: the host waits for them.
SYNC_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(t), int(t), float(t), Python control flow
    aten.nonzero.default,
    aten.masked_select.default,
    aten.index.Tensor,  # only with a boolean index; checked below
    aten.unique_consecutive.default,
    aten._unique2.default,
    aten.repeat_interleave.Tensor,
    aten.equal.default,
    aten.is_nonzero.default,
}

# Operators that launch no device work: views, metadata, allocation.
_FREE_OPS = {
    aten.detach.default,
    aten.alias.default,
    aten.lift_fresh.default,
    aten.empty.memory_format,
    aten.empty_like.default,
    aten.new_empty.default,
    aten.empty_strided.default,
    aten.new_empty_strided.default,
    aten._reshape_alias.default,
    aten.set_.source_Storage_storage_offset,
}


def _is_boolean_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class DispatchCounter(TorchDispatchMode):
    """Counts kernel-launching operators and host syncs run inside the `with` block."""

    def __init__(self):
        super().__init__()
        self.kernel_ops: Counter[str] = Counter()
        self.sync_ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS and (func is not aten.index.Tensor or _is_boolean_index(args)):
            self.sync_ops[str(func)] += 1
        if not (func.is_view or func in _FREE_OPS):
            self.kernel_ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def kernels(self) -> int:
        return sum(self.kernel_ops.values())

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())


def count_dispatch(fn) -> DispatchCounter:
    """Run `fn()` once under a `DispatchCounter` and return the counter."""
    with DispatchCounter() as counter:
        fn()
    return counter


__all__ = ["DispatchCounter", "SYNC_OPS", "count_dispatch"]
