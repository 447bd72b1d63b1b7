"""A user's own corpora, end to end: own entity types and relation names, from raw files and
from a `datasets` folder, trained with train.py; the config, the card, results.json and the
predictions carry the data's own labels and name, never a paper corpus'."""

import json

import datasets
import pytest
import transformers

import train
from tests.helpers import base_args
from tests.helpers import OWN_TYPES, SENTENCES, conll, own_conll

OWN_TAGS = ["O"] + [f"{p}-{t}" for t in OWN_TYPES for p in "BI"]
# a paper corpus named, linked or scored (the metric's own name, "triple F1 (MJERE_j)", is not a corpus)
PAPER_NAMES = ("Twitter-2015", "twitter2015", "**MNRE**", "**MJERE**", "thecharm/MNRE", "EEGA-for-JMERE", "jefferyYu",
               "76.93", "67.94", "55.95")


def run(tiny_text_model, out, *extra, epochs=2):
    return train.main(base_args(tiny_text_model, out, "--num_train_epochs", str(epochs), "--head_learning_rate",
                                "3e-2", *extra))


def check_card(out, name: str, labels: list[str]):
    card = (out / "README.md").read_text()
    assert f"- Trained on: {name}," in card and f"- Labels: {', '.join(labels)}" in card
    assert "n/a (not a paper corpus)" in card
    assert "\ndatasets:" not in card  # no Hub dataset id is known for local data
    for paper in PAPER_NAMES:
        assert paper not in card.split("## Interpretations")[0], paper
    return card


def test_own_ner_types_from_conll_files(tiny_text_model, tmp_path):
    raw = own_conll(tmp_path / "raw", sentences=SENTENCES * 3)
    results = run(tiny_text_model, tmp_path / "out", "--dataset_path", str(raw), "--dataset_name", "my-products")
    assert results["dataset"] == "my-products"
    assert results["data"] == {"name": "my-products", "task": "ner", "hub_id": None, "preset": None,
                               "labels": OWN_TAGS, "sizes": {"train": 12, "validation": 12, "test": 12}}
    assert sorted(k[len("test_f1_"):] for k in results["test"] if k.startswith("test_f1_")) == list(OWN_TYPES)
    check_card(tmp_path / "out", "my-products", OWN_TAGS)
    pipe = transformers.pipeline("multimodal-ner", model=str(tmp_path / "out"), trust_remote_code=True)
    assert list(pipe.model.config.id2label.values()) == OWN_TAGS
    predicted = {e["entity_group"] for row in pipe([" ".join(w) for w, _ in SENTENCES]) for e in row}
    assert predicted and predicted <= set(OWN_TYPES)


def test_own_ner_types_from_a_datasets_folder(tiny_text_model, tmp_path):
    names = ["O", "B-SPORT", "I-SPORT", "B-BRAND", "B-EVENT", "I-EVENT", "B-PRODUCT", "I-BRAND", "I-PRODUCT"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    split = datasets.Dataset.from_dict({"tokens": [w for w, _ in SENTENCES * 3],
                                        "ner_tags": [[names.index(t) for t in tags] for _, tags in SENTENCES * 3]},
                                       features=features)
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "products"))
    results = run(tiny_text_model, tmp_path / "out", "--dataset_path", str(tmp_path / "products"))
    assert results["data"]["name"] == "products" and results["data"]["labels"] == OWN_TAGS
    check_card(tmp_path / "out", "products", OWN_TAGS)
    model = transformers.AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True)
    predicted = {e["entity_group"] for row in model.predict([" ".join(w) for w, _ in SENTENCES]) for e in row}
    assert predicted and predicted <= set(OWN_TYPES)


def test_own_relations_and_joint_types(tiny_text_model, tmp_path):
    mre, joint = tmp_path / "mre", tmp_path / "joint"
    mre.mkdir()
    joint.mkdir()
    pairs = [{"token": ["Ann", "owns", "a", "dog", "named", "Rex"], "h": {"pos": [0, 1]}, "t": {"pos": [5, 6]},
              "relation": "owns"},
             {"token": ["Bob", "likes", "Kim"], "h": {"pos": [0, 1]}, "t": {"pos": [2, 3]}, "relation": "likes"},
             {"token": ["Bob", "likes", "Kim"], "h": {"pos": [2, 3]}, "t": {"pos": [0, 1]}, "relation": "None"}]
    sentences = [{"words": ["Ann", "walks", "Rex", "in", "Oslo"],
                  "entities": [{"start": 0, "end": 1, "type": "human"}, {"start": 2, "end": 3, "type": "dog"},
                               {"start": 4, "end": 5, "type": "city"}],
                  "relations": [{"head": [0, 1], "tail": [2, 3], "relation": "walks"},
                                {"head": [0, 1], "tail": [4, 5], "relation": "lives_in"}]}]
    for name in ("train", "validation", "test"):
        (mre / f"{name}.jsonl").write_text("\n".join(json.dumps(p) for p in pairs * 3) + "\n", encoding="utf-8")
        (joint / f"{name}.jsonl").write_text("\n".join(json.dumps(s) for s in sentences * 4) + "\n", encoding="utf-8")

    results = run(tiny_text_model, tmp_path / "out-mre", "--dataset_path", str(mre), "--dataset_name", "pets")
    assert results["task"] == "mre" and results["data"]["labels"] == ["likes", "owns"]
    check_card(tmp_path / "out-mre", "pets", ["likes", "owns"])
    model = transformers.AutoModel.from_pretrained(tmp_path / "out-mre", trust_remote_code=True)
    assert model.config.label_groups == {"relation": ["None", "likes", "owns"]}
    labels = {r["label"] for r in model.predict("Bob likes Kim", pairs=[[[0, 1], [2, 3]], [[2, 3], [0, 1]]])}
    assert labels and labels <= {"None", "likes", "owns"}

    results = run(tiny_text_model, tmp_path / "out-joint", "--dataset_path", str(joint), "--task", "mjere", epochs=30)
    assert results["task"] == "mjere" and results["data"]["name"] == "joint"
    assert results["data"]["labels"] == ["city", "dog", "human", "lives_in", "walks"]
    check_card(tmp_path / "out-joint", "joint", ["city", "dog", "human", "lives_in", "walks"])
    model = transformers.AutoModel.from_pretrained(tmp_path / "out-joint", trust_remote_code=True)
    assert model.config.label_groups["entity"] == ["None", "city", "dog", "human"]
    found = model.predict("Ann walks Rex in Oslo")
    types = {e["entity_group"] for e in found["entities"]}
    assert types and types <= {"city", "dog", "human"}
    assert {r["label"] for r in found["relations"]} <= {"lives_in", "walks"}


