"""The one corpus runner under `shapca-predict` and `shapca-contexts`: work split over N
processes, written whole or not at all, resumed by content, one lock per output, one output
written by the main process in input order.

    with world() as place, OutputLock(output, place):   # torchrun / accelerate launch, or 1 process;
        store = PartStore(folder)                        # one run per output (the main process holds it)
        stats = run_parts(keys, store, work, place, chunk_size)   # complete parts: {key: value}
        ...                                              # the main process assembles the one output

Keys are content, never names or times (`datasets` keys its cache the same way): a tool keys
each item by what decides its value (predictions: the row's position in an input keyed by its
bytes or `datasets` fingerprint, with the model's weights and every option in the store's
folder name; contexts: the image's bytes and the generator's settings), so a rerun reuses
exactly the values it would compute again, with any number of processes, and nothing else.

A part is a JSON-lines file of `{"key", "value"}` lines, written through `modeling_shapca.files.write_atomic`
(complete or absent); every process reads every part, so N processes resume the parts of M. The
items still to do are cut into chunks of at most `chunk_size` and of at most an N-th of them (so
every process gets work when there are fewer than N chunks' worth), chunk k to process k % N.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable

from modeling_shapca.files import write_atomic

from .locks import WriterLock

HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a file


# ---------------------------------------------------------------------------------- processes
@dataclass
class World:
    rank: int = 0
    size: int = 1
    owns_group: bool = False  # this process made the process group (and tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value):
        """`value` of every process, in rank order (also the barrier the main process waits at)."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        """Destroy the process group this process made. A gloo group left to the interpreter's
        exit can abort the process ("terminate called without an active exception", SIGABRT,
        pytorch/pytorch#190489): its worker threads outlive the interpreter they call into."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def world() -> World:
    """This process's place among the launcher's (`torchrun`, `accelerate launch`: `RANK`,
    `WORLD_SIZE`); a process group over gloo when there are several. Use it as a context
    (`with world() as place:`) so that a group it made is destroyed when the run ends."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    owns = False
    if size > 1:
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))  # a slow part is not an error
            owns = True
    return World(rank, size, owns)


# ---------------------------------------------------------------------------------- content keys
def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_of(value) -> str:
    """sha256 (hex) of a JSON-able value, keys sorted."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def changed_parts(before: dict, now: dict) -> list[str]:
    """The names of a key's parts that differ between two runs (for the one-line message)."""
    return sorted(name for name in set(before) | set(now) if before.get(name) != now.get(name))


# ---------------------------------------------------------------------------------- the store
class PartStore:
    """A folder of complete parts (`part-<digest>.jsonl`, lines `{"key", "value"}`): what is
    done, whichever process and run did it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def done(self, wanted: Iterable[Hashable] | None = None) -> dict:
        """`{key: value}` of every complete part (of the `wanted` keys only, if given). A key is
        a JSON value: lists come back as tuples, so keys can be hashed."""
        wanted = None if wanted is None else set(wanted)
        found = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("part-*.jsonl")):
            with path.open("r", encoding="utf-8") as handle:
                for line in handle:
                    entry = json.loads(line)
                    key = _hashable(entry["key"])
                    if wanted is None or key in wanted:
                        found.setdefault(key, entry["value"])
        return found

    def write(self, entries: list[tuple]) -> Path:
        """One part holding `(key, value)` entries, complete or absent."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{digest_of([key for key, _ in entries])[:24]}.jsonl"
        text = "".join(json.dumps({"key": key, "value": value}, ensure_ascii=False, allow_nan=False) + "\n"
                       for key, value in entries)
        write_atomic(self.folder / name, text)
        return self.folder / name


def _hashable(key):
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


# ---------------------------------------------------------------------------------- the work
def plan_chunks(todo: list, processes: int, chunk_size: int) -> list[list]:
    """The items still to do in chunks of at most `chunk_size`, and of at most ceil(todo / N), so
    that N processes all get work when there are fewer than N full chunks."""
    if not todo:
        return []
    size = max(1, min(chunk_size, math.ceil(len(todo) / processes)))
    return [todo[start:start + size] for start in range(0, len(todo), size)]


def run_parts(keys: list, store: PartStore, work: Callable[[list], list], place: World, chunk_size: int,
              bar=None) -> dict:
    """This process's share of the keys `store` does not hold yet: `work(chunk of keys)` gives
    one value per key, written as one part per chunk. Returns what this process did now:
    `{"items", "seconds"}` (the caller gathers them)."""
    import time

    done = store.done(keys)
    place.gather(None)  # every process plans from the same parts, before any process writes one
    todo = [key for key in keys if key not in done]
    if bar is not None:
        bar.update(len(keys) - len(todo))
    stats = {"items": 0, "seconds": 0.0}
    for chunk in plan_chunks(todo, place.size, chunk_size)[place.rank::place.size]:
        began = time.perf_counter()
        values = work(chunk)
        if len(values) != len(chunk):
            raise RuntimeError(f"the work gave {len(values)} values for {len(chunk)} items")
        store.write(list(zip(chunk, values)))
        stats["items"] += len(chunk)
        stats["seconds"] += time.perf_counter() - began
        if bar is not None:
            bar.update(len(chunk))
    return stats


# ---------------------------------------------------------------------------------- one run per output
class OutputLock:
    """One run writes an output at a time: the main process holds `.<name>.lock` beside it (a
    plain file, never followed through a link); the others wait until it does."""

    def __init__(self, output: str | Path, place: World, what: str = "--output"):
        self.output, self.place, self.what = Path(output), place, what
        self._lock = None

    def __enter__(self) -> "OutputLock":
        if self.place.is_main:
            path = self.output.with_name(f".{self.output.name}.lock")
            self._lock = WriterLock(path, f"another run is writing {self.output} right now; wait for it or "
                                          f"choose another {self.what}").acquire()
        self.place.gather(None)  # nobody writes before the main process holds the lock
        return self

    def __exit__(self, *exc) -> bool:
        if self._lock is not None:
            self._lock.release()
        return False


__all__ = ["OutputLock", "PartStore", "World", "changed_parts", "digest_of", "file_digest", "plan_chunks",
           "run_parts", "world"]
