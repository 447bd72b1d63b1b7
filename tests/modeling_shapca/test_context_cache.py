"""The context cache (issue 43, item 2): keyed by the image's bytes and the generator settings,
shared by `shapca-contexts`, the PyTorch runner and the ONNX predictor, safe for several
processes, whole entries only, bounded in size."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets_scripts import generate_contexts as gc
from modeling_shapca.context_cache import ContextCache, fill_contexts, image_digest
from modeling_shapca.context_generation import ContextSettings
from modeling_shapca.engine import InferenceEngine
from modeling_shapca.inference import load_image
from modeling_shapca.torch_runner import TorchRunner
from tests.helpers import ROOT, image_folder, tiny_model, tiny_processor

SETTINGS = ContextSettings("some/generator", max_new_tokens=4, temperature=0.0)


@pytest.fixture
def image_dir(tmp_path):
    return image_folder(tmp_path / "images", 4)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------- the store itself
def test_entries_round_trip_and_keys_follow_content_and_settings(context_cache_folder):
    cache = ContextCache.from_env()
    assert cache.folder == context_cache_folder
    cache.put("a" * 64, "A dog on a beach.", SETTINGS)
    assert cache.get("a" * 64, SETTINGS) == "A dog on a beach."
    assert cache.get("b" * 64, SETTINGS) is None  # other bytes
    other_prompt = ContextSettings("some/generator", prompt="Who is there?", max_new_tokens=4, temperature=0.0)
    assert cache.key("a" * 64, other_prompt) != cache.key("a" * 64, SETTINGS)
    assert cache.get("a" * 64, other_prompt) is None  # another prompt is another key
    for changed in (ContextSettings("other/generator", max_new_tokens=4, temperature=0.0),
                    ContextSettings("some/generator", max_new_tokens=5, temperature=0.0),
                    ContextSettings("some/generator", max_new_tokens=4, temperature=1.0)):
        assert cache.get("a" * 64, changed) is None
    entry = json.loads(cache.path(cache.key("a" * 64, SETTINGS)).read_text())
    assert entry["image_sha256"] == "a" * 64 and entry["settings"]["prompt"] == SETTINGS.prompt
    assert not list(context_cache_folder.rglob(".*partial*"))


@pytest.mark.parametrize("damage", ["garbage", "other key", "bad checksum", "not utf-8"])
def test_a_corrupt_entry_is_refused_removed_and_regenerated(context_cache_folder, damage, caplog):
    cache = ContextCache.from_env()
    cache.put("a" * 64, "A dog.", SETTINGS)
    path = cache.path(cache.key("a" * 64, SETTINGS))
    entry = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text('{"key": "trunc')
    elif damage == "other key":
        path.write_text(json.dumps({**entry, "key": "0" * 64}))
    elif damage == "bad checksum":
        path.write_text(json.dumps({**entry, "context": "A cat."}))
    else:
        path.write_bytes(b"\xff\xfe\x00")
    assert cache.get("a" * 64, SETTINGS) is None
    assert not path.exists()
    assert str(path) in caplog.text and "generated again" in caplog.text
    calls = []
    records = [{"image": Image.new("RGB", (4, 4)), "context": None}]
    records[0]["image"].info["shapca_sha256"] = "a" * 64
    fill_contexts(records, SETTINGS, cache, lambda images: calls.append(len(images)) or ["A new dog."])
    assert calls == [1] and records[0]["context"] == "A new dog."
    assert cache.get("a" * 64, SETTINGS) == "A new dog."


def test_the_size_bound_removes_the_least_recently_used(tmp_path):
    import os

    cache, context = ContextCache(tmp_path / "cache"), "x" * 300
    cache.put(f"{0:064d}", context, SETTINGS)
    one = cache.path(cache.key(f"{0:064d}", SETTINGS)).stat().st_size  # every entry has this size
    cache.max_bytes = int(6.5 * one)  # 6 entries fit
    for i in range(6):
        cache.put(f"{i:064d}", context, SETTINGS)
        os.utime(cache.path(cache.key(f"{i:064d}", SETTINGS)), (1000 + i, 1000 + i))  # a clear order
    assert cache.size() == 6 * one
    assert cache.get(f"{0:064d}", SETTINGS) == context  # read: now the most recently used
    cache.put(f"{6:064d}", context, SETTINGS)  # 7 entries: over the bound, trimmed to <= 90 % of it (5)
    kept = [i for i in range(7) if cache.path(cache.key(f"{i:064d}", SETTINGS)).exists()]
    assert kept == [0, 3, 4, 5, 6]  # the two least recently used went; entry 0 was read, so it stays
    assert cache.size() == 5 * one


def test_a_writer_measures_the_folder_at_its_first_write_and_after_each_percent_of_the_bound(tmp_path,
                                                                                                 monkeypatch):
    cache, scans = ContextCache(tmp_path / "cache", max_bytes=100_000), []
    real = cache._entries
    monkeypatch.setattr(cache, "_entries", lambda: scans.append(1) or real())
    cache.put("0" * 64, "x", SETTINGS)
    assert len(scans) == 1  # the first write measures
    one = cache.path(cache.key("0" * 64, SETTINGS)).stat().st_size  # every entry's size
    for i in range(1, 40):
        cache.put(f"{i:064d}", "x", SETTINGS)
    # then one scan each time the writes since the last one reach 1 % of the bound (1,000 bytes)
    every = -(-1000 // one)  # writes per scan
    assert every > 1 and len(scans) == 1 + 39 // every


def test_environment_moves_disables_and_bounds_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPCA_CONTEXT_CACHE", "off")
    assert ContextCache.from_env() is None
    monkeypatch.delenv("SHAPCA_CONTEXT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SHAPCA_CONTEXT_CACHE_MAX_MB", "2")
    cache = ContextCache.from_env()
    assert cache.folder == tmp_path / "xdg" / "shapca" / "contexts" and cache.max_bytes == 2 * 2 ** 20
    monkeypatch.setenv("SHAPCA_CONTEXT_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="SHAPCA_CONTEXT_CACHE_MAX_MB must be a positive number of megabytes, "
                                         "got 'lots'"):
        ContextCache.from_env()
    with pytest.raises(TypeError, match="context_cache must be True, False, a folder or a ContextCache, got int"):
        ContextCache.resolve(3)


WRITER = """
import sys
from modeling_shapca.context_cache import ContextCache
from modeling_shapca.context_generation import ContextSettings
cache = ContextCache(sys.argv[1])
settings = ContextSettings("some/generator", max_new_tokens=4, temperature=0.0)
for i in range(200):
    cache.put(f"{i % 50:064d}", f"context {i % 50} " * 50, settings)
