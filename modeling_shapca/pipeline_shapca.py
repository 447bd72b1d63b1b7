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
"""

from __future__ import annotations

import collections.abc
import contextlib
import types
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .inference import check_positive_int
from .records import (
    as_record, check_ignore_labels, check_window_args, decode_word_pairs, finish, is_dataset, merge_words, named, plan,
    records_from_lists, row_record, subword_counts, window_rows,
)
from .records import pieces as window_pieces
from .tasks import get_task


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode for the duration, the previous mode restored even when an error is raised."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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
        self.spec = get_task(self.model.config.task)
        if self.task and self.task in {"multimodal-ner", "multimodal-relation-extraction", "multimodal-joint-extraction"} \
                and get_task(self.task).name != self.spec.name:
            raise ValueError(f"pipeline task {self.task!r} does not fit this model, which was trained for "
                             f"{self.spec.name!r}: use {self.spec.pipeline_task!r}")
        if self.processor is None:
            raise ValueError("the Shap-CA pipeline needs the model's processor (saved next to the weights)")

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(self, image=None, context=None, pairs=None, generate_contexts=None,
                             autocast_dtype=None, compile=None, window=None, stride=None, ignore_labels=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected argument(s) {sorted(kwargs)} for the Shap-CA pipeline")
        preprocess = {k: v for k, v in (("image", image), ("context", context), ("pairs", pairs)) if v is not None}
        check_window_args(window, stride)
        preprocess.update({k: v for k, v in (("window", window), ("stride", stride)) if v is not None})
        forward = {}
        if generate_contexts is not None:
            forward["generate_contexts"] = bool(generate_contexts)
        if autocast_dtype is not None:
            forward["autocast_dtype"] = autocast_dtype
        if compile is not None:
            forward["compile"] = compile if isinstance(compile, str) else bool(compile)
        postprocess = {}
        if ignore_labels is not None:
            postprocess["ignore_labels"] = check_ignore_labels(ignore_labels)
        return preprocess, forward, postprocess

    def __call__(self, inputs, *args, batch_size=None, show_progress=None, **kwargs):
        """`show_progress`: a progress bar over a list or stream of inputs (default: from
        `PROGRESS_FROM` inputs on a list)."""
        if args:
            raise TypeError("pass image, context and pairs as keywords or as fields of the input record")
        if hasattr(self.model, "_check_labels"):
            self.model._check_labels()
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        self._show_progress = show_progress
        stream = _is_stream(inputs)
        if (stream or isinstance(inputs, (list, tuple))) and any(kwargs.get(k) is not None
                                                                  for k in ("image", "context", "pairs")):
            raise ValueError("image, context and pairs keywords go with a single input; give a batch as "
                             "records with those fields")
        if stream:
            rows = is_dataset(inputs)
            inputs = (named(row_record(item) if rows else item, i) for i, item in enumerate(inputs))
        elif isinstance(inputs, (list, tuple)):
            inputs = [named(item, i) for i, item in enumerate(inputs)]
        elif isinstance(inputs, (str, dict)):
            inputs = named(inputs, 0)
        else:
            raise TypeError(f"expected a string, a record, a list of those, a generator or a dataset, got "
                            f"{type(inputs).__name__}")
        return super().__call__(inputs, batch_size=batch_size, **kwargs)

    # ------------------------------------------------------------------ steps
    def preprocess(self, inputs, window: int | None = None, stride: int | None = None, **overrides) -> dict:
        name = inputs.get("_name", "input") if isinstance(inputs, dict) else "input"
        record = as_record(inputs, name, self.spec.name, **overrides)
        plan(record, self.spec.name, self.window_size(window), stride, self.subword_budget(), self._subword_counts)
        return record

    def window_size(self, window: int | None = None) -> int:
        """Words per window: `window`, at most the model's and the processor's `max_words`."""
        return min(window or self.model.config.max_words, self.model.config.max_words, self.processor.max_words)

    def subword_budget(self) -> int:
        """Subwords of a window's text: the processor's `max_length` less the special tokens."""
        return self.processor.max_length - self.processor.tokenizer.num_special_tokens_to_add(pair=False)

    def _subword_counts(self, words: list[str]) -> list[int]:
        """Subwords of each word (a word without any is encoded as one unknown token)."""
        encoded = self.processor.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        return subword_counts(lambda _: encoded.word_ids(), words)

    def _collate(self, records: list[dict]) -> dict:
        return {"records": records}

    PROGRESS_FROM = 256  # inputs in one call from which a progress bar is shown

    # Shape buckets of the captured path: subwords and words padded up to these multiples.
    BUCKETS = {"pad_to_multiple_of": 32, "words_pad_to_multiple_of": 8}

    def compiled_model(self, backend: str | bool = True):
        """The model under `torch.compile` (inductor with CUDA graphs on a GPU: mode
        "reduce-overhead"; a backend name such as "aot_eager" instead), built on first use;
        inputs are padded to shape buckets so it meets few shapes."""
        compiled = getattr(self, "_compiled", {})
        if backend not in compiled:
            if isinstance(backend, str):
                compiled[backend] = torch.compile(self.model, backend=backend, dynamic=False)
            else:
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
                compiled[backend] = torch.compile(self.model, mode=mode, dynamic=False)
            self._compiled = compiled
        return compiled[backend]

    def _forward(self, model_inputs: dict, generate_contexts: bool = True, autocast_dtype=None,
                 compile: bool | str = False) -> dict:
        records = model_inputs["records"]
        todo = [i for i, r in enumerate(records) if r["windows"]]
        if generate_contexts and self.processor.context_generator:
            need = [i for i in todo if records[i]["image"] is not None and not records[i]["context"]]
            if need:
                contexts = self.processor.generate_contexts([records[i]["image"] for i in need],
                                                            trust_remote_code=_consented(self.model))
                for i, context in zip(need, contexts):
                    records[i]["context"] = context
        # every window of every input is one row of the model's batch
        pieces = window_pieces(records)
        out: dict[str, Any] = {}
        if pieces:
            encoded = self._encode(window_rows(records, pieces), **(self.BUCKETS if compile else {}))
            context = torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with eval_mode(self.model), context:
                model = self.compiled_model(compile) if compile else self.model
                outputs = model(**encoded.to(self.device))
            config = self.model.config
            if self.spec.is_word_pair:
                probs, labels = outputs.logits.float().exp().cpu().numpy(), outputs.predictions.cpu().numpy()
                decoded = decode_word_pairs(self.spec.name, records, pieces, probs, labels, config.label_groups,
                                            config.group_sizes)
                out["decoded"] = [{"value": value} for value in decoded]
            else:
                marginals = self.model.crf.marginals(outputs.logits, encoded["word_mask"], self.model.allowed_start,
                                                     self.model.allowed_transitions)
                tags, marginals = merge_words(records, pieces, outputs.predictions.cpu().numpy(),
                                              marginals.float().cpu().numpy())
                out["tags"], out["marginals"] = torch.from_numpy(tags), torch.from_numpy(marginals)
        else:
            out["empty"] = torch.zeros(len(records), 1)
        # lists are split per input by the pipeline's batch iterator
        out["records"] = [{k: r[k] for k in ("text", "words", "offsets", "pairs")} for r in records]
        return out

    def _encode(self, records: list[dict], **padding):
        """The processor on a batch; an error is re-raised naming the input it comes from."""
        kwargs = dict(words=[r["words"] for r in records], contexts=[r["context"] for r in records],
                      images=[r["image"] for r in records], return_tensors="pt", **padding)
        try:
            return self.processor(**kwargs)
        except (ValueError, TypeError):
            for r in records:  # find the input at fault
                try:
                    self.processor(words=[r["words"]], contexts=[r["context"]], images=[r["image"]], return_tensors="pt")
                except (ValueError, TypeError) as error:
                    message = str(error).replace("example 0: ", "").replace("example 0 ", "")
                    raise type(error)(f"{r['_name']}: {message}") from error
            raise

    def postprocess(self, model_outputs: dict, ignore_labels: frozenset = frozenset()):
        record, config = _item(model_outputs["records"]), self.model.config
        values = {}
        if "tags" in model_outputs:
            values = {"tags": model_outputs["tags"][0].numpy(), "marginals": model_outputs["marginals"][0].numpy()}
        elif "decoded" in model_outputs:
            values = {"decoded": _item(model_outputs["decoded"])["value"]}
        return finish(self.spec.name, record, config.id2label, getattr(config, "label_groups", None),
                          ignore_labels, **values)

    # ------------------------------------------------------------------ batching
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
        if (sized and len(inputs) >= self.PROGRESS_FROM) if show is None else show:  # a progress bar on long inputs
            from tqdm.auto import tqdm

            return tqdm(outputs, total=len(inputs) if sized else None, desc=self.spec.pipeline_task, unit="input")
        return outputs

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        outputs = self.forward(self._collate([self.preprocess(inputs, **preprocess_params)]), **forward_params)
        return self.postprocess(outputs, **postprocess_params)


def _item(value):
    """One input's entry of a per-input list (a batch of one is not split by the iterator)."""
    if isinstance(value, list):
        (value,) = value
    return value


