"""The PyTorch runner of the inference engine (`engine.py`): a Shap-CA model and its processor
run on window rows, with image contexts generated where the processor has a generator.
`model.predict` and the transformers pipeline plug it into the engine."""

from __future__ import annotations

import contextlib

import torch

from .context_cache import ContextCache, fill_contexts
from .records import row_pos_tags, subword_counts
from .tasks import get_task


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode for the duration, the previous mode restored even when an error is raised."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def consented(model) -> bool:
    """Whether the user allowed remote code for this model: its class then comes from the
    dynamic modules transformers loads only with `trust_remote_code=True`."""
    return type(model).__module__.startswith("transformers_modules")


def load_processor(model, trust_remote_code: bool | None = None):
    """The processor saved next to a model's weights, loaded with the consent the model was
    loaded with (never more)."""
    from .processing_shapca import ShapCAProcessor

    trust = consented(model) if trust_remote_code is None else trust_remote_code
    path = model.config.name_or_path
    try:
        return ShapCAProcessor.from_pretrained(path, trust_remote_code=trust)
    except (OSError, ValueError) as error:
        raise ValueError(f"predict needs the processor saved with the model; none could be loaded from {path!r} "
                         f"({error}): pass processor=ShapCAProcessor(...)") from error


class TorchRunner:
    """A Shap-CA model (`ShapCAForTokenClassification` or `ShapCAForWordPairExtraction`) and its
    processor as the engine's runner (`engine.Runner`); `device` defaults to the model's;
    `allow_private=False` refuses image URLs on private addresses; `context_cache`: True (the
    environment's, `context_cache.py`), False, a folder or a `ContextCache`."""

    # Shape buckets of the captured path: subwords and words padded up to these multiples.
    BUCKETS = {"pad_to_multiple_of": 32, "words_pad_to_multiple_of": 8}

    def __init__(self, model, processor, device=None, allow_private: bool = True, context_cache=True):
        if processor is None:
            raise ValueError("the Shap-CA pipeline needs the model's processor (saved next to the weights)")
        self.model, self.processor, self._device = model, processor, device
        self.allow_private = allow_private
        self.context_cache = ContextCache.resolve(context_cache)  # True: the environment's (`context_cache.py`)
        config = model.config
        self.spec = get_task(config.task)
        self.task = self.spec.name
        self.progress_name = self.spec.pipeline_task
        self.id2label = config.id2label
        self.label_groups = getattr(config, "label_groups", None)
        self.group_sizes = config.group_sizes
        self._compiled: dict = {}

    @property
    def device(self) -> torch.device:
        """Where the inputs go: the device given, else the model's (wherever it is now)."""
        return torch.device(self._device) if self._device is not None else self.model.device

    @property
    def context_generator(self) -> str | None:
        """The processor's context generator (a model id), or None."""
        return self.processor.context_generator

    @property
    def max_words(self) -> int:
        return min(self.model.config.max_words, self.processor.max_words)

    @property
    def subword_budget(self) -> int:
        """Subwords of a window's text: the processor's `max_length` less the special tokens."""
        return self.processor.max_length - self.processor.tokenizer.num_special_tokens_to_add(pair=False)

    def tag_pos(self, words: list[list[str]]) -> list[list[str]]:
        return self.processor.tag_pos(words)

    def subword_counts(self, words: list[str]) -> list[int]:
        """Subwords of each word (a word without any is encoded as one unknown token)."""
        encoded = self.processor.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        return subword_counts(lambda _: encoded.word_ids(), words)

    def add_contexts(self, records: list[dict], generate_contexts: bool = True) -> None:
        """Contexts for images that come without one: from the context cache, else written by
        the processor's generator (once per distinct image) and cached."""
        settings = self.processor.context_settings() if generate_contexts else None
        if settings is not None:
            fill_contexts(records, settings, self.context_cache,
                          lambda images: self.processor.generate_contexts(images, trust_remote_code=consented(self.model)))

    def compiled_model(self, backend: str | bool = True):
        """The model under `torch.compile` (inductor with CUDA graphs on a GPU: mode
        "reduce-overhead"; a backend name such as "aot_eager" instead), built on first use;
        inputs are padded to shape buckets so it meets few shapes."""
        if backend not in self._compiled:
            if isinstance(backend, str):
                self._compiled[backend] = torch.compile(self.model, backend=backend, dynamic=False)
            else:
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
                self._compiled[backend] = torch.compile(self.model, mode=mode, dynamic=False)
        return self._compiled[backend]

    def check(self) -> None:
        """What the model's labels must satisfy before a call (NER: a label per CRF tag)."""
        if hasattr(self.model, "_check_labels"):
            self.model._check_labels()

    def run(self, rows: list[dict], autocast_dtype=None, compile: bool | str = False) -> dict:
        """The model on window rows (see `engine.py`), under `autocast_dtype` or compiled."""
        encoded = self.encode(rows, **(self.BUCKETS if compile else {}))
        autocast = torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with torch.no_grad(), eval_mode(self.model), autocast:
            model = self.compiled_model(compile) if compile else self.model
            outputs = model(**encoded.to(self.device))
        if self.spec.is_word_pair:
            return {"probs": outputs.logits.float().exp().cpu().numpy(), "labels": outputs.predictions.cpu().numpy()}
        # outside autocast: the marginals are computed in float32
        marginals = self.model.crf.marginals(outputs.logits, encoded["word_mask"].to(self.device),
                                             self.model.allowed_start, self.model.allowed_transitions)
        return {"tags": outputs.predictions.cpu().numpy(), "marginals": marginals.float().cpu().numpy()}

    def encode(self, rows: list[dict], **padding):
        """The processor on a batch; an error is re-raised naming the input it comes from."""
        kwargs = dict(words=[r["words"] for r in rows], contexts=[r["context"] for r in rows],
                      images=[r["image"] for r in rows], pos_tags=row_pos_tags(rows, self.processor.tag_pos),
                      return_tensors="pt", **padding)
        try:
            return self.processor(**kwargs)
        except (ValueError, TypeError):
            for r in rows:  # find the input at fault
                try:
                    self.processor(words=[r["words"]], contexts=[r["context"]], images=[r["image"]],
                                   pos_tags=row_pos_tags([r], self.processor.tag_pos), return_tensors="pt")
                except (ValueError, TypeError) as error:
                    message = str(error).replace("example 0: ", "").replace("example 0 ", "")
                    raise type(error)(f"{r['_name']}: {message}") from error
            raise


__all__ = ["TorchRunner", "consented", "eval_mode", "load_processor"]
