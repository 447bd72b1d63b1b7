"""The one rule between a local folder and a Hub id, for models and datasets alike (the loader,
the ONNX predictor, the spaCy component and the corpus runner's inputs all ask it). Torch-free,
and imports nothing of this package."""

from __future__ import annotations

import os
from pathlib import Path


def model_location(name, what: str = "model folder") -> Path | str:
    """A local folder (a `Path`) or a Hub id (the string), by one rule for every tool: an
    existing folder is local; a name that is a file, is absolute, starts with `.` or `~`, or is
    not a valid Hub id (`a/b/c`) is an `OSError` saying no such folder exists; anything else is a
    Hub id. `what` names the kind of folder in the message."""
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise OSError(f"expected a {what} or a Hub id, got {name!r}")
    path = Path(name)
    if path.is_dir():
        return path
    text = str(name)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if path.is_absolute() or text.startswith((".", "~")) or path.exists():
            raise HFValidationError(text)
        validate_repo_id(text)
    except HFValidationError:
        raise OSError(f"{text}: no such {what}" + (" (it is a file)" if path.is_file() else "")) from None
    return text


__all__ = ["model_location"]
