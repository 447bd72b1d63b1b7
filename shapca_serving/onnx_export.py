"""Export a Shap-CA model to ONNX for `onnx_predictor.ShapCAOnnxPredictor` (no PyTorch at
serving time), checked against PyTorch before anything is written.

    from shapca_serving.onnx_export import export_onnx
    report = export_onnx("outputs/twitter2015-minilm", "outputs/twitter2015-minilm-onnx", quantize=True)

Files, under `<output>/onnx/` (with `config.json` and the processor's files beside it, so the
folder is what the predictor and the Hub need):

* `model.onnx`: text encoder over `[CLS] text [SEP] context [SEP]`, fusion and head, up to the
  CRF emissions (NER) or the word-pair log-probabilities (MRE, MJERE); dynamic batch, subword,
  word and image-region axes. Inputs: the processor's (`input_ids`, `attention_mask`,
  `token_type_ids` for BERT, `word_index`, `word_mask`, `text_mask`, `context_mask`, `pos_ids`)
  plus `image_regions` `(batch, regions, vision_dim)` and `has_image` `(batch,)`.
* `vision.onnx`: the vision encoder, `pixel_values` -> `image_regions` (dynamic batch), when the
  processor has an image processor with a torch-free port (`image_transforms.py`).
* `model_int8.onnx` (`quantize=True` or a scheme of `quantization.SCHEMES`): `model.onnx` in
  int8 (MatMul / Gemm weights int8 per output channel; activations quantized per call, or with
  ranges calibrated on `calibration` sentences); the vision graph stays fp32. Per-channel
  weights: on the Twitter-2015 validation split per-tensor int8 lost 0.80 F1 and per-channel
  0.44 (docs/benchmarks.md). Several schemes (`quantize=("dynamic", "static-minmax")`): the
  first is `model_int8.onnx`, the others `model_int8.<scheme>.onnx` candidates, each checked
  the same way (`shapca-export` measures them and keeps one).
* `export.json`: the task and labels, the model's fingerprint (a hash of its config's labels and
  its weights: publishing stages `onnx/` only when it matches the folder's model), the CRF's
  parameters (decoded in NumPy), the check below and the int8 figures.

The output folder: the model's own folder (`onnx/` is added beside its weights), a new or empty
folder, or one an earlier export wrote (no weights); a folder that holds another model's
weights is refused before anything is written. One export writes a folder at a time (a lock,
`.shapca-export.lock`); `onnx/` is staged in `.onnx-partial-*` and renamed into place, with the
umask's permissions; partial folders of killed exports are removed by the next export.

The check: on sample inputs of another batch size and other lengths than the export's (with
and without contexts and images), the fp32 graph's outputs must equal PyTorch's within `atol`
(default 1e-4, absolute, on emissions / log-probabilities), or `ExportError` is raised and
nothing is left in the output folder. The int8 graph's largest difference is reported, not
bounded: its quality is measured as F1 on data (`shapca-export --validation`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .locks import WriterLock
from .onnx_predictor import INFO_FILE, INT8_FILE, MODEL_FILE, ONNX_FOLDER, VISION_FILE, label_summary
from .quantization import check_scheme, needs_calibration
from .quantization import quantize as quantize_graph

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
LOCK_FILE = ".shapca-export.lock"
PARTIAL_PREFIX = ".onnx-partial-"

ATOL = 1e-4
CALIBRATION_BATCH = 32  # calibration sentences per graph run
EXPORTERS = ("torchscript", "dynamo")
OPSETS = {"torchscript": 17, "dynamo": 18}
SAMPLE_WORDS = [
    ["Kevin", "Durant", "enters", "Oracle", "Arena", "with", "Stephen", "Curry", "tonight", "."],
    ["RT", "@cnni", ":", "Floods", "in", "Paris"],
    ["Go", "#Bears", "!"],
    ["The", "United", "Nations", "met", "in", "New", "York", "on", "Monday", "about", "the", "crisis", "in", "Syria"],
]
SAMPLE_CONTEXTS = ["A basketball player walks onto a court in front of a crowd.", "", "A bear mascot at a stadium.",
                   "People in suits sit around a long table."]


class ExportError(RuntimeError):
    """The exported graph does not reproduce PyTorch (or cannot be built)."""


class _MainGraph(nn.Module):
    """Text encoder, fusion and head up to the head's logits, with precomputed image regions."""

    def __init__(self, model, with_token_types: bool):
        super().__init__()
        self.model, self.with_token_types = model, with_token_types

    def forward(self, input_ids, attention_mask, token_type_ids, word_index, word_mask, text_mask, context_mask,
                pos_ids, image_regions, has_image):
        outputs = self.model.shapca(
            input_ids, attention_mask, word_index, word_mask.bool(), text_mask.bool(), context_mask.bool(), pos_ids,
            token_type_ids=token_type_ids if self.with_token_types else None, has_image=has_image,
            compute_alignment=False, image_regions=image_regions,
        )
        return self.model.head_logits(outputs)


