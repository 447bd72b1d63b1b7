"""Shap-CA as a spaCy pipeline component, for NER, relation extraction (MRE) and joint
extraction (MJERE). Registered under the `spacy_factories` entry point, so after
`pip install shapca` no import is needed:

    import spacy
    nlp = spacy.blank("en")                       # or spacy.load("en_core_web_sm"): its POS tags are used
    nlp.add_pipe("shapca", config={"model": "path/or/hub-id"})
    doc = nlp("Kevin Durant enters Oracle Arena")
    doc.ents, [e._.score for e in doc.ents], doc.spans["shapca"]
    for doc, _ in nlp.pipe([(text, {"image": "tweet.jpg", "context": "A player ..."})], as_tuples=True): ...

Config (defaults): `model` (a folder or Hub id; required), `backend` ("torch", or "onnx": the
torch-free `ShapCAOnnxPredictor` on the folder's `onnx/` files), `quantized` (False; with
"onnx", the int8 graph), `batch_size` (32), `window` / `stride` (None: the model's; long Docs are
read as windows), `device` (None: where torch puts the model; e.g. "cuda:0"), `overwrite_ents`
(False: entities already on the Doc win overlaps, as spaCy's `entity_ruler` does),
`trust_remote_code` (False: the model is built from the installed package's classes, as the CLI
does), `spans_key` ("shapca"). `add_pipe` checks at once that `model` is a Shap-CA model (its
config.json), and the weights load once, on the first Doc.

What lands on the Doc:
* NER: `doc.ents` (merged with the Doc's entities: `overwrite_ents` decides overlaps; the
  model's own overlapping spans are resolved as `spacy.util.filter_spans` does), each entity's
  score on `span._.score`; every predicted span (possibly overlapping) in `doc.spans["shapca"]`.
* MRE and MJERE: `doc._.relations`, a list of `{"head": Span, "tail": Span, "label", "score"}`,
  computed by a getter from token offsets stored in `doc.user_data` (Spans cannot be
  serialized; `DocBin` and `n_process` serialize Docs). MJERE also sets the entities. MRE
  classifies the pairs of `doc._.relation_pairs` (a list of `(head Span, tail Span)`, stored as
  token offsets), or, when none are given, every ordered pair of the Doc's entities.
* Images and contexts: `doc._.image` (a path, URL, bytes of an image file or a PIL image) and
  `doc._.context` (a string), set before the component runs, or given per text through
  `nlp.pipe([(text, {"image": ..., "context": ...})], as_tuples=True)` (spaCy hands that dict
  to the component as `Doc._context`). URL fetches and decodes keep the project's limits
  (`modeling_shapca/limits.py`).

The model's words are the Doc's tokens (whitespace tokens left out), so entities are exact
character spans of the Doc. When the pipeline already tagged the Doc (every token has
`token.pos_`, e.g. `en_core_web_sm`'s tagger and attribute ruler ran before), those tags are
the model's POS input; otherwise the model tags as its processor does.

Saving: `nlp.to_disk` stores the component's config, i.e. the *reference* to the model (its
folder or Hub id), not the model files; `spacy.load` loads the model from that reference again.
Give an absolute folder (or a Hub id) when the pipeline is loaded from elsewhere.
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterable, Iterator

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

RELATIONS_KEY = "shapca_relations"  # doc.user_data: [[head start, head end, tail start, tail end, label, score]]
PAIRS_KEY = "shapca_relation_pairs"  # doc.user_data: [[head start, head end, tail start, tail end]] (token offsets)
CONTEXT_KEYS = ("image", "context")  # what `nlp.pipe(..., as_tuples=True)` may give per text
DEFAULT_CONFIG = {"backend": "torch", "quantized": False, "batch_size": 32, "window": None, "stride": None,
                  "device": None, "overwrite_ents": False, "trust_remote_code": False, "spans_key": "shapca"}


def _get_relations(doc: Doc) -> list[dict]:
    return [{"head": doc[hs:he], "tail": doc[ts:te], "label": label, "score": score}
            for hs, he, ts, te, label, score in doc.user_data.get(RELATIONS_KEY, [])]


def _get_pairs(doc: Doc) -> list[tuple[Span, Span]]:
    return [(doc[hs:he], doc[ts:te]) for hs, he, ts, te in doc.user_data.get(PAIRS_KEY, [])]


def _set_pairs(doc: Doc, pairs) -> None:
    stored = []
    for k, pair in enumerate(pairs or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, Span) for s in pair)):
            raise ValueError(f"doc._.relation_pairs: pair {k} must be (head Span, tail Span), got {pair!r}")
        if any(s.doc is not doc for s in pair):
            raise ValueError(f"doc._.relation_pairs: pair {k} holds a Span of another Doc")
        stored.append([pair[0].start, pair[0].end, pair[1].start, pair[1].end])
    doc.user_data[PAIRS_KEY] = stored


def register_extensions() -> None:
    """The Doc and Span extensions the component writes and reads (once per process)."""
    if not Span.has_extension("score"):
        Span.set_extension("score", default=None)
    if not Doc.has_extension("image"):
        Doc.set_extension("image", default=None)
    if not Doc.has_extension("context"):
        Doc.set_extension("context", default=None)
    if not Doc.has_extension("relations"):
        Doc.set_extension("relations", getter=_get_relations)
    if not Doc.has_extension("relation_pairs"):
        Doc.set_extension("relation_pairs", getter=_get_pairs, setter=_set_pairs)


def check_model(model) -> dict:
    """The config.json of a Shap-CA model folder or Hub id (`loading.model_config`), a clear
    error naming `model` otherwise (nothing else is loaded)."""
    from .loading import model_config

    try:
        return model_config(model)
    except ValueError as error:
        raise ValueError(f"shapca: {error}") from None


_CONSENT: list[str] = []  # models whose code the caller allows to run, inside `remote_code_allowed`


@contextlib.contextmanager
def remote_code_allowed(*models: str):
    """The caller's consent to run the code shipped with `models` (folders or Hub ids, as the
    component's `model` names them), for pipelines built inside the block:

        with remote_code_allowed("path/or/hub-id"):
            nlp = spacy.load("my_pipeline")           # its config says trust_remote_code = true

    A pipeline's `config.cfg` (or any config) saying `trust_remote_code = true` is not consent:
    without this block the component refuses to be built."""
    _CONSENT.extend(str(m) for m in models)
    try:
        yield
    finally:
        for model in models:
            _CONSENT.remove(str(model))


@Language.factory("shapca", default_config=DEFAULT_CONFIG)
def make_shapca(nlp: Language, name: str, model: str, backend: str, quantized: bool, batch_size: int,
                window: int | None, stride: int | None, device: str | None, overwrite_ents: bool,
                trust_remote_code: bool, spans_key: str) -> "ShapCAComponent":
    """The `shapca` factory (see the module docstring)."""
    return ShapCAComponent(nlp, name, model=model, backend=backend, quantized=quantized, batch_size=batch_size,
                           window=window, stride=stride, device=device, overwrite_ents=overwrite_ents,
                           trust_remote_code=trust_remote_code, spans_key=spans_key)


class ShapCAComponent:
    """A Shap-CA model in a spaCy pipeline (see the module docstring)."""

    def __init__(self, nlp: Language, name: str = "shapca", *, model: str, backend: str = "torch",
                 quantized: bool = False, batch_size: int = 32, window: int | None = None, stride: int | None = None,
                 device: str | None = None, overwrite_ents: bool = False, trust_remote_code: bool = False,
                 spans_key: str = "shapca"):
        from modeling_shapca.engine import check_options

        from .loading import check_serving_options

        config = check_model(model)
        try:  # every setting checked here, at add_pipe / spacy.load, in the engine's and loader's words
            check_options(batch_size, window, stride)
            if window is None and stride is not None and stride >= config.get("max_words", stride + 1):
                raise ValueError(f"stride={stride} must be smaller than the model's window of {config['max_words']} "
                                 "words")
            check_serving_options(model, backend, quantized, device, trust_remote_code)
            if not isinstance(overwrite_ents, bool):
                raise TypeError(f"overwrite_ents must be True or False, got {overwrite_ents!r}")
            if not isinstance(spans_key, str) or not spans_key:
                raise TypeError(f"spans_key must be a non-empty string, got {spans_key!r}")
        except (OSError, TypeError, ValueError) as error:
            raise type(error)(f"shapca: {error}") from None
        if trust_remote_code and model not in _CONSENT:
            raise ValueError(f"shapca: the component's config asks to run the code shipped with {model!r} "
                             "(trust_remote_code = true), and a config is not consent: build the pipeline inside "
                             f"`with shapca_serving.spacy_component.remote_code_allowed({model!r}):` (docs/spacy.md)")
        self.name, self.model, self.backend, self.quantized = name, model, backend, quantized
        self.batch_size, self.window, self.stride, self.device = batch_size, window, stride, device
        self.overwrite_ents, self.trust_remote_code, self.spans_key = overwrite_ents, trust_remote_code, spans_key
        self.task = config["task"]
        self._engine = None
        register_extensions()

    # ------------------------------------------------------------------ the model, on first use
    @property
    def engine(self):
        if self._engine is None:
            from .loading import load_engine

            self._engine = load_engine(self.model, self.backend, self.quantized, self.device, self.trust_remote_code)
            self.task = self._engine.task
        return self._engine

    # ------------------------------------------------------------------ spaCy's calls
    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, docs: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        """Docs through the model `batch_size` at a time (one model batch per chunk)."""
        chunk: list[Doc] = []
        for doc in docs:
            chunk.append(doc)
            if len(chunk) == (batch_size or self.batch_size):
                yield from self._predict(chunk)
                chunk = []
        if chunk:
            yield from self._predict(chunk)

    # ------------------------------------------------------------------ Docs <-> records
    def _predict(self, docs: list[Doc]) -> list[Doc]:
        inputs, todo = [], []
        for k, doc in enumerate(docs):
            record, tokens = self._record(doc, k)
            if record is not None:
                inputs.append(record)
                todo.append((doc, tokens, record["words"]))
            else:
                self._annotate(doc, [], [], [])  # no words (or no pair to classify): empty results
        if inputs:
            outputs = self.engine(inputs, batch_size=self.batch_size, window=self.window, stride=self.stride,
                                  show_progress=False)
            for (doc, tokens, words), output in zip(todo, outputs):
                self._set(doc, tokens, words, output)
        return docs

    def _record(self, doc: Doc, index: int) -> tuple[dict | None, list[int]]:
        """The Doc as an input record and the token index of each word; `(None, word_tokens)`
        when there is nothing to predict. The words are the Doc's tokens as the pipeline would
        read their text: a token merged from several (`merge_entities`, `doc.retokenize()`)
        gives the words it holds, and whitespace or invisible characters alone are no word."""
        context = doc._context if isinstance(getattr(doc, "_context", None), dict) else {}
        unknown = sorted(set(context) - set(CONTEXT_KEYS))
        if unknown:
            raise ValueError(f"doc {index}: unknown key(s) {unknown} in the context given with nlp.pipe(..., "
                             f"as_tuples=True); the component reads {list(CONTEXT_KEYS)}")
        for key in CONTEXT_KEYS:
            if context.get(key) is not None:
                setattr(doc._, key, context[key])
        words, word_tokens = [], []
        for token in doc:
            for word in token_words(token.text):
                words.append(word)
                word_tokens.append(token.i)
        if not words:
            return None, word_tokens
        record = {"words": words, "_name": f"doc {index}"}
        image = doc._.image
        if isinstance(image, (bytes, bytearray)):
            image = io.BytesIO(bytes(image))
        if image is not None:
            record["image"] = image
        if doc._.context is not None:
            record["context"] = doc._.context
        if doc.has_annotation("POS", require_complete=True):
            record["pos_tags"] = [doc[i].pos_ for i in word_tokens]
        if self.task == "mre":
            pairs = doc.user_data.get(PAIRS_KEY)
            if pairs is None:  # every ordered pair of the Doc's entities
                pairs = [[h.start, h.end, t.start, t.end] for h in doc.ents for t in doc.ents if h != t]
            spans = []
            for hs, he, ts, te in pairs:
                head, tail = _words(word_tokens, hs, he), _words(word_tokens, ts, te)
                if head is None or tail is None:
                    raise ValueError(f"doc {index}: a relation pair spans only whitespace tokens")
                spans.append([head, tail])
            if not spans:
                return None, word_tokens
            record["pairs"] = spans
        return record, word_tokens

    def _span(self, doc: Doc, word_tokens: list[int], word_starts: dict, item: dict, label: str) -> Span:
        """The Doc's span of a record's character offsets (into the words joined by spaces): the
        tokens holding its first and last word, whole."""
        first = word_starts[item["start"]]
        last = word_starts[item["end"] - len(item["word"].split(" ")[-1])]
        return Span(doc, word_tokens[first], word_tokens[last] + 1, label=label)

    def _set(self, doc: Doc, word_tokens: list[int], words: list[str], output) -> None:
        starts, position = {}, 0
        for w, word in enumerate(words):
            starts[position] = w
            position += len(word) + 1
        if self.task == "mre":
            relations = [(self._span(doc, word_tokens, starts, r["head"], ""),
                          self._span(doc, word_tokens, starts, r["tail"], ""), r["label"], r["score"]) for r in output]
            self._annotate(doc, [], [], relations)
            return
        entities = output if self.task == "ner" else output["entities"]
        spans = [self._span(doc, word_tokens, starts, e, e["entity_group"]) for e in entities]
        scores = [e["score"] for e in entities]
        relations = [] if self.task == "ner" else [
            (self._span(doc, word_tokens, starts, r["head"], r["head"]["entity_group"]),
             self._span(doc, word_tokens, starts, r["tail"], r["tail"]["entity_group"]), r["label"], r["score"])
            for r in output["relations"]]
        self._annotate(doc, spans, scores, relations)

    def _annotate(self, doc: Doc, spans: list[Span], scores: list[float], relations: list) -> None:
        for span, score in zip(spans, scores):
            span._.score = score
        if self.task != "mre":
            doc.spans[self.spans_key] = spans
            doc.ents = merge_entities(list(doc.ents), spans, self.overwrite_ents)
            for span, score in zip(spans, scores):  # the Doc's entity spans carry the scores too
                span._.score = score
        if self.task != "ner":
            doc.user_data[RELATIONS_KEY] = [[h.start, h.end, t.start, t.end, label, float(score)]
                                            for h, t, label, score in relations]

    # spaCy's serialization: the reference to the model lives in the component's config.
    def to_disk(self, path, *, exclude=()):
        return None

    def from_disk(self, path, *, exclude=()):
        return self


def token_words(text: str) -> list[str]:
    """The words of one token's text: its whitespace-separated pieces that hold more than
    invisible characters (the pipeline's tokenizer never makes a word of those either)."""
    import regex

    from modeling_shapca.inference import INVISIBLE  # (here: spaCy imports this module for every pipeline)

    return [piece for piece in text.split() if not regex.fullmatch(f"[{INVISIBLE}]+", piece)]


def _words(word_tokens: list[int], start: int, end: int) -> list[int] | None:
    """The word span of tokens `[start, end)` (tokens of whitespace alone have no word)."""
    words = [w for w, i in enumerate(word_tokens) if start <= i < end]
    return [words[0], words[-1] + 1] if words else None


def merge_entities(existing: list[Span], predicted: list[Span], overwrite: bool) -> list[Span]:
    """The Doc's entities after the model's: the predicted spans without their own overlaps
    (`filter_spans`: longest first), then merged with the existing entities, the existing ones
    winning overlaps unless `overwrite` (spaCy's `entity_ruler` rule)."""
    ours = filter_spans(predicted)

    def free(span, others):
        return all(span.end <= o.start or span.start >= o.end for o in others)

    if overwrite:
        kept = ours + [e for e in existing if free(e, ours)]
    else:
        kept = existing + [s for s in ours if free(s, existing)]
    return sorted(kept, key=lambda s: s.start)


__all__ = ["ShapCAComponent", "check_model", "make_shapca", "merge_entities", "register_extensions", "remote_code_allowed"]