def _is_stream(inputs) -> bool:
    """A generator, an iterator, a `datasets.Dataset` or a torch dataset (`KeyDataset`)."""
    if isinstance(inputs, (str, dict, list, tuple, bytes)):
        return False
    return (isinstance(inputs, (types.GeneratorType, collections.abc.Iterator)) or is_dataset(inputs)
            or isinstance(inputs, torch.utils.data.Dataset))


def _consented(model) -> bool:
    """Whether the user allowed remote code for this model: its class then comes from the
    dynamic modules transformers loads only with `trust_remote_code=True`."""
    return type(model).__module__.startswith("transformers_modules")


def load_processor(model, trust_remote_code: bool | None = None):
    """The processor saved next to a model's weights, loaded with the consent the model was
    loaded with (never more)."""
    from .processing_shapca import ShapCAProcessor

    trust = _consented(model) if trust_remote_code is None else trust_remote_code
    path = model.config.name_or_path
    try:
        return ShapCAProcessor.from_pretrained(path, trust_remote_code=trust)
    except (OSError, ValueError) as error:
        raise ValueError(f"predict needs the processor saved with the model; none could be loaded from {path!r} "
                         f"({error}): pass processor=ShapCAProcessor(...)") from error


__all__ = ["ShapCAPipeline", "as_record", "eval_mode", "load_processor", "records_from_lists"]
