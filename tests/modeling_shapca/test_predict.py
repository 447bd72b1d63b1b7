import json

import pytest
import torch

from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor
from shapca_serving import predict as predict_cli
from modeling_shapca.inference import bio_to_spans, normalize_inputs, tokenize_with_offsets
from tests.helpers import random_image


@pytest.fixture(scope="module")
def model(trained_model_dir):
    model = ShapCAForTokenClassification.from_pretrained(trained_model_dir).eval()
    with torch.no_grad():  # make the tiny model tag capitalised words: deterministic entities
        model.crf.transitions.zero_()
    return model


def force_tags(model, monkeypatch, tag_for_word):
    """Replace the emissions so that word j gets tag tag_for_word(j) (tests the plumbing)."""
    label2id = model.config.label2id
    original = model.classifier.forward

    def emissions(features):
        logits = torch.zeros(*features.shape[:2], len(label2id))
        for j in range(features.shape[1]):
            logits[:, j, label2id[tag_for_word(j)]] = 10.0
        return logits + 0 * original(features).sum()

    monkeypatch.setattr(model.classifier, "forward", emissions)


def test_tokenizer_offsets_and_spans():
    words, offsets = tokenize_with_offsets("RT @cnni: Kevin Durant's #Bears!")
    assert words == ["RT", "@cnni", ":", "Kevin", "Durant's", "#Bears", "!"]
    assert all("RT @cnni: Kevin Durant's #Bears!"[a:b] == w for w, (a, b) in zip(words, offsets))
    assert bio_to_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]
    assert normalize_inputs(["Kevin", "Durant"]) == ([["Kevin", "Durant"]], True)
    assert normalize_inputs(["Kevin", "Durant"], is_split_into_words=False) == (["Kevin", "Durant"], False)


def test_predict_offsets_order_and_empty_inputs(model, monkeypatch):
    force_tags(model, monkeypatch, lambda j: {0: "B-PER", 1: "I-PER"}.get(j, "O"))
    text = "  Kevin   Durant scores"
    single = model.predict(text)
    assert [{k: v for k, v in e.items() if k != "score"} for e in single] == [
        {"entity_group": "PER", "word": "Kevin   Durant", "start": 2, "end": 16}]
    assert single[0]["score"] == pytest.approx(1.0, abs=1e-3)  # emissions of 10 vs 0: near-certain tags
    batch = model.predict(["", "Taylor Swift sings", ["Barack", "Obama", "speaks"], "   "], batch_size=2)
    assert batch[0] == [] and batch[3] == [] and batch[0] is not batch[3]
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in batch[1]] == [("PER", "Taylor Swift", 0, 12)]
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in batch[2]] == [("PER", "Barack Obama", 0, 12)]


def test_predict_is_batch_invariant(model):
    texts = ["Kevin Durant scores in Oakland", "Go #Bears", "Paris floods again today after the storm"]
    one, three = model.predict(texts, batch_size=1), model.predict(texts, batch_size=3)
    strip = [[{k: v for k, v in e.items() if k != "score"} for e in row] for row in one]
    assert strip == [[{k: v for k, v in e.items() if k != "score"} for e in row] for row in three]
    assert [e["score"] for row in one for e in row] == pytest.approx([e["score"] for row in three for e in row], abs=1e-5)


def test_predict_with_images(model, tmp_path):
    path = tmp_path / "tweet.jpg"
    random_image(3).save(path)
    out = model.predict(["Kevin Durant", "Paris"], images=[str(path), random_image(1)], contexts=["a player", None])
    assert len(out) == 2
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    with pytest.raises(ValueError, match="input 1: image .* cannot be read"):
        model.predict(["a", "b"], images=[None, str(broken)], is_split_into_words=False)
    with pytest.raises(TypeError, match="input 0: 'image'"):
        model.predict(["a"], images=[123], is_split_into_words=False)
    with pytest.raises(ValueError, match="2 images for 1 inputs"):
        model.predict("a b", images=[None, None])


