import random

import evaluate
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from tests.helpers import ROOT

METRICS = ROOT / "metrics"


@pytest.fixture(scope="module")
def mner():
    return evaluate.load(str(METRICS / "mner_f1"))


@pytest.fixture(scope="module")
def mre():
    return evaluate.load(str(METRICS / "mre_f1"))


@pytest.fixture(scope="module")
def mjere():
    return evaluate.load(str(METRICS / "mjere_f1"))


def test_mner_hand_made(mner):
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    result = mner.compute(predictions=preds, references=refs)
    assert result["precision"] == 0.5 and result["recall"] == pytest.approx(1 / 3)
    assert result["PER"]["f1"] == 1.0 and result["LOC"]["recall"] == 0.0
    assert result["number_of_entities"] == 3


def test_mner_i_after_o_under_each_mode(mner):
    refs = [["O", "I-PER", "O"]]
    conll = mner.compute(predictions=refs, references=refs)
    strict = mner.compute(predictions=refs, references=refs, mode="strict")
    assert conll["f1"] == 1.0 and conll["number_of_entities"] == 1
    assert strict["number_of_entities"] == 0 and strict["f1"] == 0.0


def test_mner_no_gold_no_predictions_and_entity_at_end(mner):
    assert mner.compute(predictions=[["O", "O"]], references=[["O", "O"]])["f1"] == 0.0
    none_predicted = mner.compute(predictions=[["O", "O"]], references=[["O", "B-PER"]])
    assert none_predicted["recall"] == 0.0 and none_predicted["precision"] == 0.0
    at_end = mner.compute(predictions=[["O", "B-LOC", "I-LOC"]], references=[["O", "B-LOC", "I-LOC"]])
    assert at_end["f1"] == 1.0


def test_mner_equals_seqeval_on_random_sequences(mner):
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    refs, preds = [], []
    for _ in range(200):
        n = rng.randint(1, 12)
        refs.append([rng.choice(tags) for _ in range(n)])
        preds.append([rng.choice(tags) for _ in range(n)])
    result = mner.compute(predictions=preds, references=refs)
    assert result["f1"] == pytest.approx(f1_score(refs, preds))
    assert result["precision"] == pytest.approx(precision_score(refs, preds))
    assert result["recall"] == pytest.approx(recall_score(refs, preds))


@pytest.mark.parametrize(
    "preds, refs, kwargs, message",
    [
        ([["O"]], [["O", "O"]], {}, "1 predicted tags for 2 gold"),
        ([["B-PER", "X"]], [["O", "O"]], {}, "'X' is not O"),
        ([["O"]], [["O"]], {"mode": "bioes"}, "mode must be"),
    ],
)
def test_mner_errors(mner, preds, refs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mner.compute(predictions=preds, references=refs, **kwargs)


def test_mre_hand_made_and_none_convention(mre):
    preds = ["/per/per/peer", "None", "/loc/loc/contain", "None"]
    refs = ["/per/per/peer", "/per/org/member_of", "None", "None"]
    result = mre.compute(predictions=preds, references=refs)
    assert result["precision"] == 0.5 and result["recall"] == 0.5 and result["accuracy"] == 0.5
    assert result["/per/per/peer"]["f1"] == 1.0
    all_none = mre.compute(predictions=["None", "None"], references=["None", "None"])
    assert all_none["f1"] == 0.0 and all_none["accuracy"] == 1.0
    with pytest.raises(ValueError, match="unknown labels"):
        mre.compute(predictions=["/x"], references=["None"], labels=["None", "/per/per/peer"])


def entity(start, end, kind):
    return {"start": start, "end": end, "type": kind}


def triple(h, t, relation):
    return {"head_start": h[0], "head_end": h[1], "tail_start": t[0], "tail_end": t[1], "relation": relation}


def test_mjere_hand_made(mjere):
    gold = {"entities": [entity(0, 2, "per"), entity(4, 5, "org")], "triples": [triple((0, 2), (4, 5), "member_of")]}
    wrong_relation = {"entities": [entity(0, 2, "per"), entity(4, 5, "loc")], "triples": [triple((0, 2), (4, 5), "peer")]}
    result = mjere.compute(predictions=[wrong_relation], references=[gold])
    assert result["entity_f1"] == 0.5 and result["pair_f1"] == 1.0 and result["triple_f1"] == 0.0
    assert result["mjere_e"] == result["entity_f1"] and result["mjere_j"] == result["triple_f1"]
    empty = {"entities": [], "triples": []}
    assert mjere.compute(predictions=[empty], references=[empty])["triple_f1"] == 0.0
    with pytest.raises(ValueError, match="empty or negative"):
        mjere.compute(predictions=[{"entities": [entity(3, 3, "per")], "triples": []}], references=[gold])


def test_add_batch_in_chunks_equals_one_call(mjere, mner):
    gold = {"entities": [entity(0, 1, "per")], "triples": []}
    miss = {"entities": [], "triples": []}
    one = mjere.compute(predictions=[gold, miss], references=[gold, gold])
    mjere.add_batch(predictions=[gold], references=[gold])
    mjere.add_batch(predictions=[miss], references=[gold])
    assert mjere.compute() == one


def test_confusions_and_per_type_f1():
    from shapca_training.scoring import per_type_f1, span_confusions

    gold = [{(0, 2, "PER"), (3, 4, "LOC")}, {(0, 1, "ORG")}]
    pred = [{(0, 2, "ORG"), (5, 6, "MISC")}, {(0, 1, "ORG")}]
    assert span_confusions(gold, pred) == {"PER -> ORG": 1, "LOC -> (missed)": 1, "(none) -> MISC": 1}
    scores = per_type_f1(gold, pred)
    assert scores == {"LOC": 0.0, "MISC": 0.0, "ORG": 2 * 0.5 * 1.0 / 1.5, "PER": 0.0}
