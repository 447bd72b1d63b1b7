"""Any corpus a user has: raw CoNLL / JSON-lines folders, `datasets` folders (save_to_disk,
Parquet) and Hub ids (offline, from a local cache), labels read from the data."""

import json
from pathlib import Path

import datasets
import pytest

from datasets_scripts import build
from datasets_scripts.readers import DataFormatError, read_conll_ner
from datasets_scripts.sources import Columns, DataInfo, load_data
from tests.helpers import OWN_TYPES, SENTENCES, conll, own_conll

def test_conll_labels_come_from_the_data_with_iob2_repair(tmp_path):
    dataset, info, report = load_data(own_conll(tmp_path / "raw"))
    assert info == DataInfo("raw", "ner", None, None, None,
                            {"train": "train.conll", "validation": "dev.conll", "test": "test.conll"})
    names = dataset["train"].features["tags"].feature.names
    assert names == ["O", "B-BRAND", "I-BRAND", "B-EVENT", "I-EVENT", "B-PRODUCT", "I-PRODUCT", "B-SPORT", "I-SPORT"]
    assert [names[t] for t in dataset["train"][3]["tags"]] == ["B-BRAND", "O", "O", "B-EVENT"]
    assert report["train"]["iob2_repaired_tags"] == 1
    assert dataset["train"]["image_id"] == ["", "", "", ""] and dataset["train"]["has_image"] == [False] * 4
    assert info.where("train", dataset["train"][1]["id"], 1) == "train.conll:7"


def test_conll_with_image_lines_and_a_bom(tmp_path):
    folder = own_conll(tmp_path / "raw", image_ids=True, names=("train.txt", "valid.txt", "test.txt"))
    (folder / "train.txt").write_text("\ufeff" + conll(SENTENCES, True), encoding="utf-8")
    dataset, info, _ = load_data(folder, name="my-products")
    assert info.name == "my-products" and dataset["train"]["image_id"] == ["0", "1", "2", "3"]


def test_bad_tags_name_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("buy\tO\nit\tX-PRODUCT\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="bad.conll:2: tag 'X-PRODUCT' is not BIO"):
        read_conll_ner(path)
    path.write_text("IMGID:1\nbuy\tB-PRODUCT\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="bad.conll:2: unknown tag 'B-PRODUCT'; this preset expects .*"
                                              "build the data as 'ner'"):
        read_conll_ner(path, ("PER", "LOC", "ORG", "MISC"))


def test_the_twitter_preset_refuses_other_types_and_points_to_the_own_data_route(tmp_path):
    folder = own_conll(tmp_path / "raw", image_ids=True, names=("train.txt", "valid.txt", "test.txt"))
    with pytest.raises(DataFormatError, match="For your own entity types build the data as 'ner'"):
        build.build("twitter2015", folder)
    dataset, report = build.build("ner", folder, dataset_name="my-products")
    assert report["info"]["dataset"] == "my-products" and report["info"]["preset"] is None
    assert dataset["test"].features["tags"].feature.names[1:] == [f"{p}-{t}" for t in OWN_TYPES for p in "BI"]


def test_a_datasets_folder_with_conll_columns(tmp_path):
    """tokens / ner_tags as ClassLabel (save_to_disk), or as strings under other names (Parquet)."""
    label_names = ["O", "B-SPORT", "I-SPORT", "B-BRAND", "B-EVENT", "I-EVENT", "B-PRODUCT", "I-BRAND"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=label_names))})
    rows = {"tokens": [w for w, _ in SENTENCES], "ner_tags": [[label_names.index(t) for t in tags] for _, tags in SENTENCES]}
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "disk"))
    dataset, info, _ = load_data(tmp_path / "disk")
    assert (info.name, info.task, info.preset) == ("disk", "ner", None)
    assert dataset["train"].features["tags"].feature.names == [
        "O", "B-BRAND", "I-BRAND", "B-EVENT", "I-EVENT", "B-PRODUCT", "I-PRODUCT", "B-SPORT", "I-SPORT"]
    assert dataset["validation"]["words"] == [w for w, _ in SENTENCES]

    (tmp_path / "pq").mkdir()
    for name in ("train", "dev", "test"):
        datasets.Dataset.from_dict({"toks": rows["tokens"], "labels": [t for _, t in SENTENCES],
                                    "caption": ["a phone", None, "", "shoes"]}).to_parquet(str(tmp_path / "pq" / f"{name}.parquet"))
    with pytest.raises(ValueError, match="cannot tell the task from the columns \\['toks', 'labels', 'caption'\\]"):
        load_data(tmp_path / "pq")
    with pytest.raises(ValueError, match="no tokens column .*name it with --tokens_column"):
        load_data(tmp_path / "pq", task="ner")
    dataset, info, _ = load_data(tmp_path / "pq", task="ner", columns=Columns(tokens="toks", tags="labels", context="caption"))
    assert dataset["test"]["context"] == ["a phone", "", "", "shoes"]
    assert [dataset["test"].features["tags"].feature.names[t] for t in dataset["test"][3]["tags"]] == \
        ["B-BRAND", "O", "O", "B-EVENT"]