class _VisionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.shapca.encode_image(pixel_values)[0]


def _main_inputs(batch, model) -> dict[str, torch.Tensor]:
    """The main graph's inputs for a processor batch (image regions from the PyTorch vision
    encoder, or the one-region stand-in of a batch without images)."""
    n = batch["input_ids"].shape[0]
    has_image = batch["has_image"].bool()
    if "pixel_values" in batch:
        with torch.no_grad():
            regions = model.shapca.encode_image(batch["pixel_values"])[0]
    else:
        regions = torch.zeros(n, 1, model.config.vision_hidden_size)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
    inputs["token_type_ids"] = batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
    for key in ("word_index", "word_mask", "text_mask", "context_mask", "pos_ids"):
        inputs[key] = batch[key].long() if key.endswith("mask") else batch[key]
    inputs.update(image_regions=regions, has_image=has_image)
    return inputs


def _samples(processor, with_images: bool, rows: slice):
    from PIL import Image

    rng = np.random.default_rng(0)
    words, contexts = SAMPLE_WORDS[rows], SAMPLE_CONTEXTS[rows]
    images = None
    if with_images:
        images = [Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)) if i % 2 == 0 else None
                  for i in range(len(words))]
    return processor(words=words, contexts=contexts, images=images, return_tensors="pt")


def _export(module, args: tuple, names: list[str], dynamic: dict, path: Path, output: str,
            output_axes: dict[int, str], exporter: str) -> None:
    """`torch.onnx.export` of `module` with named dynamic axes: the TorchScript exporter at
    opset 17 (`exporter="torchscript"`, the default: ONNX Runtime fuses its GELU, LayerNorm and
    eager attention patterns, see `export_onnx`) or the dynamo exporter at opset 18."""
    import warnings

    try:
        with warnings.catch_warnings():  # the exporters' notes on axis names, tracing and pytree internals
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            if exporter == "torchscript":
                axes = {name: dict(dynamic[name]) for name in names if name in dynamic}
                axes[output] = output_axes
                torch.onnx.export(module, args, str(path), input_names=names, output_names=[output],
                                  dynamic_axes=axes, opset_version=OPSETS[exporter], dynamo=False)
            else:
                dims = {}

                def dim(name):
                    return dims.setdefault(name, torch.export.Dim(name))

                shapes = {name: {axis: dim(label) for axis, label in dynamic[name].items()} if name in dynamic else None
                          for name in names}
                torch.onnx.export(module, args, str(path), input_names=names, output_names=[output],
                                  dynamic_shapes=shapes, dynamo=True, opset_version=OPSETS[exporter],
                                  external_data=False, verbose=False)
    except Exception as error:  # the exporters raise many types; name what failed
        raise ExportError(f"torch.onnx.export ({exporter}) of {path.name} failed: {type(error).__name__}: {error}") \
            from error