def test_an_over_long_training_sentence_is_named_before_any_model(tiny_text_model, tmp_path):
    raw = own_conll(tmp_path / "raw")
    long = (["word"] * 300, ["O"] * 300)
    (raw / "train.conll").write_text(conll(SENTENCES[:2] + [long] + SENTENCES[2:]), encoding="utf-8")
    with pytest.raises(ValueError, match="1 sentence\\(s\\) of raw are longer than the model takes: train.conll:13: "
                                         "300 words > max_words=256"):
        run(tiny_text_model, tmp_path / "out", "--dataset_path", str(raw))
    assert not (tmp_path / "out").exists()  # nothing was built or written
    with pytest.raises(ValueError, match="train.conll:13: 302 subwords > max_length=256"):
        run(tiny_text_model, tmp_path / "out", "--dataset_path", str(raw), "--max_words", "512")


def test_a_key_dataset_and_dataset_rows_stream_through_the_pipeline(trained_model_dir, tmp_path):
    from transformers.pipelines.pt_utils import KeyDataset

    from datasets_scripts import build
    from tests.helpers import raw_twitter

    dataset, _ = build.build("twitter2015", raw_twitter(tmp_path / "raw"))
    pipe = transformers.pipeline("multimodal-ner", model=str(trained_model_dir), trust_remote_code=True)
    expected = pipe([{"words": w} for w in dataset["test"]["words"]], batch_size=2)
    streamed = pipe(KeyDataset(dataset["test"], "words"), batch_size=2)
    assert not isinstance(streamed, list)  # lazy, as transformers' pipelines are on datasets
    assert list(streamed) == expected
    assert list(pipe(dataset["test"], batch_size=2)) == expected  # whole rows: words, image (none here), context
    assert list(pipe(row for row in [" ".join(dataset["test"][0]["words"])])) == expected[:1]
    assert pipe({"words": dataset["test"][0]["words"]}, ignore_labels=[e["entity_group"] for e in expected[0]]) == []


def test_labels_the_training_split_cannot_teach_are_warned_about(tmp_path, caplog):
    """A label seen only in validation or test, and a training split without any entity, are
    named with the split and the file."""
    from datasets_scripts.sources import load_data
    from shapca_training.data import warn_about_labels

    folder = tmp_path / "raw"
    folder.mkdir()
    train_rows = [(["buy", "the", "iPhone"], ["O", "O", "B-PRODUCT"])]
    (folder / "train.conll").write_text(conll(train_rows), encoding="utf-8")
    (folder / "dev.conll").write_text(conll(train_rows + [(["Nike", "wins"], ["B-BRAND", "O"])]), encoding="utf-8")
    (folder / "test.conll").write_text(conll([(["at", "the", "World", "Cup"], ["O", "O", "B-EVENT", "I-EVENT"]),
                                              (["World", "Cup"], ["B-EVENT", "I-EVENT"])]), encoding="utf-8")
    dataset, info, _ = load_data(folder, "ner")
    with caplog.at_level("WARNING", logger="shapca.train"):
        messages = warn_about_labels(dataset, info, "ner")
    assert messages == [
        f"raw split 'validation' (dev.conll): the label 'BRAND' occurs 1 time(s) but never in raw split "
        f"'train' (train.conll): the model keeps it in its label set and cannot learn it",
        f"raw split 'test' (test.conll): the label 'EVENT' occurs 2 time(s) but never in raw split "
        f"'train' (train.conll): the model keeps it in its label set and cannot learn it",
    ]
    assert [r.getMessage() for r in caplog.records] == messages
    (folder / "train.conll").write_text(conll([(["buy", "the", "iPhone"], ["O", "O", "O"])]), encoding="utf-8")
    dataset, info, _ = load_data(folder, "ner")
    assert warn_about_labels(dataset, info, "ner")[0] == (
        f"raw split 'train' (train.conll) has no entity at all (every label is O / None): the model "
        "can only learn to predict none; check the tags column and the file")


def test_a_type_with_whitespace_is_named_as_such(tmp_path):
    from datasets_scripts.sources import load_data

    folder = tmp_path / "raw"
    own_conll(folder, sentences=[(["Ada", "Lovelace"], ["B-NAMED PERSON", "I-NAMED PERSON"])])
    with pytest.raises(ValueError, match=r"train.conll:1: tag 'B-NAMED PERSON': the entity type 'NAMED PERSON' "
                                         r"contains whitespace.*write it as B-NAMED_PERSON"):
        load_data(folder, "ner")