def test_image_paths_in_a_column_resolve_inside_the_image_folder(tmp_path):
    from tests.helpers import random_image

    (tmp_path / "imgs").mkdir()
    random_image(0).save(tmp_path / "imgs" / "a.png")
    split = datasets.Dataset.from_dict({"tokens": [["Paris"], ["Rome"], ["Oslo"]],
                                        "ner_tags": [["B-CITY"], ["B-CITY"], ["O"]],
                                        "image": ["a.png", "../secret.png", None]})
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "d"))
    dataset, _, report = load_data(tmp_path / "d", image_dir=tmp_path / "imgs")
    assert dataset["train"]["has_image"] == [True, False, False]
    assert dataset["train"][0]["image"].size == (56, 40)
    assert report["images"]["invalid"] == 3 and report["images"]["found"] == 3  # per split


def test_relation_and_joint_json_lines_with_their_own_labels(tmp_path):
    mre = tmp_path / "mre"
    mre.mkdir()
    lines = [{"token": ["Ann", "owns", "Rex"], "h": {"pos": [0, 1]}, "t": {"name": "Rex", "pos": [2, 3]},
              "relation": "owns"},
             {"words": ["Bob", "likes", "Kim"], "h": {"pos": [0, 1]}, "t": {"pos": [2, 3]}, "relation": "likes",
              "img_id": "b.jpg"}]
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        (mre / name).write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    dataset, info, _ = load_data(mre)
    assert info.task == "mre" and dataset["train"].features["relation"].names == ["None", "likes", "owns"]
    assert dataset["train"]["image_id"] == ["", "b.jpg"]
    (mre / "test.jsonl").write_text(json.dumps({**lines[0], "h": {"pos": [True, 1]}}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="test.jsonl:1: 'h' span \\[True, 1\\] is not \\[start, end\\) of two ints"):
        load_data(mre)

    joint = tmp_path / "joint"
    joint.mkdir()
    record = {"words": ["Ann", "walks", "Rex", "in", "Oslo"],
              "entities": [{"start": 0, "end": 1, "type": "human"}, {"start": 2, "end": 3, "type": "dog"},
                           {"start": 4, "end": 5, "type": "city"}],
              "relations": [{"head": [0, 1], "tail": [2, 3], "relation": "walks"}]}
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (joint / name).write_text(json.dumps(record) + "\n", encoding="utf-8")
    dataset, info, _ = load_data(joint)
    assert info.task == "mjere"
    assert dataset["train"].features["entities"].feature["type"].names == ["city", "dog", "human"]
    assert dataset["train"].features["triples"].feature["relation"].names == ["walks"]
    assert dataset["train"][0]["triples"] == [{"head_start": 0, "head_end": 1, "tail_start": 2, "tail_end": 3,
                                               "relation": 0}]
    bad = {**record, "relations": [{"head": [0, 1], "tail": [3, 4], "relation": "walks"}]}
    (joint / "dev.jsonl").write_text(json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="dev.jsonl:1: relation 0: tail \\[3, 4\\] is not the \\[start, end\\) "
                                              "span of a listed entity"):
        load_data(joint)


def test_a_hub_id_loads_offline_from_the_cache(tmp_path, monkeypatch):
    """The real `datasets.load_dataset(hub_id)` path, served by a local folder in place of the
    Hub (HF_HUB_OFFLINE=1: nothing is downloaded)."""
    folder = tmp_path / "hub" / "user" / "tweets"
    folder.mkdir(parents=True)
    split = datasets.Dataset.from_dict({"tokens": [["Paris"]], "ner_tags": [["B-CITY"]]})
    for name in ("train", "validation", "test"):
        split.to_parquet(str(folder / f"{name}.parquet"))
    calls = []
    real = datasets.load_dataset

    def local_hub(path, *args, **kwargs):
        calls.append(path)
        return real(str(tmp_path / "hub" / path), *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", local_hub)
    dataset, info, _ = load_data("user/tweets")
    assert calls == ["user/tweets"] and (info.name, info.hub_id) == ("user/tweets", "user/tweets")
    assert dataset["test"].features["tags"].feature.names == ["O", "B-CITY", "I-CITY"]


def test_missing_splits_and_wrong_tasks_are_clear(tmp_path):
    split = datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [["O"]]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="no \\['validation'\\] split"):
        load_data(tmp_path / "d")
    datasets.DatasetDict({"train": split, "dev": split, "test": split}).save_to_disk(str(tmp_path / "e"))
    with pytest.raises(ValueError, match="lacks the columns \\['head', 'tail', 'relation'\\] of 'mre' data"):
        load_data(tmp_path / "e", task="mre")
    with pytest.raises(ValueError, match="holds no data this project reads"):
        load_data(tmp_path)


def test_a_byte_order_mark_is_not_a_format_error(tmp_path):
    from datasets_scripts.readers import read_mnre, read_twitter_ner

    (tmp_path / "t.txt").write_text("\ufeffIMGID:1\nParis\tB-LOC\n", encoding="utf-8")
    assert read_twitter_ner(tmp_path / "t.txt")[0][0].words == ["Paris"]
    line = "{'token': ['Ann', 'x'], 'h': {'name': 'Ann', 'pos': [0, 1]}, 't': {'name': 'x', 'pos': [1, 2]}, " \
           "'img_id': 'a.jpg', 'relation': 'None'}"
    (tmp_path / "m.txt").write_text("\ufeff" + line + "\n", encoding="utf-8")
    assert read_mnre(tmp_path / "m.txt")[0].words == ["Ann", "x"]
    (tmp_path / "m.txt").write_text(line.replace("[0, 1]", "[False, True]") + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="m.txt:1: 'h' span \\[False, True\\] is not \\[start, end\\) of two ints"):
        read_mnre(tmp_path / "m.txt")


def test_contexts_are_joined_by_image_id_where_a_row_has_none(tmp_path):
    split = datasets.Dataset.from_dict({"tokens": [["Paris"], ["Rome"]], "ner_tags": [["B-CITY"], ["O"]],
                                        "image_id": ["1.jpg", "2.jpg"], "context": ["", "given"]})
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "d"))
    (tmp_path / "contexts.jsonl").write_text(
        json.dumps({"image_id": "1.jpg", "context": "a city", "generator": "llava-hf/llava-1.5-7b-hf"}) + "\n"
        + json.dumps({"image_id": "2.jpg", "context": "ignored", "generator": "llava-hf/llava-1.5-7b-hf"}) + "\n")
    dataset, info, _ = load_data(tmp_path / "d", contexts=tmp_path / "contexts.jsonl")
    assert dataset["test"]["context"] == ["a city", "given"]
    assert info.context_settings["model"] == "llava-hf/llava-1.5-7b-hf"