@pytest.mark.parametrize("bad", [3, [1, 2], None, [["a"], 5]])
def test_predict_rejects_non_text(model, bad):
    with pytest.raises(TypeError):
        model.predict(bad)


def strip(records):
    return [{k: v for k, v in e.items() if k != "score"} for e in records]


def test_a_1000_word_text_is_windowed_over_its_whole_length(model, monkeypatch):
    force_tags(model, monkeypatch, lambda j: "B-PER" if j % 3 == 0 else "O")  # word j of each window
    words = [f"w{i}" for i in range(1000)]
    text = "  " + "  ".join(words) + " ."
    records = model.predict(text)
    assert all(text[e["start"]:e["end"]] == e["word"] for e in records)
    ends = [(e["start"], e["end"]) for e in records]
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))  # no word in two entities
    assert records[-1]["start"] > len(text) - 40  # found to the end of the text, not cut at max_words
    assert records[0]["word"] == "w0"


def test_windows_that_disagree_are_merged_word_by_word(model, monkeypatch):
    """Emissions by position inside a window: local words 0-1 PER, 6-7 LOC. Windows of 8 words
    sharing 4: [0,8) [4,12) [8,16) [12,20). Each word is decided by the window where it is most
    central: words 4-5 (PER in window 2, O in window 1) are window 1's, so O; LOC survives only
    at words 18-19, whose sole window is the last."""
    force_tags(model, monkeypatch, lambda j: {0: "B-PER", 1: "I-PER", 6: "B-LOC", 7: "I-LOC"}.get(j, "O"))
    words = [f"w{i}" for i in range(20)]
    records = model.predict(" ".join(words), window=8, stride=4)
    assert [(e["entity_group"], e["word"]) for e in records] == [("PER", "w0 w1"), ("LOC", "w18 w19")]
    assert strip(model.predict(" ".join(words[:8]), window=8, stride=4)) == [
        {"entity_group": "PER", "word": "w0 w1", "start": 0, "end": 5},
        {"entity_group": "LOC", "word": "w6 w7", "start": 18, "end": 23}]


def test_windowing_keeps_what_fits_in_one_window(model, monkeypatch):
    force_tags(model, monkeypatch, lambda j: "B-PER")  # every word an entity, whatever its position
    text = " ".join(f"Word{i}" for i in range(30))
    whole = model.predict(text)
    assert strip(model.predict(text, window=12, stride=6)) == strip(whole)
    assert len(whole) == 30
    with torch.no_grad():
        model.crf.transitions.zero_()
    scores = [e["score"] for e in model.predict(text, window=12, stride=6)]
    assert scores == pytest.approx([e["score"] for e in whole], abs=1e-3)


def test_window_arguments_are_checked(model):
    with pytest.raises(ValueError, match="stride=8 must be smaller than the window of 8 words"):
        model.predict("a b c", window=8, stride=8)
    with pytest.raises(ValueError, match="window must be a positive int"):
        model.predict("a b c", window=0)


def test_unknown_label_ids_in_config(trained_model_dir):
    model = ShapCAForTokenClassification.from_pretrained(trained_model_dir).eval()
    del model.config.id2label[3]
    with pytest.raises(ValueError, match="no label for tag ids \\[3\\]"):
        model.predict("Kevin Durant")


def test_predict_generates_missing_contexts(model, trained_model_dir, tiny_llava, monkeypatch):
    processor = ShapCAProcessor.from_pretrained(trained_model_dir, trust_remote_code=True)
    from modeling_shapca.context_generation import ContextSettings

    processor.set_context_settings(ContextSettings(tiny_llava, max_new_tokens=4))
    calls = []
    real = processor.generate_contexts

    def spy(images, **kwargs):
        calls.append(len(images))
        return real(images, **kwargs)

    monkeypatch.setattr(processor, "generate_contexts", spy)
    out = model.predict(["Kevin Durant", "Paris", "Oakland"], images=[random_image(0), None, random_image(1)],
                        contexts=[None, None, "given"], processor=processor, is_split_into_words=False)
    assert calls == [1]  # only the image without a context
    assert len(out) == 3


