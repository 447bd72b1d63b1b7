"""The processor's encoding of a batch, without torch or transformers: the rules of
`ShapCAProcessor` (see its module docstring) as functions of a tokenizer, an image transform
and a POS tagger, so the PyTorch processor and the ONNX Runtime predictor build identical
inputs.

The tokenizer is either a transformers tokenizer or `tokenization.FastTokenizer` (the
`tokenizers` library alone); both are called as `tokenizer(words, [contexts],
is_split_into_words=True, add_special_tokens=..., truncation=..., max_length=...)` and give
`["input_ids"]`, `word_ids(i)`, `sequence_ids(i)` and (BERT) `["token_type_ids"]`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .pos import pos_to_ids
from .grids import IGNORE_INDEX


def round_up(length: int, multiple: int | None) -> int:
    """`length` padded up to a multiple (fixed shape buckets for captured inference)."""
    return length if not multiple else -(-length // multiple) * multiple


def check_words(words, max_words: int) -> list[list[str]]:
    if isinstance(words, str):
        raise TypeError("`words` must be pre-tokenised (a list of word lists), got a string")
    if isinstance(words, (list, tuple)) and words and isinstance(words[0], str):
        words = [words]
    if not isinstance(words, (list, tuple)) or not words:
        raise ValueError("`words` must be a non-empty list of word lists")
    checked = []
    for i, sentence in enumerate(words):
        if isinstance(sentence, str) or not isinstance(sentence, (list, tuple)):
            raise TypeError(f"example {i}: `words` must be a list of strings, got {type(sentence).__name__}")
        if len(sentence) == 0:
            raise ValueError(f"example {i} has no words: empty sentences cannot be labelled")
        if len(sentence) > max_words:
            raise ValueError(
                f"example {i} has {len(sentence)} words, more than max_words={max_words}; "
                "split the sentence or raise max_words (and the model's config.max_words)"
            )
        for j, word in enumerate(sentence):
            if not isinstance(word, str):
                raise TypeError(f"example {i}, word {j}: expected a string, got {type(word).__name__}")
            if word == "":
                raise ValueError(f"example {i}, word {j} is an empty string")
        checked.append(list(sentence))
    return checked


def _no_subword_words(tokenizer, words: list[list[str]], encoded) -> list[list[str]]:
    """The words with the unknown token in place of any word that yields no subword."""
    fixed = []
    for i, sentence in enumerate(words):
        seen = {w for w, s in zip(encoded.word_ids(i), encoded.sequence_ids(i)) if w is not None and s == 0}
        if len(seen) == len(sentence):
            fixed.append(sentence)
        else:
            fixed.append([w if j in seen else tokenizer.unk_token for j, w in enumerate(sentence)])
    return fixed


def _tokenize(tokenizer, words: list[list[str]], contexts: list[list[str]] | None, max_length: int):
    """The tokenizer's own (pair) encoding of pre-split words (and context words)."""
    kwargs = dict(is_split_into_words=True, add_special_tokens=True)
    if contexts is None:
        return tokenizer(words, truncation=False, **kwargs)
    return tokenizer(words, contexts, truncation="only_second", max_length=max_length, **kwargs)


def _row(encoded, i: int, n_words: int) -> dict:
    """Row `i` of an encoding as model inputs: ids, the text / context masks (from
    `sequence_ids()`), and each word's first subword (from `word_ids()`)."""
    word_ids, sequence_ids = encoded.word_ids(i), encoded.sequence_ids(i)
    ids = list(encoded["input_ids"][i])
    text_mask = [int(s == 0 and w is not None) for w, s in zip(word_ids, sequence_ids)]
    context_mask = [int(s == 1 and w is not None) for w, s in zip(word_ids, sequence_ids)]
    word_index = [0] * n_words
    for position in range(len(ids) - 1, -1, -1):  # first subword of each word
        if text_mask[position]:
            word_index[word_ids[position]] = position
    row = {"input_ids": ids, "text_mask": text_mask, "context_mask": context_mask, "word_index": word_index}
    if "token_type_ids" in encoded:
        row["token_type_ids"] = list(encoded["token_type_ids"][i])
    return row


