"""The context generator on a tiny random LLaVA built locally (no downloads)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets_scripts import generate_contexts as gc
from tests.helpers import image_folder


@pytest.fixture
def image_dir(tmp_path):
    folder = image_folder(tmp_path / "images", 5)
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
    assert counts == {"already_done": 0, "cached": 0, "generated": 5, "unreadable": 1}
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
    assert not out.exists()  # never a half-written output
    parts = list((tmp_path / ".ctx.jsonl.parts").glob("part-*.jsonl"))
    assert len(parts) == 1 and len(parts[0].read_text().splitlines()) == 2  # the first batch, whole
    monkeypatch.setattr(gc, "describe", real_describe)
    counts = gc.generate(image_dir, out, tiny_llava, batch_size=2, max_new_tokens=4, generator=generator)
    ids = [r["image_id"] for r in read(out)]
    assert ids == [f"{100 + i}.jpg" for i in range(6)]
    assert counts["already_done"] == 2 and counts["generated"] + counts["unreadable"] == 4
    assert not (tmp_path / ".ctx.jsonl.parts").exists()
    assert gc.generate(image_dir, out, tiny_llava, max_new_tokens=4, generator=generator)["generated"] == 0
    # a new image joins a finished file: the finished file is untouched until the run completes
    before = out.read_text()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image_dir / "200.jpg")
    monkeypatch.setattr(gc, "describe", interrupted)
    calls["n"] = 1
    with pytest.raises(KeyboardInterrupt):
        gc.generate(image_dir, out, tiny_llava, batch_size=2, max_new_tokens=4, generator=generator)
    assert out.read_text() == before
    monkeypatch.setattr(gc, "describe", real_describe)
    assert gc.generate(image_dir, out, tiny_llava, max_new_tokens=4, generator=generator)["generated"] == 1
    assert [r["image_id"] for r in read(out)][-1] == "200.jpg"


# ---------------------------------------------------------------------------------- issue 47
GREEDY = dict(batch_size=2, max_new_tokens=4, temperature=0.0)


def test_contexts_are_keyed_by_image_content(tiny_llava, image_dir, tmp_path, monkeypatch):
    """A renamed copy is described once; a deleted image leaves the output; a replaced image is
    described again; every record carries its image's hash and the settings."""
    import hashlib
    import shutil

    generator = gc.load_generator(tiny_llava, max_new_tokens=4, temperature=0.0)
    out = tmp_path / "ctx.jsonl"
    first = gc.generate(image_dir, out, tiny_llava, generator=generator, **GREEDY)
    assert first == {"already_done": 0, "cached": 0, "generated": 5, "unreadable": 1}
    records = {r["image_id"]: r for r in read(out)}
    assert records["100.jpg"]["sha256"] == hashlib.sha256((image_dir / "100.jpg").read_bytes()).hexdigest()
    assert {k: records["100.jpg"][k] for k in gc.SETTING_KEYS} == {
        "generator": tiny_llava, "prompt": gc.DEFAULT_PROMPT, "max_new_tokens": 4, "temperature": 0.0, "seed": 0}
    shutil.copyfile(image_dir / "101.jpg", image_dir / "copy-of-101.jpg")  # a retweet's image under another name
    (image_dir / "102.jpg").unlink()  # deleted
    Image.fromarray(np.full((20, 20, 3), 200, dtype=np.uint8)).save(image_dir / "103.jpg")  # replaced
    described = []
    real = gc.describe
    monkeypatch.setattr(gc, "describe", lambda g, images: described.append(len(images)) or real(g, images))
    counts = gc.generate(image_dir, out, tiny_llava, generator=generator, **GREEDY)
    assert sum(described) == 1 and counts["generated"] == 1  # only the replaced image
    now = {r["image_id"]: r for r in read(out)}
    assert sorted(now) == ["100.jpg", "101.jpg", "103.jpg", "104.jpg", "105.jpg", "copy-of-101.jpg"]
    assert now["copy-of-101.jpg"]["context"] == now["101.jpg"]["context"] == records["101.jpg"]["context"]
    assert now["103.jpg"]["sha256"] != records["103.jpg"]["sha256"]
    clean = tmp_path / "clean.jsonl"
    gc.generate(image_dir, clean, tiny_llava, generator=generator, **GREEDY)
    assert read(clean) == read(out)  # equal to an uninterrupted run over the folder as it is now


def test_another_prompt_reuses_nothing_and_says_so(tiny_llava, image_dir, tmp_path, caplog):
    out = tmp_path / "ctx.jsonl"
    generator = gc.load_generator(tiny_llava, max_new_tokens=4, temperature=0.0)
    gc.generate(image_dir, out, tiny_llava, generator=generator, **GREEDY)
    other = gc.load_generator(tiny_llava, prompt="who is there?", max_new_tokens=4, temperature=0.0)
    counts = gc.generate(image_dir, out, tiny_llava, prompt="who is there?", generator=other, **GREEDY)
    assert counts == {"already_done": 0, "cached": 0, "generated": 5, "unreadable": 1}
    assert {r["prompt"] for r in read(out)} == {"who is there?"}  # one generator's contexts, never two
    assert "contexts written with another prompt are not reused" in caplog.text


def test_two_runs_on_one_output_at_once_are_refused(tiny_llava, image_dir, tmp_path):
    from shapca_serving.locks import WriterLock

    out = tmp_path / "ctx.jsonl"
    with WriterLock(tmp_path / ".ctx.jsonl.lock", "held"):  # as a first run holds it
        with pytest.raises(ValueError, match=r"another run is writing .*ctx.jsonl right now"):
            gc.generate(image_dir, out, tiny_llava, **GREEDY)
    assert not out.exists()


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


@pytest.mark.slow
def test_two_processes_under_torchrun_write_the_one_output_in_image_order(tiny_llava, image_dir, tmp_path):
    """Greedy decoding (temperature 0): the contexts of two processes are those of one; a
    two-process run with a rank SIGKILLed mid-run is resumed on 1 and on 3 processes: one line
    per image, equal to an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    for i in range(6, 16):  # more images, so a rank can be killed mid-run
        Image.fromarray(np.full((24, 24 + i, 3), 10 * i, dtype=np.uint8)).save(image_dir / f"{100 + i}.jpg")
    args = ["--image-dir", str(image_dir), "--model", tiny_llava, "--batch-size", "1", "--max-new-tokens", "4",
            "--temperature", "0", "--no-context-cache"]  # the parts alone resume (the cache would answer all)
    gc.main([*args, "--output", str(tmp_path / "one.jsonl")])
    expected = (tmp_path / "one.jsonl").read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def command(n):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m",
                "datasets_scripts.generate_contexts", *args]

    out = tmp_path / "two.jsonl"
    done = subprocess.run([*command(2), "--output", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == expected
    for resume_on in (1, 3):
        target = tmp_path / f"killed-{resume_on}.jsonl"
        parts = target.with_name(f".{target.name}.parts")
        process = subprocess.Popen([*command(2), "--output", str(target)], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while len(list(parts.glob("part-*.jsonl"))) < 3:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        workers = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies mid-run; the launcher ends the other
        process.wait(timeout=120)
        assert not target.exists()
        done = subprocess.run([*command(resume_on), "--output", str(target)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert target.read_text() == expected  # one line per image, as the uninterrupted run
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        assert counts["already_done"] >= 3 and counts["cached"] == 0
        assert counts["already_done"] + counts["generated"] + counts["unreadable"] == 16  # every image once