def test_predict_cli(trained_model_dir, tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "text": "Kevin Durant scores"}, {"id": "b", "words": ["Obama", "in", "Paris"], "context": "x"},
        {"id": "c", "text": ""},
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    assert predict_cli.main([str(trained_model_dir), "--input", str(inputs), "--output", str(out), "--batch-size", "2"]) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[2]["entities"] == []
    assert all(isinstance(r["entities"], list) for r in rows)
    inputs.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: give exactly one of 'text' \(a string\) or 'words'"):
        predict_cli.main([str(trained_model_dir), "--input", str(inputs), "--output", str(out)])
    long = " ".join(f"Word{i}" for i in range(600))  # windowed, as the pipeline is
    inputs.write_text(json.dumps({"id": "long", "text": long}) + "\n")
    predict_cli.main([str(trained_model_dir), "--input", str(inputs), "--output", str(out), "--window", "50",
                      "--stride", "10"])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    pipe = ShapCAForTokenClassification.from_pretrained(trained_model_dir).eval()
    assert row["entities"] == pipe.predict(long, window=50, stride=10)
    assert all(long[e["start"]:e["end"]] == e["word"] for e in row["entities"])
    with pytest.raises(SystemExit):
        predict_cli.main([str(trained_model_dir), "--input", str(inputs), "--output", str(out), "--window", "8",
                          "--stride", "8"])


@pytest.mark.slow
def test_captured_inference_path_gives_the_same_records(model):
    """predict(compile=True): inputs padded to shape buckets and a compiled model; the padded
    words and subwords change nothing (same tags, scores within float noise)."""
    import torch._dynamo

    texts = ["Kevin Durant scores in Oakland", "Go #Bears", "Paris floods again today after the storm"]
    eager = model.predict(texts, batch_size=2)
    torch._dynamo.reset()
    compiled = model.predict(texts, batch_size=2, compile="aot_eager")  # traced like inductor, no codegen (fast)
    strip = lambda rows: [[{k: v for k, v in e.items() if k != "score"} for e in row] for row in rows]  # noqa: E731
    assert strip(compiled) == strip(eager)
    assert [e["score"] for r in compiled for e in r] == pytest.approx([e["score"] for r in eager for e in r], abs=1e-4)
    torch._dynamo.reset()


def test_progress_bar_on_long_inputs(model, capsys):
    model.predict(["Kevin Durant"] * 3, show_progress=True)
    assert "multimodal-ner" in capsys.readouterr().err
    model.predict(["Kevin Durant"] * 3)
    assert "multimodal-ner" not in capsys.readouterr().err


def _cli(model_dir, inputs, out, *extra):
    return predict_cli.main([str(model_dir), "--input", str(inputs), "--output", str(out), *extra])


