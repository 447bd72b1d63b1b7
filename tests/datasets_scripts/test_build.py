import json

import datasets
import pytest
from PIL import Image

from datasets_scripts import build
from datasets_scripts.contexts import load_contexts
from datasets_scripts.relations import MJERE_RELATIONS, MNRE_RELATIONS, group_mjere
from datasets_scripts.readers import DataFormatError, MnreInstance
from tests.helpers import ROOT, random_image

DATA = ROOT / "data"


def test_twitter2015_build_with_images_and_contexts(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (raw / name).write_text("IMGID:11\nKevin\tB-PER\nDurant\tI-PER\n\nIMGID:12\nin\tO\nParis\tB-OTHER\n", encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    random_image(0).save(images / "11.jpg")
    (images / "12.jpg").write_bytes(b"not a jpeg")
    contexts = tmp_path / "ctx.jsonl"
    contexts.write_text(json.dumps({"image_id": "11", "context": "A player.", "generator": "llava", "prompt": "p"}) + "\n")
    out = tmp_path / "out"
    report = build.main(["twitter2015", "--raw-dir", str(raw), "--image-dir", str(images), "--contexts",
                         str(contexts), "--output-dir", str(out), "--hub-folder", str(tmp_path / "hub")])
    dataset = datasets.load_from_disk(str(out))
    train = dataset["train"]
    assert train["has_image"] == [True, False] and isinstance(train[0]["image"], Image.Image)
    assert train[1]["image"] is None  # corrupt: kept, marked, listed
    assert train["context"] == ["A player.", ""]
    assert report["images"]["corrupt"] == 3 and report["images"]["found"] == 3
    names = train.features["tags"].feature.names
    assert [names[t] for t in train[1]["tags"]] == ["O", "B-MISC"]
    assert json.loads((out / "build_report.json").read_text())["images"]["corrupt"] == 3
    hub = datasets.load_dataset("parquet", data_dir=str(tmp_path / "hub" / "data"))
    assert hub["train"].num_rows == 2
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| train | 2 |" in card and "`B-MISC`" in card


def test_shipped_twitter2015_and_mnre_build(tmp_path):
    twitter, report = build.build("twitter2015", DATA / "twitter2015")
    assert {s: len(d) for s, d in twitter.items()} == {"train": 4000, "validation": 1000, "test": 3257}
    assert report["images"]["missing"] == 8257 and not any(twitter["test"]["has_image"])
    mnre, _ = build.build("mnre", DATA / "mnre")
    assert {s: len(d) for s, d in mnre.items()} == {"train": 12247, "validation": 1624, "test": 1614}
    assert mnre["train"].features["relation"].names == list(MNRE_RELATIONS)
    first = mnre["train"][0]
    assert first["head"] == {"start": 8, "end": 10} and first["tail"] == {"start": 2, "end": 5}
    assert mnre["train"].features["relation"].int2str(first["relation"]) == "/misc/misc/part_of"


def test_mjere_sizes_and_triples():
    mjere, _ = build.build("mjere", DATA / "mnre")
    assert {s: len(d) for s, d in mjere.items()} == {"train": 3618, "validation": 496, "test": 475}
    assert len(MJERE_RELATIONS) == 21
    for row in mjere["test"]:
        spans = {(e["start"], e["end"]) for e in row["entities"]}
        assert row["triples"]
        for t in row["triples"]:
            assert (t["head_start"], t["head_end"]) in spans and (t["tail_start"], t["tail_end"]) in spans


def _inst(words, relation, line):
    return MnreInstance(words=words, head=(0, 1), tail=(1, 2), image_id="x", relation=relation, line=line)


def test_group_mjere_recipe():
    a, b = ["a", "b"], ["c", "d"]
    lines = [_inst(a, "None", 1), _inst(a, "/per/per/peer", 2), _inst(a, "/per/per/couple", 3),
             _inst(a, "None", 4), _inst(a, "/per/per/peer", 5), _inst(b, "/loc/loc/contain", 6)]
    groups = group_mjere(lines)
    assert [[i.line for i in g] for g in groups] == [[2, 3], [5], [6]]


def test_contexts_loader_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"image_id": "1", "context": "a"}\nnot json\n')
    with pytest.raises(DataFormatError, match=":2: not JSON"):
        load_contexts(path)
    path.write_text('{"image_id": "1", "context": "a"}\n{"image_id": "1", "context": "b"}\n')
    with pytest.raises(DataFormatError, match="two different contexts"):
        load_contexts(path)
    path.write_text('{"image_id": 1, "context": "a"}\n')
    with pytest.raises(DataFormatError, match="string 'image_id'"):
        load_contexts(path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        build.build("conll03", DATA)
