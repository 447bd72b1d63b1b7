"""The one inference engine: inputs in, records out, for NER, MRE and MJERE, whatever runs the
model. Torch-free: the PyTorch runner (`torch_runner.py`) and the ONNX Runtime runner
(`shapca_serving.onnx_predictor`) plug into it, and the transformers pipeline
(`pipeline_shapca.py`), `model.predict`, the ONNX predictor, the prediction CLI and the demo
app all call it, so every way to predict takes the same inputs, checks them with the same
messages and gives the same records.

The driver, step by step (`records.py` holds the steps):

1. `named_inputs`: a caller's string, record, list or stream, each item named by its position
   (`input 3`) unless it carries a `_name` (the CLI gives `file:line`);
2. `prepare`: one item checked and split into words with offsets (`as_record`), then its
   windows of at most `window` words and the runner's subword budget (`plan`);
3. `run_batch`: contexts for images that lack one (the runner's `add_contexts`), every window
   of every input as one row of the model's batch, the runner's outputs merged back per input
   (NER: each word from the window that owns it; MRE / MJERE: the pair and grid decisions);
4. `finish`: one input's values as records, without `ignore_labels`.

A runner is any object that satisfies `Runner` (below): the one statement of what the engine
calls. `InferenceEngine(runner)` calls `runner.check()` once, when it is built.

Batches of a list (the pipeline's too) are tagged one batch ahead (`tag_rows`, in a thread) while the
model runs on the batch before: the model runs outside the GIL (PyTorch, ONNX Runtime), so the
tagging costs little wall time; the rows get the tags `run` would have given them (the same
call on the same word lists).

Formats of inputs and records: `pipeline_shapca.py`.
"""

from __future__ import annotations

import collections.abc
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Protocol, runtime_checkable

from .inference import check_positive_int
from .records import (
    as_record, check_ignore_labels, check_window_args, decode_word_pairs, finish, is_dataset, merge_words, named, pieces,
    plan, records_from_lists, row_record, window_rows,
)

PROGRESS_FROM = 256  # inputs in one call from which a progress bar is shown (a list; streams: on request)
SINGLE_INPUT_ONLY = ("image, context and pairs keywords go with a single input; give a batch as records with "
                     "those fields")


@runtime_checkable
class Runner(Protocol):
    """What the engine calls: a model (PyTorch `torch_runner.TorchRunner`, ONNX Runtime
    `shapca_serving.onnx_predictor.OnnxRunner`) on window rows."""

    task: str  # "ner", "mre" or "mjere"
    id2label: dict  # NER: tag id -> label
    label_groups: dict | None  # word pairs: group name -> labels (None for NER)
    group_sizes: list  # word pairs: labels per group
    max_words: int  # the model's and processor's word limit
    subword_budget: int  # subwords of a window's text
    allow_private: bool  # image URLs may resolve to private addresses (False: the demo app)
    progress_name: str  # the progress bar's label
    context_generator: str | None  # the model id that writes contexts for images (None: none)

    def check(self) -> None:
        """Raise if the model cannot predict (e.g. NER: a label per CRF tag); the engine calls
        it once, when it is built."""

    def subword_counts(self, words: list[str]) -> list[int]:
        """Subwords of each word (at least 1)."""

    def tag_pos(self, word_lists: list[list[str]]) -> list[list[str]]:
        """Universal POS tags of each word list, as `run` would give them."""

    def add_contexts(self, records: list[dict], generate_contexts: bool) -> None:
        """Fill or check the contexts of records with an image and no context (a context
        generator, or an error naming the input)."""

    def run(self, rows: list[dict], **options) -> dict:
        """The model on window rows `{"words", "context", "image", "pos_tags", "_name"}` (rows
        whose `pos_tags` is None are tagged here): NER `{"tags": (rows, n), "marginals": (rows,
        n, labels)}`, word pairs `{"probs": (rows, n, n, labels), "labels": (rows, groups, n,
        n)}` (NumPy)."""


RUNNER_MEMBERS = (*Runner.__annotations__, *(name for name, value in vars(Runner).items()
                                              if callable(value) and not name.startswith("_")))


