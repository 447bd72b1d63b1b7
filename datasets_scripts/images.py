"""Image lookup for the builders: missing, corrupt and out-of-folder images are counted and
listed, never fatal and never read.

An image id from a data file is a name inside the image folder the user gave: an absolute id,
or one whose resolved path leaves the folder (`../x.png`, a symlink out), is reported as
invalid and not opened. A found image is stored as its bytes under its file name only (what
`datasets` itself uploads to the Hub), so no local path reaches a Parquet file or a card.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePath

from PIL import Image, UnidentifiedImageError

from modeling_shapca.limits import check_image_size, to_rgb


class ImageResolver:
    """Finds `<image_dir>/<image_id><suffix>` and checks that it decodes.

    Returns `{"bytes", "path": <file name>}` for the `datasets.Image()` feature, or `None`;
    every miss is recorded with its reason so the build report can list it.
    """

    def __init__(self, image_dir: str | Path | None, suffix: str = ""):
        self.image_dir = Path(image_dir).resolve() if image_dir else None
        self.suffix = suffix
        self.found = 0
        self.missing: list[str] = []
        self.corrupt: list[str] = []
        self.invalid: list[str] = []

    def _inside(self, image_id: str) -> Path | None:
        name = image_id if image_id.endswith(self.suffix) else image_id + self.suffix
        pure = PurePath(name)
        if not name or pure.is_absolute() or os.path.isabs(name) or ".." in pure.parts or "\0" in name:
            return None
        path = (self.image_dir / name).resolve()
        return path if path.is_relative_to(self.image_dir) else None

    def resolve(self, image_id: str, split: str = "") -> dict | None:
        key = f"{split}:{image_id}"
        if self.image_dir is None:
            self.missing.append(key)
            return None
        path = self._inside(image_id)
        if path is None:
            self.invalid.append(key)
            return None
        if not path.is_file():
            self.missing.append(key)
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    check_image_size(*image.size)  # before decoding (limits.py)
                    to_rgb(image).load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as error:
            self.corrupt.append(f"{key} ({type(error).__name__})")
            return None
        self.found += 1
        return {"bytes": path.read_bytes(), "path": path.name}

    def report(self) -> dict:
        return {
            "found": self.found,
            "missing": len(self.missing),
            "corrupt": len(self.corrupt),
            "invalid": len(self.invalid),
            "missing_ids": self.missing[:50],
            "corrupt_ids": self.corrupt,
            "invalid_ids": self.invalid[:50],
        }
