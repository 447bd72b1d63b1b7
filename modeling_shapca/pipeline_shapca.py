"""Inference as a transformers `Pipeline`, one class for the three tasks of the registry.

    from transformers import pipeline
    ner = pipeline("multimodal-ner", model="path/or/hub-id", trust_remote_code=True)
    ner("Kevin Durant enters Oracle Arena")
    ner({"text": "Kevin Durant enters Oracle Arena", "image": "tweet.jpg", "context": "A player ..."})
    mre = pipeline("multimodal-relation-extraction", model=..., trust_remote_code=True)
    mre({"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]]})
    mre("Kevin Durant joins the Warriors", pairs=[[[0, 2], [4, 5]]])

Inputs: a string, a record `{"text" | "words", "image"?, "context"?, "pairs"? (MRE)}`, a list of
those (a batch; use `batch_size=`), or a stream: a generator, a `datasets.Dataset` (its rows:
`words` or `tokens`, `image` where `has_image` is not false, `context`, `pairs`; other columns
are ignored) or `KeyDataset(dataset, "text" | "words")`; a stream gives back a lazy iterator, as
every transformers pipeline does. Images are PIL images (any mode; converted to RGB), file paths
or URLs. MRE pairs are `[head, tail]` word spans `[start, end)`.

Any length: an input longer than a window (`window` words, default the model's `max_words`,
and at most the subwords the processor's `max_length` holds) is read as overlapping windows
that share `stride` words (default `window // 4`); each word is decided by one window
(`windows.py`), so entities never overlap across windows and offsets point into the original
text. MRE classifies each pair in a window holding both its spans. MJERE finds relations only
between entities that share a window (a relation is kept from the window that owns its head's
first word). An input within one window is read exactly as without windowing.
`ignore_labels`: labels left out of the results (entity groups, relation labels), as in
transformers' token-classification pipeline (default: none).

Outputs (transformers' conventions, character offsets into the text, or into
`" ".join(words)` for word lists):

* NER: `[{"entity_group", "score", "word", "start", "end"}]`. `score` is the mean over the
  entity's words of the CRF posterior marginal of the decoded tag (exact forward-backward,
  under the same IOB2 constraints as the Viterbi decode).
* MRE: `[{"head": span, "tail": span, "label", "score"}]` per given pair, `span =
  {"word", "start", "end"}`; `score` is the softmax probability of the label in the pair's cell.
* MJERE: `{"entities": [entity], "relations": [{"head": entity, "tail": entity, "label",
  "score"}]}`; an entity's score is the probability of its type on its boundary cell, a
  relation's the mean probability of the relation on its two cells.

Errors name the input: its position in the caller's list (`input 3`), or a name the caller
gives a record under `"_name"` (the CLI gives `file:line`).

The pipeline is a thin adapter in transformers' style over the inference engine
(`engine.py`) with the PyTorch runner (`torch_runner.py`): `preprocess` is the engine's
`prepare`, `_forward` its `run_batch` over a batch of inputs, `postprocess` its `finish`;
transformers' DataLoader does the batching. It overrides transformers' public hooks
(`_sanitize_parameters`, `preprocess`, `_forward`, `postprocess`) and `get_iterator` (records
are collated as lists, and a list's batches are tagged ahead). `model.predict`, the ONNX predictor and the CLI run
the same engine.
"""

from __future__ import annotations

import collections.abc

from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .engine import (
    PROGRESS_FROM, InferenceEngine, check_options, in_input_order, length_order, named_inputs,
)
from .tasks import get_task
from .torch_runner import TorchRunner

PIPELINE_TASKS = ("multimodal-ner", "multimodal-relation-extraction", "multimodal-joint-extraction")


