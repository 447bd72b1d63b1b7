"""The console scripts (`shapca-train`, `shapca-predict`, `shapca-build`, `shapca-contexts`,
`shapca-push`, `shapca-app`): thin wrappers over each job's `main(argv)`, which tests and the
top-level `train.py` / `push_to_hub.py` call too. A job's return value (results, counts) is
not an exit status: each wrapper exits 0 when the job ends normally."""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "train": "train:main",
    "predict": "modeling_shapca.predict:main",
    "build": "datasets_scripts.build:main",
    "contexts": "datasets_scripts.generate_contexts:main",
    "push": "push_to_hub:main",
    "app": "shapca_app.app:main",
}


def _job(name: str):
    """The console-script function of one job."""
    module, function = JOBS[name].split(":")

    def run() -> int:
        getattr(importlib.import_module(module), function)(sys.argv[1:])
        return 0

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"shapca-{name}: {JOBS[name]}(sys.argv[1:]), exit status 0 when it ends normally."
    return run


train, predict, build, contexts, push, app = (_job(name) for name in JOBS)
