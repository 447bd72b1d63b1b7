"""Windows over long inputs (`windows.py`) and the word-pair tasks read through them."""

import pytest
import torch

from modeling_shapca.windows import owners, pair_window, plan_windows
from tests.helpers import tiny_model


def test_windows_cover_every_word_within_their_limits():
    counts = [1, 3, 1, 1, 2, 1, 1, 1, 4, 1, 1, 1]
    windows = plan_windows(counts, max_words=5, max_subwords=6, stride=2)
    assert windows == [(0, 4), (2, 7), (5, 8), (6, 9), (7, 10), (8, 11), (9, 12)]
    assert all(e - s <= 5 and sum(counts[s:e]) <= 6 for s, e in windows)
    assert plan_windows([1] * 10, 10, 100, 3) == [(0, 10)]  # what fits stays one window
    assert plan_windows([1] * 10, 4, 100, 0) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="word 1 alone is 9 subwords, more than the 6"):
        plan_windows([1, 9], 5, 6, 1)
    with pytest.raises(ValueError, match="0 <= stride < max_words"):
        plan_windows([1], 4, 10, 4)


def test_each_word_is_owned_by_its_most_central_window():
    windows = [(0, 8), (4, 12), (8, 16), (12, 20)]
    assert owners(windows, 20) == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]


def test_a_pair_gets_a_window_holding_both_spans():
    windows = [(0, 8), (4, 12), (8, 16)]
    assert pair_window(windows, (5, 6), (9, 10), [1] * 16, 8, 100) == 1
    assert pair_window(windows, (0, 1), (2, 3), [1] * 16, 8, 100) == 0
    assert pair_window(windows, (2, 3), (8, 9), [1] * 16, 8, 100) == 3  # straddles: a window around it
    assert windows[3] == (1, 9)  # grown around the pair (words 2-9), left side first, to 8 words
    with pytest.raises(ValueError, match="the pair spans words 0-12 \\(12 words, 12 subwords\\), more than one window"):
        pair_window(windows, (0, 1), (11, 12), [1] * 16, 8, 100)


def test_mre_pairs_anywhere_in_a_long_text(processor):
    """A pair inside the first window is read exactly as in the text cut to that window; a pair
    600 words in is classified too, with offsets into the whole text."""
    model = tiny_model("mre").eval()
    words = [f"w{i}" for i in range(700)]
    text = " ".join(words)
    near, far = [[2, 3], [5, 7]], [[600, 602], [606, 607]]
    long = model.predict(text, pairs=[near, far], processor=processor)
    size = min(model.config.max_words, processor.max_words)  # the first window, as the pipeline plans it
    budget = processor.max_length - processor.tokenizer.num_special_tokens_to_add(pair=False)
    counts = [len(processor.tokenizer.tokenize(w)) for w in words]
    first = plan_windows(counts, size, budget, size // 4)[0]
    assert first[0] == 0 and 7 < first[1] < 600
    cut = model.predict(" ".join(words[:first[1]]), pairs=[near], processor=processor)
    assert long[0] == cut[0]
    assert (long[1]["head"]["word"], long[1]["tail"]["word"]) == ("w600 w601", "w606")
    assert text[long[1]["head"]["start"]:long[1]["head"]["end"]] == "w600 w601"
    with pytest.raises(ValueError, match="input 0: the pair spans words 0-700"):
        model.predict(text, pairs=[[[0, 1], [699, 700]]], processor=processor)


def test_mjere_over_a_long_text_keeps_relations_inside_windows(processor):
    model = tiny_model("mjere").eval()
    with torch.no_grad():
        model.pair_layer.joint_head.bias[1] += 30.0  # every boundary cell: an entity of type 1
    text = " ".join(f"w{i}" for i in range(150))
    out = model.predict(text, processor=processor, window=40, stride=10)
    entities = out["entities"]
    assert all(text[e["start"]:e["end"]] == e["word"] for e in entities)
    starts = sorted(e["start"] for e in entities)
    assert starts[-1] > text.index("w140")  # found to the end
    assert len(starts) == len(set((e["start"], e["end"]) for e in entities))  # each decided once
    for relation in out["relations"]:  # relations only between entities that share a window
        head, tail = (text[:relation[k]["start"]].count(" ") for k in ("head", "tail"))
        assert abs(head - tail) < 40


@pytest.mark.parametrize("tokenizer_path", ["minilm", "byte-level-bpe"])
def test_words_that_fit_unencoded_fit_encoded(tokenizer_path, tmp_path):
    """`fits_unencoded` (one short sentence skips a tokenizer pass) bounds the subword count of
    ASCII words from above for WordPiece and byte-level BPE, on every shipped Twitter-2015 test
    sentence and on words made of punctuation; non-ASCII words always go through the tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from datasets_scripts.readers import read_twitter_ner
    from modeling_shapca.records import fits_unencoded
    from tests.helpers import MINILM_PATH, ROOT

    if tokenizer_path == "minilm":
        tokenizer = AutoTokenizer.from_pretrained(MINILM_PATH)
    else:  # a byte-level BPE with no merges: one token per byte, the most subwords a word can get
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(["a"], vocab_size=257, show_progress=False)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, add_prefix_space=True)
    sentences = [s.words for s in read_twitter_ner(ROOT / "data" / "twitter2015" / "test.txt")[0]]
    sentences.append(["!!!", "#@$%^&*()", "http://t.co/xyz", "a", "..."])
    ascii_sentences = 0
    for words in sentences:
        encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
        bound = sum(len(w) + 1 for w in words)
        if all(w.isascii() for w in words):
            ascii_sentences += 1
            assert len(encoded) <= bound, words
            assert fits_unencoded(words, bound) and not fits_unencoded(words, bound - 1)
        else:
            assert not fits_unencoded(words, 10 * bound)
    assert ascii_sentences > 1000
    assert not fits_unencoded(["Zürich"], 1000)