def encode_text(tokenizer, words: list[list[str]], contexts: list[str], max_length: int) -> dict[str, list]:
    """`text [+ context]` through the tokenizer's own template (`[CLS] t [SEP] c [SEP]` for
    BERT, `<s> t </s></s> c </s>` for RoBERTa, ...); the context is truncated first. The
    texts are encoded once; only the examples with a context are encoded again as pairs."""
    single = _tokenize(tokenizer, words, None, max_length)
    fixed = _no_subword_words(tokenizer, words, single)
    if fixed != words:  # a word without subwords: encode it as the unknown token
        words, single = fixed, _tokenize(tokenizer, fixed, None, max_length)
    for i in range(len(words)):
        if len(single["input_ids"][i]) > max_length:
            raise ValueError(
                f"example {i}: the text alone is {len(single['input_ids'][i])} subwords with special tokens, "
                f"more than max_length={max_length}; split the sentence or raise max_length"
            )
    # A context needs room for itself and the pair's extra special tokens.
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    context_words = [c.split() for c in contexts]
    paired = [i for i in range(len(words))
              if context_words[i] and len(single["input_ids"][i]) - tokenizer.num_special_tokens_to_add() < room]
    rows = [_row(single, i, len(words[i])) for i in range(len(words))]
    if paired:
        pairs = _tokenize(tokenizer, [words[i] for i in paired], [context_words[i] for i in paired], max_length)
        for k, i in enumerate(paired):
            rows[i] = _row(pairs, k, len(words[i]))
    keys = ("input_ids", "text_mask", "context_mask", "word_index") + (
        ("token_type_ids",) if "token_type_ids" in rows[0] else ())
    return {key: [row.get(key, [0] * len(row["input_ids"])) for row in rows] for key in keys}


def encode_images(transform: Callable[[list], np.ndarray] | None, images, batch_size: int):
    """`pixel_values` `(batch, 3, H, W)` float32 (zeros where an example has no image, None when
    none has one) and `has_image`; `transform` turns RGB PIL images into an array."""
    if images is None:
        return None, [False] * batch_size
    if len(images) != batch_size:
        raise ValueError(f"got {len(images)} images for {batch_size} examples (use None for a missing image)")
    present = [i for i, image in enumerate(images) if image is not None]
    has_image = [image is not None for image in images]
    if not present:
        return None, has_image
    if transform is None:
        raise ValueError("this processor has no image processor: it cannot read images")
    from PIL import Image

    from .limits import to_rgb

    processed = np.asarray(transform([to_rgb(images[i]) if isinstance(images[i], Image.Image) else images[i]
                                      for i in present]))
    pixel_values = np.zeros((batch_size, *processed.shape[1:]), dtype=np.float32)
    pixel_values[present] = processed
    return pixel_values, has_image


def encode_labels(words, word_labels, label2id: Mapping[str, int] | None) -> list[list[int]]:
    if len(word_labels) != len(words):
        raise ValueError(f"got labels for {len(word_labels)} examples but {len(words)} word lists")
    encoded = []
    for i, (sentence, labels) in enumerate(zip(words, word_labels)):
        if len(labels) != len(sentence):
            raise ValueError(f"example {i}: {len(labels)} labels for {len(sentence)} words")
        row = []
        for label in labels:
            if isinstance(label, str):
                if label2id is None:
                    raise ValueError("string labels need `label2id` (e.g. model.config.label2id)")
                if label not in label2id:
                    raise ValueError(f"example {i}: unknown label {label!r}; known labels: {sorted(label2id)}")
                row.append(label2id[label])
            else:
                row.append(int(label))
        encoded.append(row)
    return encoded


