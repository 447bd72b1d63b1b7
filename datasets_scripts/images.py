"""Image lookup for the builders: missing and corrupt files are counted and listed, never fatal."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageResolver:
    """Finds `<image_dir>/<image_id><suffix>` and checks that it decodes.

    Returns the file path (the `datasets.Image()` feature stores its bytes) or `None`; every
    miss is recorded with its reason so the build report can list it.
    """

    def __init__(self, image_dir: str | Path | None, suffix: str = ""):
        self.image_dir = Path(image_dir) if image_dir else None
        self.suffix = suffix
        self.found = 0
        self.missing: list[str] = []
        self.corrupt: list[str] = []

    def resolve(self, image_id: str, split: str = "") -> str | None:
        if self.image_dir is None:
            self.missing.append(f"{split}:{image_id}")
            return None
        name = image_id if image_id.endswith(self.suffix) else image_id + self.suffix
        path = self.image_dir / name
        if not path.is_file():
            self.missing.append(f"{split}:{image_id}")
            return None
        try:
            with Image.open(path) as image:
                image.convert("RGB").load()
        except (UnidentifiedImageError, OSError, ValueError) as error:
            self.corrupt.append(f"{split}:{image_id} ({type(error).__name__})")
            return None
        self.found += 1
        return str(path)

    def report(self) -> dict:
        return {
            "image_dir": str(self.image_dir) if self.image_dir else None,
            "found": self.found,
            "missing": len(self.missing),
            "corrupt": len(self.corrupt),
            "missing_ids": self.missing[:50],
            "corrupt_ids": self.corrupt,
        }