class ShapCAPipeline(Pipeline):
    """Raw text / image / context in, records with scores out, for NER, MRE and MJERE (the
    model's `config.task`). See the module docstring for the formats."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    _pipeline_calls_generate = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spec = get_task(self.model.config.task)
        if self.task in PIPELINE_TASKS and get_task(self.task).name != spec.name:
            raise ValueError(f"pipeline task {self.task!r} does not fit this model, which was trained for "
                             f"{spec.name!r}: use {spec.pipeline_task!r}")
        self.runner = TorchRunner(self.model, self.processor, device=self.device)
        self.engine = InferenceEngine(self.runner)
        self.spec = spec

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(self, image=None, context=None, pairs=None, generate_contexts=None,
                             autocast_dtype=None, compile=None, window=None, stride=None, ignore_labels=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected argument(s) {sorted(kwargs)} for the Shap-CA pipeline")
        preprocess = {k: v for k, v in (("image", image), ("context", context), ("pairs", pairs)) if v is not None}
        ignore = check_options(window=window, stride=stride, ignore_labels=ignore_labels)
        preprocess.update({k: v for k, v in (("window", window), ("stride", stride)) if v is not None})
        forward = {}
        if generate_contexts is not None:
            forward["generate_contexts"] = bool(generate_contexts)
        if autocast_dtype is not None:
            forward["autocast_dtype"] = autocast_dtype
        if compile is not None:
            forward["compile"] = compile if isinstance(compile, str) else bool(compile)
        postprocess = {"ignore_labels": ignore} if ignore_labels is not None else {}
        return preprocess, forward, postprocess

    def __call__(self, inputs, *args, batch_size=None, show_progress=None, sort_by_length=True, **kwargs):
        """`show_progress`: a progress bar over a list or stream of inputs (default: from
        `PROGRESS_FROM` inputs on a list). `sort_by_length`: a list of more than one batch is
        batched in order of length (`engine.length_order`); the records come back in input order."""
        if args:
            raise TypeError("pass image, context and pairs as keywords or as fields of the input record")
        check_options(batch_size)
        self._show_progress = show_progress
        kind, items = named_inputs(inputs, {k: kwargs.get(k) for k in ("image", "context", "pairs")})
        if kind == "list" and not items:
            self._sanitize_parameters(**kwargs)  # the options are checked all the same
            return []  # an empty batch: no records (as the ONNX predictor)
        if kind == "list" and sort_by_length and (batch_size or 1) > 1 and len(items) > batch_size:
            order = length_order(items)
            return in_input_order(order, super().__call__([items[i] for i in order], batch_size=batch_size, **kwargs))
        return super().__call__(items, batch_size=batch_size, **kwargs)

    # ------------------------------------------------------------------ steps
    def preprocess(self, inputs, window: int | None = None, stride: int | None = None, **overrides) -> dict:
        """One checked input with its windows (the engine's `prepare`), as a batch of one."""
        return {"records": [self.engine.prepare(inputs, window=window, stride=stride, **overrides)]}

    @staticmethod
    def _collate(items: list[dict]) -> dict:
        """Preprocessed inputs as one batch (records are not tensors: transformers'
        `pad_collate_fn` cannot batch them)."""
        return {"records": [record for item in items for record in item["records"]]}

    def _forward(self, model_inputs: dict, **options) -> dict:
        records = model_inputs["records"]
        # ("row_tags": POS tags a loader may bring with a batch, `engine.tag_rows`; the tag-ahead benchmark does)
        values = self.engine.run_batch(records, row_tags=model_inputs.get("row_tags"), **options)
        # a list of per-input entries: the pipeline's batch iterator hands each input its own
        return {"inputs": [{"record": r, "values": v} for r, v in zip(records, values)]}

    def postprocess(self, model_outputs: dict, ignore_labels: frozenset = frozenset()):
        entry = model_outputs["inputs"]
        if isinstance(entry, list):  # a batch of one is not split by the iterator
            (entry,) = entry
        return self.engine.finish(entry["record"], entry["values"], ignore_labels)

    # ------------------------------------------------------------------ batching
    # transformers' own `get_iterator` with records batched by `_collate` (its `pad_collate_fn`
    # pads tensors only) and a progress bar on long inputs. It no longer POS-tags a list's next
    # batch in a thread: measured on 2 cores, that gained nothing (-0.04 % and -9.5 % in two runs;
    # docs/benchmarks.md, "One loader").
    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        sized = isinstance(inputs, collections.abc.Sized)
        if sized:
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:  # a stream: read lazily, one worker
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = 0
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        outputs = PipelineIterator(model_iterator, self.postprocess, postprocess_params)
        show = getattr(self, "_show_progress", None)
        if (sized and len(inputs) >= PROGRESS_FROM) if show is None else show:  # a progress bar on long inputs
            from tqdm.auto import tqdm

            return tqdm(outputs, total=len(inputs) if sized else None, desc=self.spec.pipeline_task, unit="input")
        return outputs


__all__ = ["ShapCAPipeline"]
