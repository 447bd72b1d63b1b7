import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from datasets_scripts.readers import DataFormatError, parse_mnre_line, read_mnre, read_twitter_ner, to_iob2
from tests.helpers import ROOT

DATA = ROOT / "data"


@pytest.mark.parametrize("split, sentences, repaired", [("train", 4000, 186), ("valid", 1000, 53), ("test", 3257, 135)])
def test_twitter2015_shipped_sizes(split, sentences, repaired):
    read, report = read_twitter_ner(DATA / "twitter2015" / f"{split}.txt")
    assert len(read) == report.sentences == sentences
    assert report.repaired_tags == repaired


def _raw_blocks(path):
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    for block in blocks:
        lines = [line for line in block.split("\n") if line]
        yield lines[0][len("IMGID:"):], [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_twitter_round_trip_keeps_every_word_and_entity(split):
    path = DATA / "twitter2015" / f"{split}.txt"
    sentences, _ = read_twitter_ner(path)
    raw = list(_raw_blocks(path))
    assert len(raw) == len(sentences)
    for sentence, (image_id, pairs) in zip(sentences, raw):
        assert sentence.image_id == image_id
        assert sentence.words == [word for word, _ in pairs]
        raw_tags = [tag.replace("OTHER", "MISC") for _, tag in pairs]
        # IOB2 repair changes only the B/I prefix of orphan I- tags; entities (conlleval reading) are unchanged
        assert [t[2:] for t in sentence.tags] == [t[2:] for t in raw_tags]
        assert get_entities(sentence.tags) == get_entities(raw_tags)


def test_twitter_hazards_kept_verbatim():
    valid, _ = read_twitter_ner(DATA / "twitter2015" / "valid.txt")
    assert any(word == "\u00a0" for s in valid for word in s.words)
    test, _ = read_twitter_ner(DATA / "twitter2015" / "test.txt")
    assert any(word == "#\u200edarmageddon" for s in test for word in s.words)


def test_to_iob2():
    assert to_iob2(["O", "I-LOC", "I-LOC", "I-PER", "B-PER", "I-PER"]) == (
        ["O", "B-LOC", "I-LOC", "B-PER", "B-PER", "I-PER"], 2)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("IMGID:1\nword\tB-FOO\n", 2, "unknown tag 'B-FOO'"),
        ("IMGID:1\nword B-PER\n", 2, "expected 'token<TAB>tag'"),
        ("word\tO\n", 1, "before any IMGID"),
        ("IMGID:1\n\nIMGID:2\na\tO\n", 1, "has no tokens"),
        ("IMGID:1\na\tO\nIMGID:2\nb\tO\n", 3, "IMGID line inside a sentence"),
        ("IMGID:1\n\tO\n", 2, "empty token"),
        ("IMGID:\na\tO\n", 1, "empty image id"),
    ],
)
def test_twitter_errors_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError, match=message) as info:
        read_twitter_ner(path)
    assert info.value.line == line and str(info.value).startswith(f"{path}:{line}:")


def test_twitter_invalid_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"IMGID:1\na\tO\n\nIMGID:2\n\xff\tO\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as info:
        read_twitter_ner(path)
    assert info.value.line == 5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_twitter_fuzz_random_bytes(tmp_path, data):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(data)
    try:
        read_twitter_ner(path)
    except DataFormatError:
        pass


tag = st.sampled_from(["O", "B-PER", "I-PER", "B-OTHER", "I-LOC", "B-XYZ", "", "I-"])
word = st.text(alphabet=string.ascii_letters + " \t\u00a0#@", max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.tuples(word, tag), max_size=5), max_size=4), st.integers(0, 200))
def test_twitter_fuzz_structured_and_truncated(tmp_path, blocks, cut):
    text = "\n\n".join("IMGID:7\n" + "\n".join(f"{w}\t{t}" for w, t in block) for block in blocks)
    path = tmp_path / "fuzz.txt"
    path.write_text(text[: len(text) - cut] if cut < len(text) else text, encoding="utf-8")
    try:
        sentences, _ = read_twitter_ner(path)
    except DataFormatError:
        return
    for sentence in sentences:
        assert len(sentence.words) == len(sentence.tags) > 0


def test_mnre_shipped_sizes():
    assert [len(read_mnre(DATA / "mnre" / f"mnre_{s}.txt")) for s in ("train", "val", "test")] == [12247, 1624, 1614]


@pytest.mark.parametrize(
    "line, message",
    [
        ("__import__('os').system('echo hi')", "not a Python dict literal"),
        ("[1, 2]", "expected a dict"),
        ("{'token': ['a'], 'h': {'name': 'a', 'pos': [0, 1]}}", "missing keys"),
        ("{'token': ['a', 'b'], 'h': {'name': 'a', 'pos': [0, 1]}, 't': {'name': 'b', 'pos': [1, 3]}, 'img_id': 'x.jpg', 'relation': 'None'}", "not \\[start, end\\)"),
        ("{'token': ['a', 'b'], 'h': {'name': 'b', 'pos': [0, 1]}, 't': {'name': 'b', 'pos': [1, 2]}, 'img_id': 'x.jpg', 'relation': 'None'}", "does not match"),
        ("{'token': [], 'h': {}, 't': {}, 'img_id': 'x.jpg', 'relation': 'None'}", "non-empty list"),
        ("{'token': ['a', 'b'", "not a Python dict literal"),
    ],
)
def test_mnre_line_errors(line, message):
    with pytest.raises(DataFormatError, match=message):
        parse_mnre_line(line, "f.txt", 3)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_mnre_fuzz(line):
    try:
        parse_mnre_line(line, "f.txt", 1)
    except DataFormatError:
        pass
