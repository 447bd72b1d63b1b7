"""Shap-CA: Shapley value-based contrastive alignment for multimodal information extraction."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="shapca",
    version="0.1.0",
    description="Reference implementation of Shap-CA (ACM MM 2024) for the Hugging Face ecosystem",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_shapca", "datasets_scripts", "shapca_training"]),
    py_modules=["train", "push_to_hub", "model_card"],
    # torch is left unpinned on purpose (GPU users need their CUDA build); the Makefile pins
    # torch==2.13.0 in the same pip command on CPU machines.
    install_requires=[
        "torch>=2.1",
        "transformers>=5.0",
        "datasets>=4.0",
        "evaluate>=0.4",
        "seqeval>=1.2",
        "accelerate>=1.0",
        "spacy>=3.7",
        "pillow",
        "numpy",
        "pyyaml",
        "tqdm",
        "huggingface_hub",
        "safetensors",
        "jinja2",
        "matplotlib",
        "regex",
    ],
    # pytorch-crf: the reference the CRF tests compare against (the model has its own CRF).
    extras_require={
        "dev": ["pytest", "hypothesis", "pytorch-crf>=0.7.2", "gradio>=6", "gradio_client", "selenium>=4.20"],
        # the Gradio app (demo/app.py); the browser test drives Debian's chromium with selenium
        "demo": ["gradio>=6"],
    },
)