"""


def test_processes_writing_at_once_leave_whole_entries(tmp_path):
    folder = tmp_path / "shared-cache"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=ROOT) for _ in range(3)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    cache = ContextCache(folder)
    assert [cache.get(f"{i:064d}", SETTINGS) for i in range(50)] == [f"context {i} " * 50 for i in range(50)]
    assert len(list(folder.rglob("*.json"))) == 50 and not list(folder.rglob(".*partial*"))


# ---------------------------------------------------------------------------------- the tools on it
def test_a_second_run_under_other_file_names_generates_nothing(tiny_llava, image_dir, tmp_path):
    """Written by one `shapca-contexts` process, found by another under other names."""
    args = ["--model", tiny_llava, "--max-new-tokens", "4", "--temperature", "0"]
    first = gc.main(["--image-dir", str(image_dir), "--output", str(tmp_path / "a.jsonl"), *args])
    assert first == {"already_done": 0, "cached": 0, "generated": 4, "unreadable": 0}
    renamed = tmp_path / "retweets"
    renamed.mkdir()
    for i, path in enumerate(sorted(image_dir.iterdir())):
        shutil.copyfile(path, renamed / f"rt-{i}.png.jpg")
    done = subprocess.run([sys.executable, "-m", "datasets_scripts.generate_contexts", "--image-dir", str(renamed),
                           "--output", str(tmp_path / "b.jsonl"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "already_done": 0, "cached": 4, "generated": 0, "unreadable": 0}
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in b] == [f"rt-{i}.png.jpg" for i in range(4)]  # the file name stays the id
    assert [r["context"] for r in b] == [r["context"] for r in a]
    off = gc.main(["--image-dir", str(renamed), "--output", str(tmp_path / "c.jsonl"), "--no-context-cache", *args])
    assert off["cached"] == 0 and off["generated"] == 4


def spied_engine(tiny_llava, monkeypatch, **runner):
    processor = tiny_processor()
    processor.set_context_settings(ContextSettings(tiny_llava, max_new_tokens=4, temperature=0.0))
    described = []
    real = processor.generate_contexts
    monkeypatch.setattr(processor, "generate_contexts",
                        lambda images, **kw: described.append(len(images)) or real(images, **kw))
    return InferenceEngine(TorchRunner(tiny_model("ner").eval(), processor, **runner)), described


def test_serving_reads_what_shapca_contexts_wrote_and_caches_what_it_writes(tiny_llava, image_dir, tmp_path,
                                                                             monkeypatch):
    gc.main(["--image-dir", str(image_dir), "--output", str(tmp_path / "a.jsonl"), "--model", tiny_llava,
             "--max-new-tokens", "4", "--temperature", "0"])
    written = {r["image_id"]: r["context"] for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    engine, described = spied_engine(tiny_llava, monkeypatch)
    copy = tmp_path / "retweet.jpg"
    shutil.copyfile(image_dir / "101.jpg", copy)
    records = [{"text": "Kevin Durant", "image": str(copy)}, {"text": "Paris", "image": str(image_dir / "100.jpg")}]
    engine(records)
    assert described == []  # both from the cache that shapca-contexts filled
    runner = engine.runner
    rows = []
    monkeypatch.setattr(runner, "run", lambda batch: rows.extend(batch) or type(runner).run(runner, batch))
    engine(records)
    assert [r["context"] for r in rows] == [written["101.jpg"], written["100.jpg"]]
    # a new picture, twice in one batch: described once, then cached
    new = tmp_path / "new.png"
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(new)
    engine([{"text": "a", "image": str(new)}, {"text": "b", "image": str(new)}])
    assert described == [1]
    assert ContextCache.from_env().get(sha(new), runner.processor.context_settings())
    # the same file name with other bytes is another image
    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(new)
    engine([{"text": "a", "image": str(new)}])
    assert described == [1, 1]
    # an image in memory is keyed by its pixels; the cache off neither reads nor writes
    in_memory = Image.fromarray(np.full((20, 30, 3), 7, dtype=np.uint8))
    engine([{"text": "a", "image": in_memory}, {"text": "b", "image": in_memory.copy()}])
    assert described == [1, 1, 1]
    engine_off, described_off = spied_engine(tiny_llava, monkeypatch, context_cache=False)
    engine_off([{"text": "a", "image": str(copy)}])
    assert described_off == [1]


def test_image_digest_is_the_file_bytes_hash(image_dir):
    path = image_dir / "100.jpg"
    assert image_digest(load_image(str(path), "x")) == sha(path)
    with path.open("rb") as handle:
        assert image_digest(load_image(handle, "x")) == sha(path)
    decoded = Image.open(path).convert("RGB")
    assert image_digest(decoded) != sha(path) and image_digest(decoded) == image_digest(decoded.copy())


def test_the_onnx_runner_reads_the_cache_and_never_generates(tmp_path):
    from shapca_serving.onnx_predictor import OnnxRunner

    runner = OnnxRunner.__new__(OnnxRunner)  # the context step alone (the graphs are tested in test_onnx.py)
    runner.context_generator, runner.context_settings = SETTINGS.model, SETTINGS
    runner.context_cache = ContextCache(tmp_path / "cache")
    cached, missing = Image.new("RGB", (4, 4)), Image.new("RGB", (5, 5))
    runner.context_cache.put(image_digest(cached), "From the cache.", SETTINGS)
    records = [{"_name": "input 0", "image": cached, "context": None}, {"_name": "input 1", "image": None,
                                                                         "context": None}]
    runner.add_contexts(records)
    assert [r["context"] for r in records] == ["From the cache.", None]
    with pytest.raises(ValueError, match="input 0: this model reads a context written by some/generator .* the "
                                         "context cache has none for this image"):
        runner.add_contexts([{"_name": "input 0", "image": missing, "context": None}])
    runner.add_contexts([{"_name": "input 0", "image": missing, "context": None}], generate_contexts=False)


def test_a_dataset_image_column_is_keyed_by_its_file_bytes(image_dir):
    """shapca-predict over a `datasets` Image() column reads the files' bytes, so the cache
    finds the contexts shapca-contexts wrote for the same pictures."""
    import datasets

    from shapca_serving.batch import DatasetSource

    paths = [str(image_dir / "100.jpg"), str(image_dir / "101.jpg")]
    dataset = datasets.Dataset.from_dict({"text": ["a", "b"], "image": paths}).cast_column("image", datasets.Image())
    source = DatasetSource(dataset, "tweets", {"text": None, "tokens": None, "image": None, "context": None,
                                               "pairs": None})
    rows = source.rows_at([0, 1])
    digests = [image_digest(load_image(row["inputs"]["image"], row["line"])) for row in rows]
    assert digests == [sha(image_dir / "100.jpg"), sha(image_dir / "101.jpg")]
