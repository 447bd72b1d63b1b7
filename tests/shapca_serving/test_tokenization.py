"""The `tokenizers`-only tokenizer gives the processor's inputs exactly."""

import numpy as np
import pytest

from modeling_shapca.encoding import encode_batch
from shapca_serving.tokenization import FastTokenizer

WORDS = [["Kevin", "Durant", "enters", "Oracle", "Arena"], ["RT", "@cnni", ":", "\u200e", "Paris", "floods"],
         ["Go", "#Bears"], ["x"] * 40]
CONTEXTS = ["A basketball player walks onto a court . " * 3, "", "A bear mascot at a stadium .", "long " * 80]


@pytest.fixture(scope="module")
def saved(processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("processor")
    processor.save_pretrained(folder)
    return folder


def test_encoding_equals_the_processor(processor, saved):
    tokenizer = FastTokenizer(saved)
    pos = [["NOUN"] * len(w) for w in WORDS]  # a word without subwords (U+200E) becomes [UNK] in both
    expected = processor(words=WORDS, contexts=CONTEXTS, pos_tags=pos, return_tensors="np")
    got = encode_batch(tokenizer, WORDS, contexts=CONTEXTS, pos_tags=pos, max_length=processor.max_length,
                       max_words=processor.max_words, tag_pos=None)
    assert set(got) == set(expected)
    for key in got:
        assert np.array_equal(np.asarray(got[key]), np.asarray(expected[key])), key
    assert np.asarray(got["context_mask"])[3].sum() > 0  # the long context was truncated, not dropped
    assert len(got["input_ids"][0]) == processor.max_length
    assert tokenizer.num_special_tokens_to_add(pair=True) == 3 and tokenizer.num_special_tokens_to_add() == 2


def test_over_long_text_is_named_as_by_the_processor(processor, saved):
    words = [["word"] * 62]  # 62 subwords + [CLS] and [SEP]: exactly max_length
    with pytest.raises(ValueError, match="example 0: the text alone is .* subwords"):
        encode_batch(FastTokenizer(saved), [["supercalifragilistic"] * 30], max_length=processor.max_length,
                     max_words=processor.max_words, tag_pos=lambda ws: [["X"] * len(w) for w in ws])
    assert encode_batch(FastTokenizer(saved), words, max_length=processor.max_length, max_words=processor.max_words,
                        tag_pos=lambda ws: [["X"] * len(w) for w in ws])["word_mask"] == [[1] * 62]


def test_a_folder_without_tokenizer_json_is_named(tmp_path):
    with pytest.raises(OSError, match="has no tokenizer.json"):
        FastTokenizer(tmp_path)