def is_stream(inputs) -> bool:
    """A generator, an iterator, a `datasets.Dataset`, or a torch-style dataset (`KeyDataset`:
    `__getitem__` and `__len__` but not a list)."""
    if isinstance(inputs, (str, dict, list, tuple, bytes)):
        return False
    return (isinstance(inputs, (types.GeneratorType, collections.abc.Iterator)) or is_dataset(inputs)
            or (hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__")))


def named_inputs(inputs, overrides: dict | None = None):
    """`(kind, items)` of a call: `"single"` and one named item, `"list"` and a list of named
    items, `"stream"` and a generator of named items. `overrides` (`image`, `context`, `pairs`
    given as keywords) go with a single input only."""
    given = any(v is not None for v in (overrides or {}).values())
    if isinstance(inputs, (str, dict)):
        return "single", named(inputs, 0)
    if given:
        raise ValueError(SINGLE_INPUT_ONLY)
    if isinstance(inputs, (list, tuple)):
        return "list", [named(item, i) for i, item in enumerate(inputs)]
    if is_stream(inputs):
        rows = is_dataset(inputs)
        return "stream", (named(row_record(item) if rows else item, i) for i, item in enumerate(inputs))
    raise TypeError(f"expected a string, a record, a list of those, a generator or a dataset, got "
                    f"{type(inputs).__name__}")


def length_order(items: list) -> list[int]:
    """Positions of named items from the shortest to the longest (words of the text or word
    list plus words of the context; ties keep input order). Batches of similar lengths pad
    little: on the Twitter-2015 test split at batch 32, 41 % more subwords than the texts hold
    in input order, 3 % sorted (docs/benchmarks.md, "round two")."""
    def length(item) -> int:
        if not isinstance(item, dict):
            return 0
        words, text, context = item.get("words"), item.get("text"), item.get("context")
        n = len(words) if isinstance(words, (list, tuple)) else len(text.split()) if isinstance(text, str) else 0
        return n + (len(context.split()) if isinstance(context, str) else 0)

    return sorted(range(len(items)), key=lambda i: length(items[i]))


def in_input_order(order, found: list) -> list:
    """`found[k]` is the result of input `order[k]`: the results by input position."""
    out = [None] * len(found)
    for i, result in zip(order, found):
        out[i] = result
    return out


def tagged_ahead(batches: Iterable, tag) -> Iterator[tuple]:
    """`(batch, future of tag(batch))` for each batch, `tag` run in a thread and submitted one
    batch ahead: batch k+1 is read and its tagging started before batch k is handed on, so it
    is tagged while the caller runs the model on batch k."""
    with ThreadPoolExecutor(1, thread_name_prefix="shapca-pos") as pool:
        pending = None
        for batch in batches:
            ahead = (batch, pool.submit(tag, batch))
            if pending is not None:
                yield pending
            pending = ahead
        if pending is not None:
            yield pending


def check_options(batch_size=None, window=None, stride=None, ignore_labels=None) -> frozenset:
    """The checks of a call's options (one message each, whatever the backend); returns the
    labels to leave out."""
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    check_window_args(window, stride)
    return check_ignore_labels(ignore_labels)


class InferenceEngine:
    """Records for texts, images and contexts from any runner (see the module docstring)."""

    def __init__(self, runner: Runner):
        missing = [name for name in RUNNER_MEMBERS if not hasattr(runner, name)]
        if missing:
            raise TypeError(f"{type(runner).__name__} is not an inference runner: it lacks {sorted(missing)}")
        runner.check()
        self.runner = runner

    @property
    def task(self) -> str:
        return self.runner.task

    # ------------------------------------------------------------------ steps
    def window_size(self, window: int | None = None) -> int:
        """Words per window: `window`, at most the runner's `max_words`."""
        return min(window or self.runner.max_words, self.runner.max_words)

    def prepare(self, item, name: str | None = None, window: int | None = None, stride: int | None = None,
                **overrides) -> dict:
        """One checked record with its windows; errors name the input: `name`, else the record's
        own `_name`."""
        if not isinstance(item, dict):
            item = named(item, 0)  # a string or a word list as a record
        if name is None:
            name = item.get("_name", "input") if isinstance(item, dict) else "input"
        elif isinstance(item, dict):
            item = {**item, "_name": name}
        record = as_record(item, name, self.task, allow_private=self.runner.allow_private,
                           **overrides)
        plan(record, self.task, self.window_size(window), stride, self.runner.subword_budget,
             self.runner.subword_counts)
        return record

    def tag_rows(self, records: list[dict]) -> dict[int, list[str]]:
        """POS tags of the window rows of `records` that bring none, by row index (`run_batch`'s
        `row_tags`): the runner's tagger on the word lists `run` would tag, in one call."""
        rows = window_rows(records, pieces(records))
        missing = [k for k, row in enumerate(rows) if row["pos_tags"] is None]
        return dict(zip(missing, self.runner.tag_pos([rows[k]["words"] for k in missing]))) if missing else {}

    def run_batch(self, records: list[dict], generate_contexts: bool = True, row_tags=None, **options) -> list[dict]:
        """The model on every window of `records` at once; per input the values `finish` reads
        (`{}` for an input without words). `row_tags`: `tag_rows(records)` (or its future)."""
        self.runner.add_contexts([r for r in records if r["windows"]], generate_contexts)
        parts = pieces(records)
        if not parts:
            return [{} for _ in records]
        rows = window_rows(records, parts)
        if row_tags is not None:
            for k, tags in (row_tags.result() if hasattr(row_tags, "result") else row_tags).items():
                rows[k]["pos_tags"] = tags
        out = self.runner.run(rows, **options)
        if self.task == "ner":
            tags, marginals = merge_words(records, parts, out["tags"], out["marginals"])
            return [{"tags": tags[i], "marginals": marginals[i]} for i in range(len(records))]
        decoded = decode_word_pairs(self.task, records, parts, out["probs"], out["labels"], self.runner.label_groups,
                                    self.runner.group_sizes)
        return [{"decoded": value} for value in decoded]

    def finish(self, record: dict, values: dict, ignore_labels: frozenset = frozenset()):
        """One input's records from its values (`run_batch`)."""
        return finish(self.task, record, self.runner.id2label, self.runner.label_groups, ignore_labels, **values)

    def predict_batch(self, items: list, overrides: dict | None = None, window=None, stride=None,
                      ignore_labels: frozenset = frozenset(), row_tags=None, **options) -> list:
        """Named items of one model batch to their records."""
        records = [self.prepare(item, window=window, stride=stride, **(overrides or {})) for item in items]
        return self._finish_batch(records, row_tags, ignore_labels, options)

    def _finish_batch(self, records: list[dict], row_tags, ignore_labels: frozenset, options: dict) -> list:
        values = self.run_batch(records, row_tags=row_tags, **options)
        return [self.finish(r, v, ignore_labels) for r, v in zip(records, values)]

    def _ahead(self, chunks: Iterator[list], window=None, stride=None, ignore_labels: frozenset = frozenset(),
               **options) -> Iterator[list]:
        """Each chunk of named items (of a list: the call returns all records or raises) to its
        records, the next chunk prepared and POS-tagged (in a thread) while the model runs on
        this one."""
        prepared = ([self.prepare(item, window=window, stride=stride) for item in items] for items in chunks)
        for records, row_tags in tagged_ahead(prepared, self.tag_rows):
            yield self._finish_batch(records, row_tags, ignore_labels, options)

    # ------------------------------------------------------------------ calls
    def __call__(self, inputs, *, batch_size: int = 32, image=None, context=None, pairs=None, window: int | None = None,
                 stride: int | None = None, ignore_labels: Iterable[str] | None = None,
                 show_progress: bool | None = None, sort_by_length: bool = True, **options):
        """A string or record gives its records; a list gives a list; a stream (generator,
        `datasets.Dataset`) gives a lazy iterator. `sort_by_length`: a list of more than one
        batch is batched in order of length (`length_order`), the records come back in input
        order. `options` go to the runner (`generate_contexts`, and the PyTorch runner's
        `autocast_dtype`, `compile`)."""
        ignore = check_options(batch_size, window, stride, ignore_labels)
        overrides = {"image": image, "context": context, "pairs": pairs}
        kind, items = named_inputs(inputs, overrides)
        settings = dict(window=window, stride=stride, ignore_labels=ignore, **options)
        if kind == "single":
            return self.predict_batch([items], overrides, **settings)[0]
        if kind == "list":
            if len(items) <= batch_size:
                chunks = [self.predict_batch(items, **settings)]
                order = range(len(items))
            else:
                order = length_order(items) if sort_by_length else range(len(items))
                chunks = self._ahead(([items[i] for i in order[start:start + batch_size]]
                                      for start in range(0, len(items), batch_size)), **settings)
            show = len(items) >= PROGRESS_FROM if show_progress is None else show_progress
            return in_input_order(order, [record for chunk in _progress(chunks, show, len(items), self.runner)
                                          for record in chunk])
        return self._stream(items, batch_size, show_progress, settings)

    def _stream(self, items: Iterator, batch_size: int, show_progress, settings: dict):
        chunk = []
        for item in items:
            chunk.append(item)
            if len(chunk) == batch_size:
                yield from self.predict_batch(chunk, **settings)
                chunk = []
        if chunk:
            yield from self.predict_batch(chunk, **settings)

    def predict(self, inputs, images=None, contexts=None, pairs=None, batch_size: int = 32,
                is_split_into_words: bool | None = None, **kwargs):
        """`model.predict`'s signature: an input or a list of them (strings or word lists) with
        per-input lists of images, contexts and pairs."""
        records, single = records_from_lists(inputs, images, contexts, pairs, is_split_into_words)
        outputs = self(records, batch_size=batch_size, **kwargs)
        return outputs[0] if single else outputs


def _progress(chunks, show: bool, total: int, runner):
    """Batches of records with a progress bar counting inputs (`show`)."""
    if not show:
        yield from chunks
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=runner.progress_name, unit="input") as bar:
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk


__all__ = ["InferenceEngine", "RUNNER_MEMBERS", "Runner", "PROGRESS_FROM", "check_options", "in_input_order", "is_stream", "length_order",
           "named_inputs", "tagged_ahead"]
