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


def _run(job: str) -> int:
    module, function = JOBS[job].split(":")
    getattr(importlib.import_module(module), function)(sys.argv[1:])
    return 0


def train() -> int:
    return _run("train")


def predict() -> int:
    return _run("predict")


def build() -> int:
    return _run("build")


def contexts() -> int:
    return _run("contexts")


def push() -> int:
    return _run("push")


def app() -> int:
    return _run("app")
