"""Loading a trained Shap-CA model: the one place that decides "local folder or Hub id"
(`model_location`), checks the serving options (`check_serving_options`) and builds the inference
engine of either backend (`load_engine`). The prediction CLI (and its corpus runner), the spaCy
component, the demo app and the export call it; none builds an engine of its own.

Torch-free at import: the PyTorch backend imports torch and transformers only when it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from modeling_shapca.context_cache import ContextCache

from .hub import model_location

BACKENDS = ("torch", "onnx")


def check_device(device) -> None:
    """A device torch can place a model on, checked before any weights load: None (where
    `from_pretrained` puts it), "auto" (this process's GPU if there is one), or a `torch.device` /
    string such as "cpu", "cuda:0" or "mps" that exists on this machine."""
    if device is None or device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device torch knows ({error})") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine")


def check_serving_options(model=None, backend: str = "torch", quantized: bool = False, device=None,
                          trust_remote_code: bool = False) -> None:
    """The options of `load_engine`, checked without loading weights, one message each: the
    backend, options that belong to the other backend, the device, and for a local folder with
    `backend="onnx"` the exported graph."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, value in (("quantized", quantized), ("trust_remote_code", trust_remote_code)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if backend == "onnx" and (trust_remote_code or device is not None):
        raise ValueError("trust_remote_code and device are options of backend 'torch'")
    if quantized and backend != "onnx":
        raise ValueError("quantized needs backend 'onnx'")
    if backend == "torch":
        check_device(device)
    elif model is not None:
        location = model_location(model)
        if isinstance(location, Path):
            from .onnx_predictor import INT8_FILE, MODEL_FILE, ONNX_FOLDER

            graph = location / ONNX_FOLDER / (INT8_FILE if quantized else MODEL_FILE)
            if not graph.is_file():
                raise OSError(f"{location} has no {ONNX_FOLDER}/{graph.name}: export the model with `shapca-export`"
                              + (" --quantize int8" if quantized else "") + " first, or use backend 'torch'")


def model_config(model) -> dict:
    """The config.json of a Shap-CA model folder or Hub id (`model_location`'s rule), its task
    checked against the task registry (configs saved before the registry, `task: "word_pair"`,
    read as the task their `word_pair_scheme` names); a `ValueError` naming `model` otherwise.
    Nothing else is loaded."""
    import json

    from modeling_shapca.tasks import TASKS

    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise ValueError(f"'model' must be a model folder or Hub id, got {model!r}")
    try:
        location = model_location(model)
        if isinstance(location, Path):
            config_path = location / "config.json"
            if not config_path.is_file():
                raise OSError(f"{model} has no config.json")
        else:
            from huggingface_hub import hf_hub_download

            config_path = Path(hf_hub_download(location, "config.json"))
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - any reason (offline, no such repo, bad JSON) is the same error here
        raise ValueError(f"{str(model)!r} is not a Shap-CA model folder or Hub id: {error}") from None
    if not isinstance(config, dict) or config.get("model_type") != "shapca" or "task" not in config:
        raise ValueError(f"{str(model)!r} is not a Shap-CA model (its config.json has model_type "
                         f"{config.get('model_type') if isinstance(config, dict) else None!r}, not 'shapca')")
    if config["task"] == "word_pair":  # configs saved before the task registry
        config = {**config, "task": config.get("word_pair_scheme") or "mre"}
    if config["task"] not in TASKS:
        raise ValueError(f"{str(model)!r} has task {config['task']!r} in its config.json; a Shap-CA model's task is "
                         f"one of {sorted(TASKS)}")
    return config


def model_task(model) -> str:
    """The task of a saved model (`model_config`)."""
    return model_config(model)["task"]


def model_fingerprint(model) -> str:
    """What a model folder predicts with, by content: sha256 over the bytes of every file in the
    folder and its `onnx/` (weights, config, processor and tokenizer files, graphs, code; not
    checkpoints, cards or results); a Hub id by its commit."""
    import hashlib

    from .runner import file_digest

    location = model_location(model)
    if isinstance(location, str):
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(location, allow_patterns=["config.json"]))
        return f"hub:{location}@{snapshot.name}"  # the snapshot folder is named by the commit
    digest = hashlib.sha256()
    files = [p for p in location.iterdir() if p.is_file()] + sorted((location / "onnx").glob("*"))
    for path in sorted(files):
        if path.name.startswith(".") or path.name in FINGERPRINT_SKIPS or not path.is_file():
            continue
        digest.update(f"{path.relative_to(location)}:{file_digest(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


FINGERPRINT_SKIPS = ("README.md", "results.json", "all_results.json", "train_results.json", "eval_results.json",
                     "test_results.json", "trainer_state.json", "training_args.bin")


def load_trained(name: str, trust_remote_code: bool = False, processor: bool = True):
    """`(model, processor)` of a saved Shap-CA model: by default this package's classes, chosen
    by the config's task (nothing from the folder runs); with `trust_remote_code=True` the
    folder's own code through `AutoModel` (for models whose code differs from this package's),
    and its processor with the same consent. `processor=False` returns `(model, None)`."""
    if trust_remote_code:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(name, trust_remote_code=True)
    else:
        import modeling_shapca
        from modeling_shapca import ShapCAConfig
        from modeling_shapca.tasks import get_task

        config = ShapCAConfig.from_pretrained(name)
        model = getattr(modeling_shapca, get_task(config.task).model_class).from_pretrained(name)
    if not processor:
        return model, None
    from modeling_shapca.torch_runner import load_processor

    return model, load_processor(model, trust_remote_code)


def torch_engine(model, processor, trust_remote_code: bool = False, allow_private: bool = True, context_cache=True):
    """The inference engine with a loaded model as its runner: this package's engine, or with
    consent the engine shipped with the model's own code (where it has one)."""
    import importlib

    from modeling_shapca import engine, torch_runner

    if trust_remote_code:
        package = type(model).__module__.rsplit(".", 1)[0]
        try:
            engine = importlib.import_module(f"{package}.engine")
            torch_runner = importlib.import_module(f"{package}.torch_runner")
        except ImportError:  # remote code written before the engine: this package's engine drives it
            pass
    runner = torch_runner.TorchRunner(model.eval(), processor)
    runner.allow_private = allow_private  # (set after: a model's own older runner may not take them)
    runner.context_cache = ContextCache.resolve(context_cache)
    return engine.InferenceEngine(runner)


def load_engine(model, backend: str = "torch", quantized: bool = False, device=None, trust_remote_code: bool = False,
                allow_private: bool = True, context_cache=True):
    """The inference engine of a trained model folder or Hub id, on either backend: "torch" (the
    PyTorch model on `device`: None leaves it where it loads, "auto" takes this process's GPU
    where there is one, as under torchrun) or "onnx" (`ShapCAOnnxPredictor` on the folder's `onnx/` graphs, `quantized` for int8).
    `trust_remote_code` runs the folder's own code (torch only); nothing else from the folder
    runs. `allow_private=False` refuses image URLs on private addresses (the demo app);
    `context_cache` (True: the environment's; False: off; a folder) is where image contexts are
    looked up and, on torch, stored (`modeling_shapca/context_cache.py`). Options
    are checked before anything loads (`check_serving_options`)."""
    check_serving_options(model, backend, quantized, device, trust_remote_code)
    if backend == "onnx":
        from .onnx_predictor import ShapCAOnnxPredictor

        return ShapCAOnnxPredictor.from_pretrained(model, quantized=quantized, allow_private=allow_private,
                                                   context_cache=context_cache)
    import torch

    model, processor = load_trained(model, trust_remote_code)
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else None
    if device is not None:
        model = model.to(device)
    return torch_engine(model, processor, trust_remote_code, allow_private, context_cache)


__all__ = ["BACKENDS", "check_device", "check_serving_options", "load_engine", "load_trained", "model_config",
           "model_fingerprint", "model_location", "model_task", "torch_engine"]
