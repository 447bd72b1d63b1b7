"""The console scripts (`shapca-train`, `shapca-predict`, `shapca-build`, `shapca-contexts`,
`shapca-push`, `shapca-app`, `shapca-export`): thin wrappers over each job's `main(argv)`, which
tests and the top-level `train.py` / `push_to_hub.py` call too. A job's return value (results,
counts) is not an exit status: each wrapper exits 0 when the job ends normally.

The base install is the torch-free serving stack (`shapca[onnx]` adds ONNX Runtime); a job that
needs the training stack and does not find it says which extra to install."""

from __future__ import annotations

import importlib
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


def _job(name: str):
    """The console-script function of one job."""
    module, function = JOBS[name].split(":")

    def run() -> int:
        try:
            job = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as error:
            if error.name not in TRAINING_STACK:
                raise
            sys.exit(f"shapca-{name} needs {error.name}, which is not installed: pip install \"shapca[train]\" "
                     "(with your torch build)")
        job(sys.argv[1:])
        return 0

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"shapca-{name}: {JOBS[name]}(sys.argv[1:]), exit status 0 when it ends normally."
    return run


train, predict, build, contexts, push, app, export = (_job(name) for name in JOBS)
