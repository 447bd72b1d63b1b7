"""Image contexts: JSONL records `{"image_id", "sha256", "context", "generator", "prompt", ...}` joined by image id."""

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


def load_context_settings(path: str | Path | None) -> dict | None:
    """How the contexts of a JSONL file were written (`ContextSettings` as a dict), read from
    its records; `None` without a file or when its records name no generator. Records written
    with different settings are an error: one dataset, one way of writing contexts."""
    if path is None:
        return None
    from modeling_shapca.context_generation import ContextSettings

    found: dict | None = None
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not record.get("generator"):
                continue
            given = {k: record[k] for k in ("prompt", "max_new_tokens", "temperature") if k in record}
            settings = ContextSettings(record["generator"], **given).to_dict()
            if found is not None and settings != found:
                raise DataFormatError(path, line_no, f"contexts written with other settings ({settings}) than "
                                                     f"the earlier records ({found})")
            found = settings
    return found
