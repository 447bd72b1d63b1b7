"""Nothing lost, nothing trusted by accident: each case of the 'nothing lost' issue, as a user
and a careful reviewer would try it."""

from __future__ import annotations

import json
import shutil
import unicodedata

import datasets
import pytest
import pyarrow.parquet as pq
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from datasets_scripts import build
from modeling_shapca import ShapCAForTokenClassification
from shapca_serving import predict as predict_cli
from modeling_shapca.inference import tokenize_with_offsets
from tests.helpers import random_image, raw_twitter

@pytest.fixture(scope="module")
def model(trained_model_dir):
    return ShapCAForTokenClassification.from_pretrained(trained_model_dir).eval()


# ----------------------------------------------------------------------------- datasets
def test_hub_export_embeds_image_bytes_and_no_local_path(tmp_path):
    raw = raw_twitter(tmp_path / "raw")
    images = tmp_path / "images"
    images.mkdir()
    random_image(0).save(images / "11.jpg")
    build.main(["twitter2015", "--raw-dir", str(raw), "--image-dir", str(images), "--output-dir",
                str(tmp_path / "out"), "--hub-folder", str(tmp_path / "hub")])
    table = pq.read_table(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    first = table.column("image")[0].as_py()
    assert first["path"] == "11.jpg" and first["bytes"] == (images / "11.jpg").read_bytes()
    shutil.rmtree(images)  # the Hub copy stands alone
    hub, _ = build.load_built(tmp_path / "hub")
    assert hub["train"][0]["image"].size == random_image(0).size and hub["train"]["has_image"] == [True, False]
    for path in [*(tmp_path / "hub").rglob("*"), *(tmp_path / "out").rglob("*")]:
        if path.is_file():
            assert str(tmp_path).encode() not in path.read_bytes(), path
    card = (tmp_path / "hub" / "README.md").read_text()
    for field in ("license:", "task_categories:", "language:", "pretty_name:", "## Citation"):
        assert field in card


def test_a_local_hub_copy_trains_like_a_saved_dataset(tiny_text_model, tmp_path):
    import train
    from tests.helpers import base_args

    build.main(["twitter2015", "--raw-dir", str(raw_twitter(tmp_path / "raw")), "--output-dir", str(tmp_path / "out"),
                "--hub-folder", str(tmp_path / "hub")])
    results = train.main(base_args(tiny_text_model, tmp_path / "run", "--dataset_path", str(tmp_path / "hub"),
                                   "--num_train_epochs", "1"))
    assert len([e for e in results["log_history"] if "loss" in e]) == 1  # 2 sentences: one step


def test_image_ids_stay_inside_the_image_folder(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    random_image(0).save(secret / "x.jpg")
    images = tmp_path / "images"
    images.mkdir()
    random_image(1).save(images / "ok.jpg")
    text = "".join(f"IMGID:{i}\nParis\tB-LOC\n\n" for i in ("../secret/x", str(secret / "x"), "../../../../etc/passwd", "ok"))
    report = build.main(["twitter2015", "--raw-dir", str(raw_twitter(tmp_path / "raw", text)), "--image-dir",
                         str(images), "--output-dir", str(tmp_path / "out")])
    assert report["images"]["invalid"] == 9 and report["images"]["found"] == 3
    assert datasets.load_from_disk(str(tmp_path / "out"))["train"]["has_image"] == [False, False, False, True]


def test_an_empty_split_is_refused_and_the_old_output_kept(tmp_path):
    out = tmp_path / "out"
    build.main(["twitter2015", "--raw-dir", str(raw_twitter(tmp_path / "raw")), "--output-dir", str(out)])
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="'validation' split .* is empty"):
        build.main(["twitter2015", "--raw-dir", str(raw_twitter(tmp_path / "raw2", empty="valid.txt")),
                    "--output-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == before
    assert len(datasets.load_from_disk(str(out))["validation"]) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# ----------------------------------------------------------------------------- prediction CLI
def cli(model_dir, src, dst, *extra):
    return predict_cli.main([str(model_dir), "--input", str(src), "--output", str(dst), *extra])


def test_cli_failure_leaves_the_output_untouched_and_names_the_line(trained_model_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    lines = [{"text": f"Kevin Durant {i}"} for i in range(4)] + [{"text": None}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(TypeError, match=r"in.jsonl:5: 'text' must be a string"):
        cli(trained_model_dir, src, out, "--batch-size", "2")
    assert out.read_text() == "previous results\n"
    src.write_text('{"text": "a"}\n{"words": "Kevin Durant"}\n')
    with pytest.raises(TypeError, match=r"in.jsonl:2: 'words' must be a list of strings"):
        cli(trained_model_dir, src, out)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    src.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b", "image": str(broken)}) + "\n")
    with pytest.raises(ValueError, match=r"in.jsonl:2: image .* cannot be read"):
        cli(trained_model_dir, src, out, "--batch-size", "4")
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "in.jsonl", "out.jsonl"]


def test_cli_refuses_same_file_and_bad_batch_size(trained_model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Kevin Durant"}\n')
    for extra, dst in ((), src), (("--batch-size", "0"), tmp_path / "out.jsonl"):
        with pytest.raises(SystemExit):
            cli(trained_model_dir, src, dst, *extra)
    assert "is the --input file" in capsys.readouterr().err
    assert src.read_text() == '{"text": "Kevin Durant"}\n' and not (tmp_path / "out.jsonl").exists()


# ----------------------------------------------------------------------------- trust
@pytest.fixture
def planted(trained_model_dir, tmp_path):
    """A model folder whose tokenizer is code that writes a file when it runs."""
    folder = tmp_path / "planted"
    shutil.copytree(trained_model_dir, folder)
    marker = tmp_path / "pwned"
    (folder / "evil_tokenizer.py").write_text(
        "from transformers import BertTokenizer\n"
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "class EvilTokenizer(BertTokenizer):\n    pass\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]}
    config["tokenizer_class"] = "EvilTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder, marker


def test_local_classes_and_cli_run_no_code_from_the_model_folder(planted, tmp_path, monkeypatch):
    folder, marker = planted
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = ShapCAForTokenClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match="processor"):
        model.predict("Kevin Durant")
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Kevin Durant"}\n')
    with pytest.raises(ValueError, match="processor"):
        cli(folder, src, tmp_path / "out.jsonl")
    assert not marker.exists()


# ----------------------------------------------------------------------------- silent wrong results
def test_per_input_arguments_are_checked(model):
    with pytest.raises(TypeError, match="contexts: expected a list with one entry per input"):
        model.predict(["Kevin Durant", "Paris"], contexts="ab")
    for size in (-1, 0, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            model.predict(["Kevin Durant"], batch_size=size)
    with pytest.raises(ValueError, match="'pairs' is only read by relation extraction"):
        model.predict("Kevin Durant", pairs=[[[0, 1], [1, 2]]])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_pil_images_of_any_mode(model, mode):
    image = random_image(2).convert(mode) if mode != "I;16" else Image.new("I;16", (20, 20))
    assert model.predict("Kevin Durant", images=image) == model.predict("Kevin Durant", images=image.convert("RGB"))


def test_a_huge_image_is_an_unreadable_image(model, tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (120, 120)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 14,400 px: a decompression bomb at this limit
    with pytest.raises(ValueError, match="input 0: image .* cannot be read: DecompressionBomb"):
        model.predict("Kevin Durant", images=str(path))


@pytest.mark.parametrize("pairs, message", [
    ([(0, 2)], "pair 0 head must be a word span"),
    ([[[0, 1]]], "pair 0 must be \\[head, tail\\]"),
    ([[[0.0, 2], [2, 3]]], "head must be a word span"),
    ([[[0, 2], [2, 9]]], "tail span \\[2, 9\\] is not inside the 4 words"),
    ([[[2, 2], [0, 1]]], "head span \\[2, 2\\] is not inside"),
    ("0-2", "'pairs' must be a list"),
])
def test_mre_pairs_are_checked(processor, pairs, message):
    from tests.helpers import tiny_model

    model = tiny_model("mre").eval()
    with pytest.raises((TypeError, ValueError), match=message):
        model.predict("Kevin Durant joins Warriors", pairs=pairs, processor=processor)
    with pytest.raises(ValueError, match="needs 'pairs'"):
        model.predict("Kevin Durant joins Warriors", processor=processor)
    with pytest.raises(ValueError, match="only read by relation extraction"):
        tiny_model("mjere").eval().predict("Kevin Durant", pairs=[[[0, 1], [1, 2]]], processor=processor)


@pytest.mark.parametrize("text, words", [
    ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),
    ("สวัสดีครับ ไทย", ["สวัสดีครับ", "ไทย"]),
    ("مَرْحَبًا بِكُم!", ["مَرْحَبًا", "بِكُم", "!"]),
    (unicodedata.normalize("NFD", "Café Zoë"), [unicodedata.normalize("NFD", "Café"), unicodedata.normalize("NFD", "Zoë")]),
])
def test_words_keep_their_combining_marks(text, words):
    got, offsets = tokenize_with_offsets(text)
    assert got == words and [text[a:b] for a, b in offsets] == words


# ----------------------------------------------------------------------------- fuzz
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(TEXT, st.lists(TEXT, max_size=5)), min_size=1, max_size=3),
       contexts=st.one_of(st.none(), TEXT), data=st.binary(max_size=64), with_image=st.booleans())
def test_predict_fuzz_gives_results_or_clear_errors(model, tmp_path, texts, contexts, data, with_image):
    image = tmp_path / "fuzz.bin"
    image.write_bytes(data)
    kwargs = dict(contexts=[contexts] * len(texts), images=[str(image) if with_image else None] * len(texts))
    try:
        out = model.predict(texts, is_split_into_words=False, **kwargs)
    except (ValueError, TypeError) as error:
        assert str(error).startswith(("input ", "got ")) or "must be" in str(error), error
        return
    assert len(out) == len(texts)
    for text, entities in zip(texts, out):
        source = text if isinstance(text, str) else " ".join(text)
        for entity in entities:
            assert source[entity["start"]:entity["end"]] == entity["word"] and 0 <= entity["score"] <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_contexts_reader_fuzz(tmp_path, data):
    from datasets_scripts.contexts import load_context_settings, load_contexts
    from datasets_scripts.readers import DataFormatError

    path = tmp_path / "ctx.jsonl"
    path.write_bytes(data)
    try:
        load_contexts(path)
        load_context_settings(path)
    except (DataFormatError, UnicodeDecodeError, ValueError):
        pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.lists(TEXT, min_size=1, max_size=6), min_size=1, max_size=3), context=TEXT)
def test_processor_fuzz(processor, words, context):
    try:
        batch = processor(words=words, contexts=[context] * len(words), pos_tags=[["X"] * len(w) for w in words])
    except (ValueError, TypeError):
        return
    assert batch["word_mask"].sum(1).tolist() == [len(w) for w in words]
    assert torch.all(batch["word_index"][batch["word_mask"].bool()] > 0)
