"""The console scripts (`shapca-train`, `shapca-predict`, `shapca-build`, `shapca-contexts`,
`shapca-push`, `shapca-app`, `shapca-export`): thin wrappers over each job's `main(argv)`, which
tests and the top-level `train.py` / `push_to_hub.py` call too. A job's return value (results,
counts) is not an exit status: each wrapper exits 0 when the job ends normally. An error ends
the job with one line on stderr, `shapca-NAME: error: ...`, and exit status 1; `--debug` (any
position, or `SHAPCA_DEBUG=1`) shows the traceback instead.

The base install is the torch-free serving stack (`shapca[onnx]` adds ONNX Runtime); a job that
needs the training stack and does not find it says which extra to install."""

from __future__ import annotations

import importlib
import os
import sys

JOBS = {
    "train": "train:main",
    "predict": "shapca_serving.predict:main",
    "build": "datasets_scripts.build:main",
    "contexts": "datasets_scripts.generate_contexts:main",
    "push": "push_to_hub:main",
    "app": "shapca_app.app:main",
    "export": "shapca_training.export:main",
}
TRAINING_STACK = ("torch", "transformers", "datasets", "evaluate", "accelerate")


DEBUG_FLAG = "--debug"


def one_line(name: str, error: BaseException) -> str:
    """`shapca-NAME: error: MESSAGE` on one line (the type named unless it is a plain input
    error), with the way to the traceback."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, (ValueError, TypeError, OSError)):
        message = f"{type(error).__name__}: {message}"
    return f"shapca-{name}: error: {message} (rerun with {DEBUG_FLAG} for the traceback)"


def _job(name: str):
    """The console-script function of one job."""
    module, function = JOBS[name].split(":")

    def run() -> int:
        argv = sys.argv[1:]
        debug = DEBUG_FLAG in argv or os.environ.get("SHAPCA_DEBUG") == "1"
        argv = [a for a in argv if a != DEBUG_FLAG]
        try:
            job = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as error:
            if error.name not in TRAINING_STACK:
                raise
            sys.exit(f"shapca-{name} needs {error.name}, which is not installed: pip install \"shapca[train]\" "
                     "(with your torch build)")
        try:
            job(argv)
        except Exception as error:  # noqa: BLE001 - one line for the user, the traceback on request
            if debug:
                raise
            sys.exit(one_line(name, error))
        return 0

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"shapca-{name}: {JOBS[name]}(sys.argv[1:]), exit status 0 when it ends normally."
    return run


train, predict, build, contexts, push, app, export = (_job(name) for name in JOBS)
