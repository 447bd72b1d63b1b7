"""A tokenizer with transformers' calling convention over the `tokenizers` library alone (no
transformers, no torch), read from a saved `tokenizer.json`: what the ONNX predictor encodes
text with. It implements only what `encoding.py` and the windowing need, with the behaviour of
transformers' fast tokenizers (`is_split_into_words=True`, `truncation="only_second"`)."""

from __future__ import annotations

import json
from pathlib import Path


class FastEncoding:
    """Encodings of a batch, read like a transformers `BatchEncoding`."""

    def __init__(self, encodings, with_type_ids: bool):
        self._encodings = encodings
        self._data = {"input_ids": [e.ids for e in encodings]}
        if with_type_ids:
            self._data["token_type_ids"] = [e.type_ids for e in encodings]

    def __getitem__(self, key):
        return self._data[key]

    def __contains__(self, key) -> bool:
        return key in self._data

    def word_ids(self, i: int = 0):
        return self._encodings[i].word_ids

    def sequence_ids(self, i: int = 0):
        return self._encodings[i].sequence_ids


class FastTokenizer:
    """`tokenizers.Tokenizer` from a folder's `tokenizer.json` (special tokens from its
    `tokenizer_config.json`), called as `tokenizer(words[, contexts], is_split_into_words=True,
    add_special_tokens=..., truncation=..., max_length=...)`."""

    def __init__(self, folder: str | Path, model_input_names=("input_ids", "token_type_ids", "attention_mask")):
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise OSError(f"{folder} has no tokenizer.json: the ONNX predictor reads fast tokenizers only")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        self.unk_token = _token(config.get("unk_token"))
        pad = _token(config.get("pad_token"))
        self.pad_token_id = self._tokenizer.token_to_id(pad) if pad else None
        self.model_input_names = list(model_input_names)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self._tokenizer.post_processor
        return processor.num_special_tokens_to_add(pair) if processor is not None else 0

    def __call__(self, words, contexts=None, *, is_split_into_words: bool = True, add_special_tokens: bool = True,
                 truncation=False, max_length: int | None = None, verbose: bool = True) -> FastEncoding:
        if not is_split_into_words:
            raise ValueError("FastTokenizer encodes pre-split words only")
        single = bool(words) and isinstance(words[0], str)
        batch = [words] if single else list(words)
        if contexts is not None:
            batch = list(zip(batch, [contexts] if single else contexts))
        tokenizer = self._tokenizer
        if truncation:
            if truncation != "only_second" or max_length is None:
                raise ValueError(f"FastTokenizer truncates the second sequence to max_length only, got {truncation!r}")
            tokenizer.enable_truncation(max_length, strategy="only_second")
        try:
            encodings = tokenizer.encode_batch(batch, is_pretokenized=True, add_special_tokens=add_special_tokens)
        finally:
            tokenizer.no_truncation()
        return FastEncoding(encodings, "token_type_ids" in self.model_input_names)


def _token(value):
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


__all__ = ["FastTokenizer"]
