"""The one context generator: a large multimodal model (LLaVA-1.5 in the paper) that writes a
description of an image, used when a corpus is built (`shapca-contexts`)
and at inference (`ShapCAProcessor.generate_contexts`, the pipeline) with the same settings.

The settings (model id, prompt, `max_new_tokens`, temperature) are stored once: in every
record of the contexts JSONL, in the dataset card, and in the processor config of a model
trained on those contexts, so inference describes images the way training saw them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

DEFAULT_PROMPT = (
    "Describe this image in detail: the people, objects, places, text and events it shows, "
    "and any names you can recognise."
)
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0  # the paper samples its contexts


@dataclass(frozen=True)
class ContextSettings:
    """How contexts are written; `model` is an image-text-to-text Hub id or folder."""

    model: str
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"context generator: `model` must be a model id or folder, got {self.model!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("context generator: `prompt` must be a non-empty string")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"context generator: `max_new_tokens` must be a positive int, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"context generator: `temperature` must be >= 0, got {self.temperature!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def saved_settings(processor_config: Mapping) -> ContextSettings | None:
    """The generator settings a processor saves (`context_generator`, `context_prompt`,
    `context_max_new_tokens`, `context_temperature`; unset ones take the defaults), or None
    when it names no generator. The PyTorch processor and the ONNX predictor both read them so."""
    model = processor_config.get("context_generator")
    if not model:
        return None
    given = {"prompt": processor_config.get("context_prompt"),
             "max_new_tokens": processor_config.get("context_max_new_tokens"),
             "temperature": processor_config.get("context_temperature")}
    return ContextSettings(model, **{k: v for k, v in given.items() if v is not None})


class ContextGenerator:
    """Loads the generator once and describes batches of PIL images.

    `trust_remote_code` is passed to the generator's loading only as the caller gives it.
    """

    def __init__(self, settings: ContextSettings, device: str | None = None, loaded=None, trust_remote_code: bool = False):
        self.settings = settings
        self.device = device
        self.trust_remote_code = trust_remote_code
        self._loaded = loaded  # (processor, model), e.g. a model already in memory

    def load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            processor = AutoProcessor.from_pretrained(self.settings.model, trust_remote_code=self.trust_remote_code)
            processor.tokenizer.padding_side = "left"  # decoder-only batched generation
            model = AutoModelForImageTextToText.from_pretrained(
                self.settings.model, dtype=dtype, trust_remote_code=self.trust_remote_code).to(device).eval()
            self._loaded = (processor, model)
        return self._loaded

    def describe(self, images) -> list[str]:
        """One context per image (RGB PIL images), in order."""
        import torch

        images = list(images)
        if not images:
            return []
        processor, model = self.load()
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.settings.prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True).to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        temperature = self.settings.temperature
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "DEFAULT_PROMPT", "DEFAULT_TEMPERATURE", "ContextGenerator", "ContextSettings",
           "saved_settings"]