@pytest.mark.parametrize("line, message", [
    (b'{"id": NaN, "text": "Paris"}', "in.jsonl:3: a field cannot be written back as JSON"),
    (b'{"id": "\\ud800", "text": "Paris"}', "in.jsonl:3: a field holds text that is not valid Unicode"),
    (b'{"text": "Par\xffis"}', "in.jsonl:3: not valid UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "in.jsonl:3: JSON nested too deeply"),
])
def test_cli_faults_are_found_before_any_work(trained_model_dir, tmp_path, monkeypatch, line, message):
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b'{"text": "Kevin Durant"}\n{"text": "Obama"}\n' + line + b"\n")
    loaded = []
    monkeypatch.setattr("shapca_serving.loading.load_trained", lambda *a, **k: loaded.append(1))
    with pytest.raises(ValueError, match=message):
        _cli(trained_model_dir, inputs, tmp_path / "out.jsonl")
    assert loaded == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_cli_output_modes_folders_and_relative_images(trained_model_dir, tmp_path):
    import os

    (tmp_path / "data").mkdir()
    random_image(0).save(tmp_path / "data" / "tweet.png")
    inputs = tmp_path / "data" / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Kevin Durant", "image": "tweet.png"}) + "\n")  # beside the input file
    old = os.umask(0o022)
    try:
        _cli(trained_model_dir, inputs, tmp_path / "out.jsonl")
        assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "out.jsonl", 0o640)
        _cli(trained_model_dir, inputs, tmp_path / "out.jsonl")
        assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o640  # an existing output keeps its mode
    finally:
        os.umask(old)
    with pytest.raises(SystemExit):
        _cli(trained_model_dir, inputs, tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out.jsonl"]  # no partial or lock file left


def test_cli_killed_or_doubled_leaves_no_partial_output(trained_model_dir, tmp_path):
    """Real processes: SIGTERM leaves the previous output and the complete parts (no partial
    file), a SIGKILL's complete parts are reused by the next run, and a second run on the same
    output is refused while the first one works."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "text": f"Kevin Durant scores {i} points in Oakland tonight"}) + "\n"
                              for i in range(1500)))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    partial = tmp_path / ".out.jsonl.partial"
    command = [sys.executable, "-m", "shapca_serving.predict", str(trained_model_dir), "--input", str(inputs),
               "--output", str(out), "--batch-size", "4", "--chunk-size", "64"]

    def parts():
        return list(tmp_path.glob(".out.jsonl.parts-*/part-*.jsonl"))

    def started():
        before = len(parts())
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(parts()) <= before:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return process

    process = started()
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0 and "another run is writing" in second.stderr
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert not partial.exists() and out.read_text() == "previous\n"
    assert not list(tmp_path.glob(".out.jsonl.parts-*/.*partial*"))  # no part half-written
    kept = len(parts())
    process = started()
    process.kill()
    process.wait(timeout=60)
    assert len(parts()) > kept and out.read_text() == "previous\n"  # complete parts stay after a SIGKILL ...
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    redone = int(done.stdout.split("predicted ")[1].split(" rows")[0])
    assert redone < 1500  # ... and the next run does not predict them again
    assert not partial.exists() and not parts()
    assert len(out.read_text().splitlines()) == 1500


# ---------------------------------------------------------------- edges (issue 34)
@pytest.mark.parametrize("text, words", [
    ("a \u200c b", ["a", "b"]), ("a \u200d b", ["a", "b"]), ("\u200c", []), ("a \u034f b", ["a", "b"]),
    ("a \u3164 b \u115f c \uffa0", ["a", "b", "c"]),
    ("x\u200dy \U0001F468\u200d\U0001F469", ["x\u200dy", "\U0001F468\u200d\U0001F469"]),  # inside a word they stay
])
def test_invisible_characters_are_never_words(text, words):
    assert tokenize_with_offsets(text)[0] == words


def test_empty_batch_and_lone_surrogates(model):
    from modeling_shapca.pipeline_shapca import ShapCAPipeline

    pipe = ShapCAPipeline(model=model, processor=ShapCAProcessor.from_pretrained(model.name_or_path))
    assert pipe([]) == []
    assert model.predict([]) == []
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        pipe([], batch_size=0)
    with pytest.raises(ValueError, match=r"^input 1: a lone surrogate '\\ud800' at character 3"):
        pipe(["fine", "bad\ud800 text"])
    with pytest.raises(ValueError, match=r"^input 0: word 1: a lone surrogate"):
        pipe([{"words": ["ok", "\udfff"]}])
    with pytest.raises(ValueError, match=r"^input 0: context: a lone surrogate"):
        pipe({"text": "ok", "context": "a \ud83d"})


def test_words_with_whitespace_are_read_as_in_training(model):
    """Training keeps a CoNLL token such as `New York` or a lone U+00A0 verbatim; prediction
    takes the same word lists (offsets refer to the words joined by one space)."""
    records = model.predict([["I", "love", "New York", "\xa0", "!"]], is_split_into_words=True)
    assert isinstance(records, list)
    for entity in records[0]:
        assert "I love New York \xa0 !"[entity["start"]:entity["end"]] == entity["word"]
