"""The context cache: an image's context, keyed by content, written once and read by every tool.

A context is keyed by the sha256 of the image's bytes (the image file, or the body of its URL)
and the generator's settings (model, prompt, max new tokens, temperature; `ContextSettings`).
So the same picture under another file name or tweet id (a retweet) is described once, a
replaced image is described again, and another prompt is another key. The sampling seed is not
part of the key: a cached context is one sample of that generator with those settings (to draw
new ones, turn the cache off). An image given as a PIL image in memory has no file bytes: it is
keyed by its pixels instead (`image_digest`), which a file's key never equals.

Where: `$SHAPCA_CONTEXT_CACHE` (a folder), by default `$XDG_CACHE_HOME/shapca/contexts`
(`~/.cache/shapca/contexts`); `SHAPCA_CONTEXT_CACHE=off` (or 0, false, no, none) turns it off,
as `--no-context-cache` does on the command-line tools. Bounded: `$SHAPCA_CONTEXT_CACHE_MAX_MB` (default 1024 MB, about
half a million contexts of 256 tokens). A writing process measures the folder at its first
write and again after each 1 % of the bound it has written; over the bound, it removes the least
recently used entries (a hit refreshes an entry's time) until the folder is under 90 % of it. So
the folder exceeds the bound by at most 1 % per writing process, and a write costs no scan of a
large cache.

One file per entry (`<key[:2]>/<key>.json`: the key, the image's sha256, the settings, the
context and the context's sha256), written through `files.write_atomic`, so any number of
processes write and read at once without a lock, and an entry is whole or absent. An entry that
cannot be read, is not the key's or whose checksum fails is refused: a warning names the file, it
is removed and the context is generated again.

Used where contexts are made or needed: `shapca-contexts` (as the corpus runner's per-image
store), the PyTorch runner's context step (`model.predict`, the pipeline, batch prediction,
spaCy) and the ONNX predictor, which reads it and never generates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .context_generation import ContextSettings
from .files import write_atomic

CACHE_ENV, SIZE_ENV = "SHAPCA_CONTEXT_CACHE", "SHAPCA_CONTEXT_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024
OFF_VALUES = ("off", "0", "false", "no", "none")
DIGEST_INFO = "shapca_sha256"  # where `load_image` keeps the sha256 of the bytes an image was read from
TRIM_TO = 0.9  # a trim leaves the cache at this share of its bound
MEASURE_EVERY = 0.01  # a writer measures the folder again after writing this share of the bound

logger = logging.getLogger("shapca.context_cache")


def image_digest(image) -> str:
    """The content key of a PIL image: the sha256 of the bytes it was read from (`load_image`
    records it), else of its mode, size and pixels."""
    known = image.info.get(DIGEST_INFO)
    if known:
        return known
    digest = hashlib.sha256(f"pixels:{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _settings_key(settings: ContextSettings) -> dict:
    return {"generator": settings.model, "prompt": settings.prompt, "max_new_tokens": settings.max_new_tokens,
            "temperature": float(settings.temperature)}


class ContextCache:
    """`get` / `put` contexts by (image sha256, `ContextSettings`) in `folder`, at most
    `max_bytes` on disk (see the module docstring)."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_MAX_MB * 2 ** 20):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"the context cache's size bound must be a positive number of bytes, got {max_bytes!r}")
        self.folder, self.max_bytes = Path(folder).expanduser(), max_bytes
        self._unmeasured = None  # bytes this process wrote since it last measured the folder (None: not yet)

    @classmethod
    def from_env(cls) -> "ContextCache | None":
        """The cache the environment asks for (`SHAPCA_CONTEXT_CACHE`, `SHAPCA_CONTEXT_CACHE_MAX_MB`),
        or None when it is off."""
        where = os.environ.get(CACHE_ENV, "").strip()
        if where.lower() in OFF_VALUES:
            return None
        if not where:
            where = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shapca" / "contexts"
        size = os.environ.get(SIZE_ENV, str(DEFAULT_MAX_MB)).strip()
        try:
            megabytes = float(size)
        except ValueError:
            megabytes = float("nan")
        if not megabytes > 0 or megabytes == float("inf"):
            raise ValueError(f"{SIZE_ENV} must be a positive number of megabytes, got {size!r}")
        return cls(where, max(1, int(megabytes * 2 ** 20)))

    @classmethod
    def resolve(cls, choice) -> "ContextCache | None":
        """A runner's `context_cache` argument: True (the environment's), False / None (off), a
        folder or a `ContextCache`."""
        if choice is True:
            return cls.from_env()
        if choice is False or choice is None:
            return None
        if isinstance(choice, ContextCache):
            return choice
        if isinstance(choice, (str, os.PathLike)):
            return cls(choice)
        raise TypeError(f"context_cache must be True, False, a folder or a ContextCache, got {type(choice).__name__}")

    # ------------------------------------------------------------------ entries
    def key(self, image_sha256: str, settings: ContextSettings) -> str:
        text = json.dumps([image_sha256, _settings_key(settings)], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, image_sha256: str, settings: ContextSettings) -> str | None:
        """The cached context, or None (a miss, or a corrupt entry, which is then removed)."""
        key = self.key(image_sha256, settings)
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            return self._refuse(path, f"cannot be read ({type(error).__name__})")
        try:
            entry = json.loads(text)
            context = entry["context"]
            valid = (entry["key"] == key and isinstance(context, str)
                     and entry["checksum"] == hashlib.sha256(context.encode("utf-8")).hexdigest())
        except (ValueError, KeyError, TypeError):
            return self._refuse(path, "is not a cache entry")
        if not valid:
            return self._refuse(path, "does not match its key or checksum")
        try:
            os.utime(path)  # recently used: the last to be trimmed
        except OSError:
            pass
        return context

    def get_many(self, image_sha256s, settings: ContextSettings) -> dict[str, str]:
        """`{sha256: context}` of the images the cache holds."""
        found = {}
        for digest in dict.fromkeys(image_sha256s):
            context = self.get(digest, settings)
            if context is not None:
                found[digest] = context
        return found

    def put_many(self, entries, settings: ContextSettings) -> None:
        """Store `(image sha256, context)` pairs (each file whole), then keep the bound."""
        written = 0
        for digest, context in entries:
            key = self.key(digest, settings)
            path = self.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = {"key": key, "image_sha256": digest, "settings": _settings_key(settings), "context": context,
                     "checksum": hashlib.sha256(context.encode("utf-8")).hexdigest()}
            text = json.dumps(entry, ensure_ascii=False)
            write_atomic(path, text)
            written += len(text.encode("utf-8"))
        if self._unmeasured is None or self._unmeasured + written >= self.max_bytes * MEASURE_EVERY:
            self.trim()  # (sets _unmeasured to 0)
        else:
            self._unmeasured += written

    def put(self, image_sha256: str, context: str, settings: ContextSettings) -> None:
        self.put_many([(image_sha256, context)], settings)

    # ------------------------------------------------------------------ the bound
    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        if not self.folder.is_dir():
            return found
        for shard in os.scandir(self.folder):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for item in os.scandir(shard.path):
                if item.name.endswith(".json") and item.is_file(follow_symlinks=False):
                    try:
                        stat = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed by another process meanwhile
                    found.append((stat.st_mtime, stat.st_size, Path(item.path)))
        return found

    def size(self) -> int:
        """Bytes of the entries on disk."""
        return sum(size for _, size, _ in self._entries())

    def trim(self) -> int:
        """Measure the folder and, over the bound, remove the least recently used entries until
        under 90 % of it; returns how many were removed."""
        self._unmeasured = 0
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes * TRIM_TO:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    def _refuse(self, path: Path, reason: str) -> None:
        logger.warning("context cache: %s %s; it is removed and the context is generated again", path, reason)
        path.unlink(missing_ok=True)
        return None


def fill_contexts(records: list[dict], settings: ContextSettings, cache: ContextCache | None,
                  generate=None) -> list[dict]:
    """Give the records with an image and no context a context: the cached one, else (with
    `generate`, a function from PIL images to contexts) a new one, written once per distinct
    image and stored in the cache. Returns the records still without a context (with no
    `generate`: those the cache does not hold)."""
    need = [r for r in records if r["image"] is not None and not r["context"]]
    if not need or (cache is None and generate is None):
        return need
    digests = [image_digest(r["image"]) for r in need]
    found = cache.get_many(digests, settings) if cache is not None else {}
    todo = {}
    for record, digest in zip(need, digests):
        if digest not in found:
            todo.setdefault(digest, record["image"])  # the same picture twice: described once
    if todo and generate is not None:
        new = dict(zip(todo, generate(list(todo.values()))))
        if cache is not None:
            cache.put_many(new.items(), settings)
        found.update(new)
    missing = []
    for record, digest in zip(need, digests):
        if digest in found:
            record["context"] = found[digest]
        else:
            missing.append(record)
    return missing


__all__ = ["CACHE_ENV", "DEFAULT_MAX_MB", "SIZE_ENV", "ContextCache", "fill_contexts", "image_digest"]
