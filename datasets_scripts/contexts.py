"""Image contexts: JSONL records `{"image_id", "context", "generator", "prompt"}` joined by image id."""

from __future__ import annotations

import json
from pathlib import Path

from .readers import DataFormatError


def load_contexts(path: str | Path | None) -> dict[str, str]:
    """Read a contexts JSONL file into `{image_id: context}`. Malformed lines, records without
    `image_id`/`context`, and an image id given twice with different contexts are errors."""
    if path is None:
        return {}
    path = Path(path)
    contexts: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, line_no, f"not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("image_id"), str) or not isinstance(record.get("context"), str):
                raise DataFormatError(path, line_no, "expected an object with string 'image_id' and 'context'")
            image_id = record["image_id"]
            if image_id in contexts and contexts[image_id] != record["context"]:
                raise DataFormatError(path, line_no, f"image {image_id!r} has two different contexts")
            contexts[image_id] = record["context"]
    return contexts
