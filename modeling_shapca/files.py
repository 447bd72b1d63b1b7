"""Files written whole or not at all: `write_atomic` writes through a partial file beside the
target, flushed to disk and renamed into place, so a reader (another process included) sees the
old file or the new one, never a part. Used by the context cache (inside this folder, so a
downloaded model has it) and by the corpus runner, training and the export."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
    """`text` into `path` through `.<name>.partial-<pid>-<random>` beside it, flushed and renamed
    into place; the partial file is removed if anything fails (processes and threads writing the
    same path at once each rename a whole file: the last one wins)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["write_atomic"]
