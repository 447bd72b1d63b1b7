"""Inference as a transformers `Pipeline`, one class for the three tasks of the registry.

    from transformers import pipeline
    ner = pipeline("multimodal-ner", model="path/or/hub-id", trust_remote_code=True)
    ner("Kevin Durant enters Oracle Arena")
    ner({"text": "Kevin Durant enters Oracle Arena", "image": "tweet.jpg", "context": "A player ..."})
    mre = pipeline("multimodal-relation-extraction", model=..., trust_remote_code=True)
    mre({"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]]})
    mre("Kevin Durant joins the Warriors", pairs=[[[0, 2], [4, 5]]])

Inputs: a string, a record `{"text" | "words", "image"?, "context"?, "pairs"? (MRE)}`, or a
list of those (a batch; use `batch_size=`). Images are PIL images (any mode; converted to RGB),
file paths or URLs. MRE pairs are `[head, tail]` word spans `[start, end)`.

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

import contextlib
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .inference import (
    bio_to_spans, check_pairs, check_positive_int, join_with_offsets, load_image, normalize_inputs, tokenize_with_offsets,
)
from .tasks import get_task

_RECORD_KEYS = {"text", "words", "image", "context", "pairs", "_name"}


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode for the duration, the previous mode restored even when an error is raised."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def as_record(item, name: str, task: str, **overrides) -> dict:
    """A checked input record: `{"text", "words", "offsets", "image", "context", "pairs", "_name"}`."""
    if isinstance(item, str):
        record = {"text": item}
    elif isinstance(item, dict):
        unknown = set(item) - _RECORD_KEYS
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {sorted(unknown)}; a record has {sorted(_RECORD_KEYS - {'_name'})}")
        record = dict(item)
        name = record.pop("_name", name)
    else:
        raise TypeError(f"{name}: expected a string or a record (dict with 'text' or 'words'), got {type(item).__name__}")
    for key, value in overrides.items():
        if value is not None:
            record[key] = value
    if ("text" in record) == ("words" in record):
        raise ValueError(f"{name}: give exactly one of 'text' (a string) or 'words' (a list of strings)")
    if "text" in record:
        if not isinstance(record["text"], str):
            raise TypeError(f"{name}: 'text' must be a string, got {type(record['text']).__name__}")
        text = record["text"]
        words, offsets = tokenize_with_offsets(text)
    else:
        words = record["words"]
        if isinstance(words, str) or not isinstance(words, (list, tuple)):
            raise TypeError(f"{name}: 'words' must be a list of strings, got {type(words).__name__}")
        for j, word in enumerate(words):
            if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                raise ValueError(f"{name}: word {j} must be a non-empty string without whitespace, got {word!r}")
        text, offsets = join_with_offsets(words)
        words = list(words)
    context = record.get("context")
    if context is not None and not isinstance(context, str):
        raise TypeError(f"{name}: 'context' must be a string or None, got {type(context).__name__}")
    pairs = record.get("pairs")
    if task == "mre":
        if pairs is None:
            raise ValueError(f"{name}: relation extraction needs 'pairs', the [head, tail] word spans to classify")
        pairs = check_pairs(pairs, len(words), name)
    elif pairs is not None:
        raise ValueError(f"{name}: 'pairs' is only read by relation extraction (mre), not by {task!r}")
    return {"text": text, "words": words, "offsets": offsets, "image": load_image(record.get("image"), name),
            "context": context or "", "pairs": pairs, "_name": name}


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
                             autocast_dtype=None, compile=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected argument(s) {sorted(kwargs)} for the Shap-CA pipeline")
        preprocess = {k: v for k, v in (("image", image), ("context", context), ("pairs", pairs)) if v is not None}
        forward = {}
        if generate_contexts is not None:
            forward["generate_contexts"] = bool(generate_contexts)
        if autocast_dtype is not None:
            forward["autocast_dtype"] = autocast_dtype
        if compile is not None:
            forward["compile"] = compile if isinstance(compile, str) else bool(compile)
        return preprocess, forward, {}

    def __call__(self, inputs, *args, batch_size=None, show_progress=None, **kwargs):
        """`show_progress`: a progress bar over a list of inputs (default: from `PROGRESS_FROM`
        inputs on)."""
        if args:
            raise TypeError("pass image, context and pairs as keywords or as fields of the input record")
        if hasattr(self.model, "_check_labels"):
            self.model._check_labels()
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        self._show_progress = show_progress
        if isinstance(inputs, (list, tuple)):
            if any(kwargs.get(k) is not None for k in ("image", "context", "pairs")):
                raise ValueError("image, context and pairs keywords go with a single input; give a batch as "
                                 "records with those fields")
            inputs = [self._named(item, i) for i, item in enumerate(inputs)]
        elif isinstance(inputs, (str, dict)):
            inputs = self._named(inputs, 0)
        else:
            raise TypeError(f"expected a string, a record or a list of those, got {type(inputs).__name__}")
        return super().__call__(inputs, batch_size=batch_size, **kwargs)

    @staticmethod
    def _named(item, index: int):
        if isinstance(item, dict):
            return {"_name": f"input {index}", **item}
        return {"text": item, "_name": f"input {index}"} if isinstance(item, str) else item

    # ------------------------------------------------------------------ steps
    def preprocess(self, inputs, **overrides) -> dict:
        name = inputs.get("_name", "input") if isinstance(inputs, dict) else "input"
        return as_record(inputs, name, self.spec.name, **overrides)

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
        todo = [i for i, r in enumerate(records) if r["words"]]
        if generate_contexts and self.processor.context_generator:
            need = [i for i in todo if records[i]["image"] is not None and not records[i]["context"]]
            if need:
                contexts = self.processor.generate_contexts([records[i]["image"] for i in need],
                                                            trust_remote_code=_consented(self.model))
                for i, context in zip(need, contexts):
                    records[i]["context"] = context
        out: dict[str, Any] = {}
        if todo:
            encoded = self._encode([records[i] for i in todo], **(self.BUCKETS if compile else {}))
            context = torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with eval_mode(self.model), context:
                model = self.compiled_model(compile) if compile else self.model
                outputs = model(**encoded.to(self.device))
            if self.spec.is_word_pair:
                probs = outputs.logits.float().exp()
                out["probs"] = _scatter(probs, todo, len(records))
                out["labels"] = _scatter(outputs.predictions, todo, len(records))
            else:
                marginals = self.model.crf.marginals(outputs.logits, encoded["word_mask"], self.model.allowed_start,
                                                     self.model.allowed_transitions)
                out["tags"] = _scatter(outputs.predictions, todo, len(records))
                out["marginals"] = _scatter(marginals, todo, len(records))
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

    def postprocess(self, model_outputs: dict):
        record = model_outputs["records"]
        if isinstance(record, list):  # a batch of one (batch_size=1 is not split by the iterator)
            (record,) = record
        if not record["words"]:
            return [] if self.spec.name != "mjere" else {"entities": [], "relations": []}
        if self.spec.name == "ner":
            return self._entities_ner(record, model_outputs["tags"][0], model_outputs["marginals"][0])
        probs, labels = model_outputs["probs"][0], model_outputs["labels"][0]
        if self.spec.name == "mre":
            return self._relations_mre(record, probs, labels)
        return self._joint(record, probs, labels)

    # ------------------------------------------------------------------ records
    @staticmethod
    def _span(record: dict, start: int, end: int) -> dict:
        begin, stop = record["offsets"][start][0], record["offsets"][end - 1][1]
        return {"word": record["text"][begin:stop], "start": begin, "end": stop}

    def _entities_ner(self, record, tags, marginals) -> list[dict]:
        n = len(record["words"])
        tags = tags[:n].tolist()
        labels = [self.model.config.id2label[int(t)] for t in tags]
        tag_probs = marginals[torch.arange(n), torch.tensor(tags)]
        return [{"entity_group": label, "score": float(tag_probs[first:last].mean()), **self._span(record, first, last)}
                for first, last, label in bio_to_spans(labels)]

    def _relations_mre(self, record, probs, labels) -> list[dict]:
        names = self.model.config.label_groups["relation"]
        out = []
        for (head, tail) in record["pairs"]:
            label = int(labels[0, head[0], tail[0]])
            out.append({"head": self._span(record, *head), "tail": self._span(record, *tail),
                        "label": names[label], "score": float(probs[head[0], tail[0], label])})
        return out

    def _joint(self, record, probs, labels) -> dict:
        from .word_pair import decode_mjere

        groups = self.model.config.label_groups
        types, relations = groups["entity"], groups["relation_start"]
        sizes = self.model.config.group_sizes
        offset_start, offset_end = sizes[0], sizes[0] + sizes[1]
        entities, triples = decode_mjere(labels, len(record["words"]))
        entity_records = {}
        for e in entities:
            label = e["type"] + 1
            entity_records[(e["start"], e["end"])] = {
                "entity_group": types[label], "score": float(probs[e["start"], e["end"] - 1, label]),
                **self._span(record, e["start"], e["end"])}
        relation_records = []
        for t in triples:
            r = t["relation"] + 1
            score = (probs[t["head_start"], t["tail_start"], offset_start + r]
                     + probs[t["head_end"] - 1, t["tail_end"] - 1, offset_end + r]) / 2
            relation_records.append({
                "head": dict(entity_records[(t["head_start"], t["head_end"])]),
                "tail": dict(entity_records[(t["tail_start"], t["tail_end"])]),
                "label": relations[r], "score": float(score)})
        return {"entities": list(entity_records.values()), "relations": relation_records}

    # ------------------------------------------------------------------ batching
    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        outputs = PipelineIterator(model_iterator, self.postprocess, postprocess_params)
        show = getattr(self, "_show_progress", None)
        if len(inputs) >= self.PROGRESS_FROM if show is None else show:  # a progress bar on long inputs
            from tqdm.auto import tqdm

            return tqdm(outputs, total=len(inputs), desc=self.spec.pipeline_task, unit="input")
        return outputs

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        outputs = self.forward(self._collate([self.preprocess(inputs, **preprocess_params)]), **forward_params)
        return self.postprocess(outputs, **postprocess_params)


def records_from_lists(inputs, images=None, contexts=None, pairs=None, is_split_into_words=None):
    """`predict`'s arguments (inputs plus per-input lists) as pipeline records; returns
    `(records, single)`. For a single input, `images` / `contexts` may be the value itself or
    a list of one, `pairs` is that input's list of pairs. A string where a per-input list is
    expected is an error (it would otherwise be read character by character)."""
    batch, single = normalize_inputs(inputs, is_split_into_words)
    n = len(batch)

    def per_input(values, name: str, unwrap: bool) -> list:
        if values is None:
            return [None] * n
        if single and (not unwrap or not isinstance(values, (list, tuple))):
            return [values]
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{name}: expected a list with one entry per input ({n}), got {type(values).__name__}")
        if len(values) != n:
            raise ValueError(f"got {len(values)} {name} for {n} inputs (use None for a missing one)")
        return list(values)

    columns = {"image": per_input(images, "images", True), "context": per_input(contexts, "contexts", True),
               "pairs": per_input(pairs, "pair lists", not single)}
    records = []
    for i, item in enumerate(batch):
        record = {"text": item} if isinstance(item, str) else {"words": list(item)}
        record.update({key: values[i] for key, values in columns.items() if values[i] is not None})
        record["_name"] = f"input {i}"
        records.append(record)
    return records, single


def _scatter(values: torch.Tensor, rows: list[int], size: int) -> torch.Tensor:
    """`values` of the non-empty inputs placed at their rows of a batch of `size`."""
    if len(rows) == size:
        return values
    out = values.new_zeros((size, *values.shape[1:]))
    out[torch.tensor(rows, device=values.device)] = values
    return out


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
