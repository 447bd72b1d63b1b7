"""Inference helpers shared by the task heads: tweet tokenisation with character offsets,
BIO tags -> entity spans, and input checking for `predict`."""

from __future__ import annotations

import re
from typing import Sequence

# Tokens like the Twitter corpora's: URLs, @mentions, #hashtags, words (with inner ' or -),
# numbers, and single punctuation marks.
_TOKEN = re.compile(r"https?://\S+|[@#]?\w+(?:['’\-]\w+)*|[^\w\s]", re.UNICODE)


def tokenize_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Split a raw string into words and their `[start, end)` character offsets."""
    words, offsets = [], []
    for match in _TOKEN.finditer(text):
        words.append(match.group())
        offsets.append(match.span())
    return words, offsets


def join_with_offsets(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """`" ".join(words)` and each word's offsets in it (for inputs given as word lists)."""
    offsets, position = [], 0
    for word in words:
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), offsets


def bio_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """IOB2 tags -> `(start_word, end_word_exclusive, type)`; an `I-X` that does not continue
    an `X` entity opens one (conlleval reading, matching `metrics/mner_f1`)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and start is not None and label == kind
        if start is not None and not continues:
            spans.append((start, i, kind))
            start = kind = None
        if prefix in ("B", "I") and not continues:
            start, kind = i, label
    return spans


def normalize_inputs(inputs, is_split_into_words: bool | None = None) -> tuple[list, bool]:
    """A single text / word list -> a batch of one. Returns (batch, was_single).

    A flat list of strings is read as one word list unless an item contains whitespace (then
    it is a batch of texts); `is_split_into_words` forces either reading.
    """
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(w, str) for w in inputs):
        as_words = not _looks_like_texts(inputs) if is_split_into_words is None else is_split_into_words
        if as_words:
            return [list(inputs)], True
        return list(inputs), False
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"predict takes a string, a list of words, or a list of those; got {type(inputs).__name__}")
    for i, item in enumerate(inputs):
        if not isinstance(item, str) and not (isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)):
            raise TypeError(f"input {i}: expected a string or a list of strings, got {type(item).__name__}")
    return list(inputs), False


def _looks_like_texts(items: Sequence[str]) -> bool:
    """A list of strings is a batch of texts when any item contains whitespace."""
    return any(any(c.isspace() for c in item) for item in items)
