"""The context generator on a tiny random LLaVA built locally (no downloads)."""

import json

import numpy as np
import pytest
from PIL import Image

from datasets_scripts import generate_contexts as gc


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(folder / f"{100 + i}.jpg")
    (folder / "105.jpg").write_bytes(b"broken")
    (folder / "notes.txt").write_text("not an image")
    return folder


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generates_one_record_per_image(tiny_llava, image_dir, tmp_path):
    out = tmp_path / "ctx.jsonl"
    counts = gc.main(["--image-dir", str(image_dir), "--model", tiny_llava, "--output", str(out),
                      "--batch-size", "2", "--max-new-tokens", "5", "--prompt", "what is it?"])
    records = read(out)
    assert [r["image_id"] for r in records] == [f"{100 + i}.jpg" for i in range(6)]
    assert counts == {"already_done": 0, "generated": 5, "unreadable": 1}
    assert all(r["prompt"] == "what is it?" and r["generator"] == tiny_llava and r["max_new_tokens"] == 5
               for r in records)
    assert not (tmp_path / "ctx.jsonl.partial").exists()
    assert all(r["context"] for r in records[:5])
    assert records[5]["context"] == "" and "error" in records[5]


def test_resume_after_interruption_neither_loses_nor_duplicates(tiny_llava, image_dir, tmp_path, monkeypatch):
    out = tmp_path / "ctx.jsonl"
    generator = gc.load_generator(tiny_llava)
    real_describe, calls = gc.describe, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return real_describe(*args, **kwargs)

    monkeypatch.setattr(gc, "describe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gc.generate(image_dir, out, tiny_llava, batch_size=2, max_new_tokens=4, generator=generator)
    partial = tmp_path / "ctx.jsonl.partial"
    assert not out.exists()  # never a half-written output
    assert [r["image_id"] for r in read(partial)] == ["100.jpg", "101.jpg"]
    with partial.open("a") as handle:  # and a record cut in the middle of its write
        handle.write('{"image_id": "102.jpg", "cont')
    monkeypatch.setattr(gc, "describe", real_describe)
    counts = gc.generate(image_dir, out, tiny_llava, batch_size=2, max_new_tokens=4, generator=generator)
    ids = [r["image_id"] for r in read(out)]
    assert ids == [f"{100 + i}.jpg" for i in range(6)]
    assert counts["already_done"] == 2 and counts["generated"] + counts["unreadable"] == 4
    assert not partial.exists()
    assert gc.generate(image_dir, out, tiny_llava, generator=generator)["generated"] == 0
    # a new image joins a finished file: the finished file is untouched until the run completes
    before = out.read_text()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image_dir / "200.jpg")
    monkeypatch.setattr(gc, "describe", interrupted)
    calls["n"] = 1
    with pytest.raises(KeyboardInterrupt):
        gc.generate(image_dir, out, tiny_llava, batch_size=2, max_new_tokens=4, generator=generator)
    assert out.read_text() == before
    monkeypatch.setattr(gc, "describe", real_describe)
    assert gc.generate(image_dir, out, tiny_llava, generator=generator)["generated"] == 1
    assert [r["image_id"] for r in read(out)][-1] == "200.jpg"


def test_one_generator_for_builder_and_inference(tiny_llava, processor):
    """The processor describes images with the module and settings the builder used."""
    from modeling_shapca.context_generation import ContextSettings

    settings = ContextSettings(tiny_llava, prompt="what is it?", max_new_tokens=3, temperature=0.0)
    processor.set_context_settings(settings)
    try:
        assert processor.context_settings() == settings
        image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
        direct = gc.load_generator(tiny_llava, prompt="what is it?", max_new_tokens=3, temperature=0.0)
        assert processor.generate_contexts([image]) == direct.describe([image])
    finally:
        processor.set_context_settings(None)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ContextSettings(tiny_llava, max_new_tokens=0)


def test_contexts_join_twitter_ids(tmp_path):
    from datasets_scripts.ner import build_twitter_ner

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (raw / name).write_text("IMGID:100\nParis\tB-LOC\n", encoding="utf-8")
    dataset = build_twitter_ner(raw, contexts={"100.jpg": "A city."})
    assert dataset["train"]["context"] == ["A city."]


def test_two_processes_under_torchrun_write_the_one_output_in_image_order(tiny_llava, image_dir, tmp_path):
    """Greedy decoding (temperature 0): the contexts of two processes are those of one; a killed
    two-process run (a part with two complete records and a cut one) is resumed by the same
    command, and the parts are gone at the end."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    args = ["--image-dir", str(image_dir), "--model", tiny_llava, "--batch-size", "2", "--max-new-tokens", "4",
            "--temperature", "0"]
    gc.main([*args, "--output", str(tmp_path / "one.jsonl")])
    expected = (tmp_path / "one.jsonl").read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "datasets_scripts.generate_contexts", *args]
    out = tmp_path / "two.jsonl"
    done = subprocess.run([*command, "--output", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == expected
    resumed = tmp_path / "resumed.jsonl"
    lines = expected.splitlines(keepends=True)
    (tmp_path / "resumed.jsonl.partial.rank-1").write_text(lines[3] + lines[1] + lines[4][:20])  # killed mid-line
    done = subprocess.run([*command, "--output", str(resumed)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert resumed.read_text() == expected
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"already_done": 2, "generated": 3, "unreadable": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "one.jsonl", "resumed.jsonl", "two.jsonl"]