@contextlib.contextmanager
def _eager_attention(model):
    """The text encoder with transformers' eager attention while exporting (the user's model
    gets its own implementation back): its MatMul-Softmax-MatMul pattern is one ONNX Runtime
    fuses, SDPA's exported form is not (docs/benchmarks.md, "round two")."""
    text_model = model.shapca.text_model
    before = getattr(text_model.config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(text_model, "set_attn_implementation"):
        yield
        return
    text_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        text_model.set_attn_implementation(before)


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _max_difference(session, inputs: dict[str, torch.Tensor], expected: np.ndarray) -> float:
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})[0]
    if got.shape != expected.shape:
        raise ExportError(f"the exported graph gives shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got.astype(np.float64) - expected).max())


def export_onnx(model, output_dir: str | Path, processor=None, quantize: bool | str | tuple = False, atol: float = ATOL,
                with_vision: bool | None = None, exporter: str = "torchscript", calibration: list[dict] | None = None,
                calibration_source: dict | None = None) -> dict:
    """Export `model` (a folder / Hub id, or a loaded Shap-CA model with `processor`) into
    `output_dir` (see the module docstring); returns the report written to `export.json`.

    `with_vision`: export the vision graph (default: when the processor's image processor has a
    torch-free port). `exporter`: "torchscript" (opset 17, the text encoder traced with eager
    attention: the graph ONNX Runtime optimises best) or "dynamo" (opset 18, the encoder's own
    attention). `quantize`: False, True (dynamic int8), a scheme or a tuple of schemes
    (`quantization.SCHEMES`); `calibration`: rows `{"words", "context"}` whose graph inputs
    calibrate the static schemes (`calibration_source`: where they come from, recorded in
    export.json). Raises `ExportError` when the check fails, with the output
    untouched."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    schemes = int8_schemes(quantize)
    if any(needs_calibration(s) for s in schemes) and not calibration:
        raise ValueError(f"int8 schemes {', '.join(s for s in schemes if needs_calibration(s))} need calibration "
                         "sentences (calibration=[{'words': [...], 'context': ...}, ...])")
    source = None
    output_dir = Path(output_dir)
    if isinstance(model, (str, Path)):
        source = str(model)
        check_output_folder(output_dir, source)
        model, processor = _load(source)
    else:
        check_output_folder(output_dir, None, model)
    if processor is None:
        raise ValueError("export_onnx needs the model's processor (pass processor=, or a model folder)")
    output_dir.mkdir(parents=True, exist_ok=True)
    with WriterLock(output_dir / LOCK_FILE, f"another export is writing {output_dir} right now; wait for it"):
        for leftover in output_dir.glob(f"{PARTIAL_PREFIX}*"):  # a killed export's (the lock says none runs)
            shutil.rmtree(leftover, ignore_errors=True)
        return _export_all(model, processor, output_dir, source, schemes, atol, with_vision, exporter,
                           (calibration, calibration_source))


def int8_schemes(quantize) -> tuple[str, ...]:
    """`export_onnx`'s `quantize` as a tuple of schemes (the first is `model_int8.onnx`)."""
    if quantize is False or quantize is None:
        return ()
    schemes = ("dynamic",) if quantize is True else (quantize,) if isinstance(quantize, str) else tuple(quantize)
    for scheme in schemes:
        check_scheme(scheme)
    if len(set(schemes)) != len(schemes) or not schemes:
        raise ValueError(f"quantize: give each int8 scheme once, got {quantize!r}")
    return schemes


def candidate_file(scheme: str, first: bool) -> str:
    """The file of an int8 scheme's graph: `model_int8.onnx` for the first (the one served)."""
    return INT8_FILE if first else INT8_FILE.replace(".onnx", f".{scheme}.onnx")


def calibration_feeds(model, processor, rows: list[dict], batch_size: int = CALIBRATION_BATCH) -> list[dict]:
    """The main graph's inputs (NumPy) for calibration rows `{"words", "context"}`, in batches of
    one shape (ONNX Runtime's percentile calibrator stacks every batch's activations): all rows
    padded to the longest, and the last batch filled up with the first rows."""
    batch = processor(words=[r["words"] for r in rows], contexts=[r.get("context") or "" for r in rows],
                      images=None, return_tensors="pt")
    inputs = {k: v.numpy() for k, v in _main_inputs(batch, model).items()}
    size = min(batch_size, len(rows))
    count = -(-len(rows) // size)
    index = np.arange(count * size) % len(rows)
    return [{k: v[index[i * size:(i + 1) * size]] for k, v in inputs.items()} for i in range(count)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _holds(output_dir: Path, source: str | None, model=None) -> bool:
    """Whether the weights in `output_dir` are the exported model's: the model's own folder, a
    copy of its weights file, or (a model object) the weights it was saved with."""
    weights = output_dir / "model.safetensors"
    if source and Path(source).is_dir():
        theirs = Path(source) / "model.safetensors"
        return Path(source).resolve() == output_dir.resolve() or (
            theirs.is_file() and weights.is_file() and _sha256(theirs) == _sha256(weights))
    if model is not None and weights.is_file():
        from safetensors.torch import load_file

        saved, state = load_file(str(weights)), model.state_dict()
        return set(saved) <= set(state) and all(torch.equal(saved[k], state[k].detach().cpu()) for k in saved)
    return False


def check_output_folder(output_dir: Path, source: str | None, model=None) -> None:
    """The export writes `config.json` and the processor's files beside `onnx/`: refuse a folder
    that holds another model (weights that are not the exported model's), or files of something
    else, before anything is written."""
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise ValueError(f"the export's output {output_dir} is not a folder")
    onnx = output_dir / ONNX_FOLDER
    if onnx.is_symlink() or (onnx.exists() and not onnx.is_dir()):
        raise ValueError(f"{onnx} is not a folder: the export writes its graphs there; move it away or export into "
                         "another folder")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if _holds(output_dir, source, model):
        return  # the model's own folder: onnx/ goes beside its weights
    weights = [name for name in WEIGHT_FILES if (output_dir / name).exists()]
    if weights:
        raise ValueError(f"{output_dir} holds another model ({weights[0]}); exporting {source or 'this model'} there "
                         "would replace its config and processor. Export into the model's own folder, or a new or "
                         "empty folder")
    if (output_dir / "config.json").exists() and not (output_dir / ONNX_FOLDER / INFO_FILE).is_file():
        raise ValueError(f"{output_dir} holds a config.json that no export wrote; export into a new or empty folder")


def model_fingerprint(model) -> str:
    """A hash of what the exported graphs encode: the task and labels of the config and every
    weight (as float32), so an `onnx/` folder can be matched to the model beside it."""
    digest = hashlib.sha256(json.dumps(label_summary(model.config.to_dict()), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        tensor = tensor.float() if tensor.is_floating_point() else tensor
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _export_all(model, processor, output_dir: Path, source, schemes: tuple, atol: float, with_vision,
                exporter: str, calibration) -> dict:
    from .image_transforms import ImageTransform

    model = model.eval().float().cpu()
    config = model.config
    image_config = processor.image_processor.to_dict() if processor.image_processor is not None else None
    if with_vision is None:
        try:
            ImageTransform.check(image_config or {})
            with_vision = True
        except ValueError:
            with_vision = False
    elif with_vision:
        ImageTransform.check(image_config or {})
    with_token_types = "token_type_ids" in processor(words=[["a"]], images=None, return_tensors="pt")

    export_batch = _samples(processor, with_vision, slice(0, 2))
    check_batches = [_samples(processor, with_vision, slice(0, 4)), _samples(processor, False, slice(1, 4))]
    main = _MainGraph(model, with_token_types).eval()
    names = ["input_ids", "attention_mask", "token_type_ids", "word_index", "word_mask", "text_mask", "context_mask",
             "pos_ids", "image_regions", "has_image"]
    sub, word = {0: "batch", 1: "subwords"}, {0: "batch", 1: "words"}
    dynamic = {"input_ids": sub, "attention_mask": sub, "token_type_ids": sub, "text_mask": sub, "context_mask": sub,
               "word_index": word, "word_mask": word, "pos_ids": word, "image_regions": {0: "batch", 1: "regions"},
               "has_image": {0: "batch"}}
    report: dict = {"format": 2, "task": config.task, "exporter": exporter, "opset": OPSETS[exporter], **label_summary(config.to_dict()),
                    "fingerprint": model_fingerprint(model), "vision_hidden_size": config.vision_hidden_size,
                    "files": {"model": MODEL_FILE}}
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=PARTIAL_PREFIX) as tmp:
        staged = Path(tmp)
        started = time.perf_counter()
        example = _main_inputs(export_batch, model)
        grid_axes = {0: "batch", 1: "words"} if config.task == "ner" else {0: "batch", 1: "words", 2: "words"}
        with _eager_attention(model) if exporter == "torchscript" else contextlib.nullcontext():
            _export(main, tuple(example[n] for n in names), names, dynamic, staged / MODEL_FILE, "logits", grid_axes,
                    exporter)
        if with_vision:
            _export(_VisionGraph(model).eval(), (export_batch["pixel_values"],), ["pixel_values"],
                    {"pixel_values": {0: "batch"}}, staged / VISION_FILE, "image_regions", {0: "batch"}, exporter)
            report["files"]["vision"] = VISION_FILE
        report["export_seconds"] = round(time.perf_counter() - started, 1)

        sessions = {"model": _session(staged / MODEL_FILE)}
        calibration, calibration_source = calibration
        feeds = calibration_feeds(model, processor, calibration) if any(map(needs_calibration, schemes)) else None
        int8 = {}
        for k, scheme in enumerate(schemes):
            name = candidate_file(scheme, k == 0)
            began = time.perf_counter()
            int8[scheme] = quantize_graph(staged / MODEL_FILE, staged / name, scheme,
                                          feeds if needs_calibration(scheme) else None)
            int8[scheme]["seconds"] = round(time.perf_counter() - began, 1)
            if needs_calibration(scheme) and calibration_source:
                int8[scheme]["calibration"] = calibration_source
            sessions[scheme] = _session(staged / name)
            report["files"]["int8" if k == 0 else f"int8.{scheme}"] = name
        differences = {key: 0.0 for key in sessions}
        vision_difference = 0.0
        vision_session = _session(staged / VISION_FILE) if with_vision else None
        for batch in check_batches:
            inputs = _main_inputs(batch, model)
            with torch.no_grad():
                expected = main(*(inputs[n] for n in names)).double().numpy()
            for key, session in sessions.items():
                differences[key] = max(differences[key], _max_difference(session, inputs, expected))
            if with_vision and "pixel_values" in batch:
                vision_difference = max(vision_difference, _max_difference(
                    vision_session, {"pixel_values": batch["pixel_values"]},
                    inputs["image_regions"][: len(batch["pixel_values"])].double().numpy()))
        report["check"] = {"atol": atol, "max_abs_difference": differences["model"],
                           "vision_max_abs_difference": vision_difference if with_vision else None,
                           "batches": [int(b["input_ids"].shape[0]) for b in check_batches]}
        for scheme in schemes:
            int8[scheme]["max_abs_difference"] = differences[scheme]
        if schemes:
            report["int8"] = int8[schemes[0]]
        if len(schemes) > 1:
            report["int8_candidates"] = int8
        failed = {k: v for k, v in (("model", differences["model"]), ("vision", vision_difference)) if v > atol}
        if failed:
            raise ExportError("the exported graph does not reproduce PyTorch: largest absolute difference "
                              + ", ".join(f"{k} {v:.3g}" for k, v in failed.items()) + f" > atol {atol}")
        if config.task == "ner":
            crf = model.crf
            report["crf"] = {name: values.detach().float().tolist() for name, values in (
                ("start", crf.start_transitions), ("end", crf.end_transitions), ("transitions", crf.transitions))}
        report["sizes_bytes"] = {key: (staged / name).stat().st_size for key, name in report["files"].items()}
        (staged / INFO_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _write_beside(model, processor, output_dir, source)
        umask = _umask()
        os.chmod(staged, 0o777 & ~umask)  # mkdtemp's 0700 -> what the user's umask gives
        for path in staged.iterdir():
            os.chmod(path, 0o666 & ~umask)
        target = output_dir / ONNX_FOLDER
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
        Path(tmp).mkdir()  # TemporaryDirectory removes its (now moved) folder on exit
    return report


def _write_beside(model, processor, output_dir: Path, source: str | None) -> None:
    """`config.json` and the processor's files beside `onnx/` (kept where they already are)."""
    if source and Path(source).is_dir() and Path(source).resolve() == output_dir.resolve():
        return
    model.config.to_json_file(str(output_dir / "config.json"))
    processor.save_pretrained(str(output_dir))


def _load(name: str):
    """A model folder / Hub id with this package's classes (nothing from the folder runs)."""
    from .loading import load_trained

    return load_trained(name)


__all__ = ["ATOL", "ExportError", "calibration_feeds", "candidate_file", "check_output_folder", "export_onnx",
           "int8_schemes", "model_fingerprint"]
