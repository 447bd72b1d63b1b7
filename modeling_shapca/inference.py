"""Inference helpers of the pipeline: tweet tokenisation with character offsets, BIO tags ->
entity spans, and the checks of what a caller passes (images, pairs, batches)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import regex

from .limits import MAX_RELATIONS

# Tokens like the Twitter corpora's: URLs, @mentions, #hashtags, words (with inner ' or -),
# numbers, and single punctuation marks (or symbols, emoji sequences). A word character keeps
# the combining marks that follow it (Devanagari vowel signs and viramas, Thai vowels and tone
# marks, Arabic harakat, NFD accents), so no word is cut inside a grapheme cluster. Invisible
# characters are never words and never start one: format characters (category Cf: zero-width
# space and joiners, bidi marks and overrides), the combining grapheme joiner U+034F and the
# Hangul fillers U+115F, U+1160, U+3164, U+FFA0 (letters to Unicode, blank on screen). Inside a
# word they stay (an emoji ZWJ sequence, a Persian word with a zero-width non-joiner).
INVISIBLE = r"\p{Cf}\u034F\u115F\u1160\u3164\uFFA0"
_WORD = rf"(?![{INVISIBLE}])\w[\w\p{{M}}]*"
_TOKEN = regex.compile(rf"https?://\S+|[@#]?{_WORD}(?:['’\-]{_WORD})*|(?![\w\s{INVISIBLE}])\X")


def check_text(value: str, name: str) -> str:
    """`value` as is, unless it holds a lone surrogate (not Unicode text: no tokenizer, file or
    JSON line takes it): a `ValueError` naming the input and the position."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name}: a lone surrogate {value[error.start]!r} at character {error.start} (not valid "
                         "Unicode text; decode the source with errors='replace' or drop it)") from None
    return value


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


def load_image(image, name: str, allow_private: bool = True):
    """An RGB PIL image from a PIL image (any mode; 16-bit and float modes scaled to 8 bits by
    their range), a file path, an http(s) URL or a binary file object (`io.BytesIO(data)` for an
    image file's bytes); `None` stays `None`. URLs are fetched within
    the limits of `limits.py` (timeouts, byte cap, and with `allow_private=False` no loopback,
    private or link-local address); an image is measured before it is decoded
    (`MAX_IMAGE_PIXELS`, `MAX_ASPECT_RATIO`). An image read from bytes carries their sha256 in
    `image.info["shapca_sha256"]` (the context cache's key). Anything unreadable is a `ValueError`
    naming the input and the reason."""
    if image is None:
        return None
    import hashlib
    import io

    from PIL import Image, UnidentifiedImageError

    from .context_cache import DIGEST_INFO
    from .limits import check_image_size, fetch_url, to_rgb

    if isinstance(image, Image.Image):
        try:
            check_image_size(*image.size)
            return to_rgb(image)
        except (OSError, ValueError) as error:
            raise ValueError(f"{name}: the image cannot be used: {error}") from error
    file_like = hasattr(image, "read")  # an open binary file, or io.BytesIO of an image file's bytes
    if file_like or isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        source = "<file object>" if file_like else image.decode() if isinstance(image, bytes) else str(image)
        shown = source[:200]
        try:
            if file_like:  # read here: the caller's file object is left open
                data = image.read()
            elif source.startswith(("http://", "https://")):
                data = fetch_url(source, allow_private=allow_private)
            elif "://" in source or source.startswith("data:"):
                raise ValueError("only http(s) URLs and file paths are read")
            else:
                path = Path(source)
                if not path.is_file():
                    raise ValueError(f"no such file ({'relative to ' + str(Path.cwd()) if not path.is_absolute() else 'absolute path'})")
                data = path.read_bytes()
            with io.BytesIO(data) as handle, warnings.catch_warnings():  # PIL warns before it refuses a huge image
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(handle) as opened:
                    check_image_size(*opened.size)
                    opened.load()
                    rgb = to_rgb(opened)
            rgb.info[DIGEST_INFO] = hashlib.sha256(data).hexdigest()  # the context cache's key (`context_cache.py`)
            return rgb
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as error:
            reason = str(error) if type(error) is ValueError else f"{type(error).__name__}: {error}"
            raise ValueError(f"{name}: image {shown!r} cannot be read: {reason}") from error
    raise TypeError(f"{name}: 'image' must be a PIL image, a path, a URL, a binary file object or None, got "
                    f"{type(image).__name__}")


def check_positive_int(value, name: str) -> int:
    """A count given by the caller (batch sizes): a positive int, not a bool, float or string."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def is_int_pair(value) -> bool:
    """A list or tuple of two ints (not bools)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def is_word_span(span, n_words: int) -> bool:
    """A word span `[start, end)`: two ints (not bools) with `0 <= start < end <= n_words`. The
    one check of spans everywhere (pipeline pairs, raw files, datasets columns)."""
    return is_int_pair(span) and 0 <= span[0] < span[1] <= n_words


def check_pairs(pairs, n_words: int, name: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """MRE candidate pairs: a list of `[head, tail]`, each a word span `[start, end)` of ints
    with `0 <= start < end <= n_words`."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise TypeError(f"{name}: 'pairs' must be a list of [head, tail] word spans, got {type(pairs).__name__}")
    if len(pairs) > MAX_RELATIONS:
        raise ValueError(f"{name}: {len(pairs):,} pairs, more than MAX_RELATIONS={MAX_RELATIONS:,} per input; split "
                         "them over several inputs")
    checked = []
    for p, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}: pair {p} must be [head, tail] with two word spans [start, end), got {pair!r}")
        spans = []
        for role, span in zip(("head", "tail"), pair):
            if not is_int_pair(span):
                raise ValueError(f"{name}: pair {p} {role} must be a word span [start, end) of two ints, got {span!r}")
            if not is_word_span(span, n_words):
                raise ValueError(f"{name}: pair {p} {role} span {list(span)} is not inside the {n_words} words "
                                 "(spans are [start, end) word indices)")
            spans.append((span[0], span[1]))
        checked.append(tuple(spans))
    return checked


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