def pad_grids(words, grids, n_words: int) -> np.ndarray:
    """Word-pair label grids `(groups, n_i, n_i)` per example -> `(batch, groups, n, n)`,
    -100 outside each sentence (see `grids.encode_mre` / `encode_mjere`)."""
    if len(grids) != len(words):
        raise ValueError(f"got pair labels for {len(grids)} examples but {len(words)} word lists")
    groups = len(grids[0])
    out = np.full((len(words), groups, n_words, n_words), IGNORE_INDEX, dtype=np.int64)
    for i, (sentence, grid) in enumerate(zip(words, grids)):
        grid = np.asarray(grid, dtype=np.int64)
        if grid.shape != (groups, len(sentence), len(sentence)):
            raise ValueError(f"example {i}: pair labels of shape {grid.shape}, expected {(groups, len(sentence), len(sentence))}")
        out[i, :, : len(sentence), : len(sentence)] = grid
    return out


def encode_batch(tokenizer, words, *, max_length: int, max_words: int, tag_pos: Callable, image_transform=None,
                 contexts: Sequence[str | None] | None = None, images=None, word_labels=None, pos_tags=None,
                 label2id: Mapping[str, int] | None = None, pair_labels=None, pad_to_multiple_of: int | None = None,
                 words_pad_to_multiple_of: int | None = None) -> dict:
    """A batch as a dict of lists / arrays: the inputs of the Shap-CA models (see
    `ShapCAProcessor.__call__`)."""
    words = check_words(words, max_words)
    batch_size = len(words)
    if contexts is None:
        contexts = [""] * batch_size
    if isinstance(contexts, str):
        contexts = [contexts]
    if len(contexts) != batch_size:
        raise ValueError(f"got {len(contexts)} contexts for {batch_size} examples")
    contexts = [c or "" for c in contexts]
    rows = encode_text(tokenizer, words, contexts, max_length)
    if pos_tags is None:
        pos_tags = tag_pos(words)
    if len(pos_tags) != batch_size or any(len(p) != len(w) for p, w in zip(pos_tags, words)):
        raise ValueError("`pos_tags` must give one tag per word of every example")

    seq_len = round_up(max(len(ids) for ids in rows["input_ids"]), pad_to_multiple_of)
    n_words = round_up(max(len(w) for w in words), words_pad_to_multiple_of)
    pad_id = tokenizer.pad_token_id or 0

    def pad(values, length, value):
        return [v + [value] * (length - len(v)) for v in values]

    data = {
        "input_ids": pad(rows["input_ids"], seq_len, pad_id),
        "attention_mask": pad([[1] * len(ids) for ids in rows["input_ids"]], seq_len, 0),
        "text_mask": pad(rows["text_mask"], seq_len, 0),
        "context_mask": pad(rows["context_mask"], seq_len, 0),
        "word_index": pad(rows["word_index"], n_words, 0),
        "word_mask": pad([[1] * len(w) for w in words], n_words, 0),
        "pos_ids": pad([pos_to_ids(p) for p in pos_tags], n_words, 0),
    }
    if "token_type_ids" in tokenizer.model_input_names and "token_type_ids" in rows:
        data["token_type_ids"] = pad(rows["token_type_ids"], seq_len, 0)
    pixel_values, has_image = encode_images(image_transform, images, batch_size)
    data["has_image"] = has_image
    if pixel_values is not None:
        data["pixel_values"] = pixel_values
    if word_labels is not None:
        data["labels"] = pad(encode_labels(words, word_labels, label2id), n_words, IGNORE_INDEX)
    if pair_labels is not None:
        if word_labels is not None:
            raise ValueError("give word_labels (NER) or pair_labels (word-pair grids), not both")
        data["labels"] = pad_grids(words, pair_labels, n_words)
    return data


__all__ = ["check_words", "encode_batch", "encode_images", "encode_labels", "encode_text", "pad_grids", "round_up"]
