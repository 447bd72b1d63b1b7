"""The corpus runner under `shapca-predict` (issue 47): a resume keyed by content never mixes,
drops or duplicates a row; outputs are always readable; faults leave the previous output and
the complete parts. Tiny random models saved to folders (no training): the fast tier. A run
"killed after 3 chunks" is a run whose work raises after its third part (what a kill leaves:
complete parts, no output); real SIGKILLs are in test_batch.py and test_predict.py."""

import datetime
import decimal
import errno
import io
import json
import os

import datasets
import pytest

from shapca_serving import predict as predict_cli
from shapca_serving.runner import PartStore, World, plan_chunks, run_parts
from tests.helpers import random_image, same_rows, save_tiny_run, scores, strip_scores

TEXTS = ["Kevin Durant enters Oracle Arena tonight with Stephen Curry", "RT @cnni : Paris floods again",
         "Go #Bears !", "Kevin Durant in Paris", "Obama meets Merkel in Berlin", "Stephen Curry scores 40"]


def _rows(n: int) -> list[dict]:
    return [{"id": i, "text": TEXTS[i % len(TEXTS)] + f" {i}"} for i in range(n)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run-a"))


def _predict(model, source, out, *extra):
    return predict_cli.main([str(model), "--input", str(source), "--output", str(out), "--chunk-size", "4",
                             "--batch-size", "4", "--no-progress", *extra])


def _killed_after(monkeypatch, parts: int):
    """The next run's work raises after `parts` chunks (their parts are written)."""
    real = predict_cli.predict_rows
    calls = {"n": 0}

    def predict_rows(*args, **kwargs):
        work = real(*args, **kwargs)

        def dying(indices):
            if calls["n"] == parts:
                raise KeyboardInterrupt("killed")
            calls["n"] += 1
            return work(indices)

        return dying

    monkeypatch.setattr(predict_cli, "predict_rows", predict_rows)
    return lambda: monkeypatch.setattr(predict_cli, "predict_rows", real)


def _parts(out) -> list:
    return sorted(out.parent.glob(f".{out.name}.parts-*/part-*.jsonl"))


# ---------------------------------------------------------------------------------- item 5
def test_other_weights_at_the_same_path_reuse_nothing(run_a, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    save_tiny_run(model)
    source = _jsonl(tmp_path / "in.jsonl", _rows(48))  # 12 chunks of 4
    out = tmp_path / "out.jsonl"
    revive = _killed_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _predict(model, source, out)
    revive()
    assert len(_parts(out)) == 3 and not out.exists()
    save_tiny_run(model, seed=7)  # other weights, same path, same file names
    _predict(model, source, out)
    assert "the model changed since the run that left" in capsys.readouterr().out
    clean = tmp_path / "clean.jsonl"
    _predict(model, source, clean)
    same_rows(_lines(out), _lines(clean))
    old = tmp_path / "old.jsonl"
    _predict(run_a, source, old)
    assert _lines(old) != _lines(clean)  # the weights do change the rows: the comparison compares something


def test_another_text_column_reuses_nothing(run_a, tmp_path, monkeypatch, capsys):
    rows = [{"id": i, "a": TEXTS[i % 6], "b": TEXTS[(i + 3) % 6] + " again"} for i in range(48)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "in.parquet"))
    out = tmp_path / "out.jsonl"
    revive = _killed_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _predict(run_a, tmp_path / "in.parquet", out, "--text-column", "a")
    revive()
    _predict(run_a, tmp_path / "in.parquet", out, "--text-column", "b")
    assert "the columns changed" in capsys.readouterr().out
    clean = tmp_path / "clean.jsonl"
    _predict(run_a, tmp_path / "in.parquet", clean, "--text-column", "b")
    same_rows(_lines(out), _lines(clean))
    assert [line["a"] for line in _lines(out)] == [r["a"] for r in rows]  # the other column is copied


def test_an_input_rewritten_with_the_same_size_and_mtime_reuses_nothing(run_a, tmp_path, monkeypatch, capsys):
    source = _jsonl(tmp_path / "in.jsonl", _rows(48))
    stat = source.stat()
    out = tmp_path / "out.jsonl"
    revive = _killed_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _predict(run_a, source, out)
    revive()
    other = [{"id": r["id"], "text": r["text"].replace("Kevin", "Kevyn").replace("Paris", "Parys")} for r in _rows(48)]
    _jsonl(source, other)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p, rsync -a and tar restore it
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    _predict(run_a, source, out)
    assert "the input changed" in capsys.readouterr().out
    clean = tmp_path / "clean.jsonl"
    _predict(run_a, _jsonl(tmp_path / "copy.jsonl", other), clean)
    same_rows(_lines(out), _lines(clean))
    assert all("Kevin" not in e["word"] for line in _lines(out) for e in line["entities"])


def test_the_same_key_resumes_without_predicting_a_row_twice(run_a, tmp_path, monkeypatch, capsys):
    source = _jsonl(tmp_path / "in.jsonl", _rows(48))
    out = tmp_path / "out.jsonl"
    revive = _killed_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _predict(run_a, source, out)
    revive()
    capsys.readouterr()
    _predict(run_a, source, out, "--chunk-size", "5")  # another chunk size: the parts are keyed by row
    printed = capsys.readouterr().out
    assert "changed" not in printed and "predicted 36 rows" in printed
    clean = tmp_path / "clean.jsonl"
    _predict(run_a, source, clean)
    same_rows(_lines(out), _lines(clean))
    assert not _parts(out)  # the parts are removed once the output is written


# ---------------------------------------------------------------------------------- item 6
def test_a_full_disk_at_any_point_leaves_the_previous_output_and_the_complete_parts(run_a, tmp_path, monkeypatch):
    source = _jsonl(tmp_path / "in.jsonl", _rows(24))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    real_fsync = os.fsync
    calls = {"n": 0}

    def full_disk_on_the_third(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_on_the_third)  # while a part is written
    with pytest.raises(OSError, match="No space left"):
        _predict(run_a, source, out)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert out.read_text() == "previous\n" and len(_parts(out)) == 2
    assert sorted(p.name for p in tmp_path.glob(".out.jsonl*")) == [_parts(out)[0].parent.name]  # no partial file
    assert not list(_parts(out)[0].parent.glob(".*"))  # no half-written part

    def full_disk_while_assembling(source_, predictions, output_key, handle):
        handle.write("half a line")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict_cli, "write_jsonl", full_disk_while_assembling)
    with pytest.raises(OSError, match="No space left"):
        _predict(run_a, source, out)
    monkeypatch.undo()
    assert out.read_text() == "previous\n" and len(_parts(out)) == 6  # every part complete, kept
    assert not (tmp_path / ".out.jsonl.partial").exists()
    _predict(run_a, source, out)  # space freed: the rerun finishes
    clean = tmp_path / "clean.jsonl"
    _predict(run_a, source, clean)
    same_rows(_lines(out), _lines(clean))


# ---------------------------------------------------------------------------------- items 7-11
def test_copied_values_json_cannot_carry(run_a, tmp_path):
    rows = [{"text": "Kevin Durant in Paris", "x": float("nan"), "when": datetime.datetime(2024, 5, 1, 12, 30),
             "price": decimal.Decimal("1.50")},
            {"text": "Go Bears", "x": float("inf"), "when": datetime.datetime(2024, 5, 2), "price": decimal.Decimal(2)}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "in.parquet"))
    out = tmp_path / "out.jsonl"
    _predict(run_a, tmp_path / "in.parquet", out)
    lines = _lines(out)  # strict JSON: no bare NaN or Infinity
    assert [(line["x"], line["when"], line["price"]) for line in lines] == [
        (None, "2024-05-01T12:30:00", "1.50"), (None, "2024-05-02T00:00:00", "2.00")]
    datasets.Dataset.from_list([{"text": "a", "blob": b"\x00\x01"}]).to_parquet(str(tmp_path / "blob.parquet"))
    with pytest.raises(ValueError, match=r"the column 'blob' holds bytes, which a JSON-lines output cannot carry: "
                                         r"leave it out with --drop-columns blob"):
        _predict(run_a, tmp_path / "blob.parquet", tmp_path / "blob.jsonl")
    _predict(run_a, tmp_path / "blob.parquet", tmp_path / "blob.jsonl", "--drop-columns", "blob")
    assert set(_lines(tmp_path / "blob.jsonl")[0]) == {"entities"}
    _predict(run_a, tmp_path / "blob.parquet", tmp_path / "blob.parquet.out.parquet")
    assert datasets.Dataset.from_parquet(str(tmp_path / "blob.parquet.out.parquet"))[0]["blob"] == b"\x00\x01"


def test_the_parquet_schema_comes_from_the_input_not_the_first_chunk(run_a, tmp_path):
    rows = [{"id": 1, "text": "Kevin Durant", "note": None, "meta": {}},
            {"id": 2, "text": "Paris", "note": None, "meta": {}}] + \
           [{"id": f"t{i}", "text": "Go Bears", "note": "late", "meta": {"k": [1, 2]}} for i in range(6)]
    source = _jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    _predict(run_a, source, out, "--chunk-size", "2")
    loaded = datasets.Dataset.from_parquet(str(out))
    assert loaded.column_names == ["id", "text", "note", "meta", "entities"]
    assert loaded["id"] == ["1", "2"] + [json.dumps(f"t{i}") for i in range(6)]  # mixed types: JSON text
    assert loaded["note"] == [None, None] + ["late"] * 6  # null in the first chunk, text after
    assert loaded["meta"] == ["{}", "{}"] + ['{"k": [1, 2]}'] * 6
    _predict(run_a, source, tmp_path / "fewer.parquet", "--drop-columns", "meta", "text")
    assert datasets.Dataset.from_parquet(str(tmp_path / "fewer.parquet")).column_names == ["id", "note", "entities"]


def test_an_image_column_of_png_bytes(run_a, tmp_path):
    image = random_image(4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    features = datasets.Features({"text": datasets.Value("string"), "image": datasets.Value("binary")})
    datasets.Dataset.from_list([{"text": "Kevin Durant in Paris", "image": buffer.getvalue()},
                                {"text": "Kevin Durant enters Oracle Arena tonight with Stephen Curry",
                                 "image": buffer.getvalue()}],
                               features=features).to_parquet(str(tmp_path / "in.parquet"))
    out = tmp_path / "out.jsonl"
    _predict(run_a, tmp_path / "in.parquet", out)
    from shapca_serving.loading import load_engine

    engine = load_engine(run_a)
    text = "Kevin Durant enters Oracle Arena tonight with Stephen Curry"
    got = _lines(out)[0]["entities"]
    assert scores(_lines(out)[1]["entities"]) == pytest.approx(scores(engine({"text": text, "image": image})),
                                                               abs=1e-5)
    assert strip_scores(got) == strip_scores(engine({"text": "Kevin Durant in Paris", "image": image}))
    assert scores(got) == pytest.approx(scores(engine({"text": "Kevin Durant in Paris", "image": image})), abs=1e-5)
    # the image is read, not ignored: with it the scores differ from the text alone
    with_image = engine({"text": text, "image": image})
    assert with_image and scores(with_image) != pytest.approx(scores(engine(text)), abs=1e-6)


def test_an_input_field_named_like_an_output_key_is_refused(run_a, tmp_path):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": "Kevin Durant", "entities": ["mine"], "note": "x"}])
    with pytest.raises(ValueError, match=r"the column 'entities' would be replaced by the predictions \(entities\); "
                                         r"rename it, or leave it out with --drop-columns entities"):
        _predict(run_a, source, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    _predict(run_a, source, tmp_path / "out.jsonl", "--drop-columns", "entities", "note")
    (line,) = _lines(tmp_path / "out.jsonl")
    assert set(line) == {"text", "entities"} and line["entities"] != ["mine"]
    _predict(run_a, source, tmp_path / "kept.jsonl", "--columns", "note")
    assert set(_lines(tmp_path / "kept.jsonl")[0]) == {"note", "entities"}


def test_an_output_inside_the_input_folder_is_refused(run_a, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    datasets.Dataset.from_list(_rows(4)).to_parquet(str(folder / "part.parquet"))
    with pytest.raises(SystemExit):
        _predict(run_a, folder, folder / "out.parquet")
    assert "is inside the --input folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- item 13
def test_every_process_gets_rows_when_there_are_fewer_than_n_chunks(tmp_path):
    assert [len(c) for c in plan_chunks(list(range(400)), 2, 1024)] == [200, 200]
    assert [len(c) for c in plan_chunks(list(range(10)), 3, 1024)] == [4, 4, 2]
    assert [len(c) for c in plan_chunks(list(range(10)), 1, 4)] == [4, 4, 2]
    class Beside(World):  # processes run one after another here; their plans come from the same parts
        def gather(self, value):
            return [value] * self.size

    store = PartStore(tmp_path / "parts")
    snapshot = store.done
    store.done = lambda keys=None: {}  # (what both processes read before either wrote)
    done = [run_parts(list(range(400)), store, lambda keys: [k * 2 for k in keys], Beside(rank, 2), 1024)
            for rank in (0, 1)]
    store.done = snapshot
    assert [d["items"] for d in done] == [200, 200]
    assert store.done() == {k: k * 2 for k in range(400)}
    # any number of processes resumes any other's parts: three processes find nothing to do
    assert [run_parts(list(range(400)), store, None, Beside(rank, 3), 7)["items"] for rank in range(3)] == [0, 0, 0]


# ---------------------------------------------------------------------------------- the process group
def _in_world(rank, port, made_outside, out_dir):
    import torch.distributed as dist

    from shapca_serving.runner import world

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if made_outside:  # accelerate / a user made the group: it is theirs to destroy
        dist.init_process_group("gloo", rank=rank, world_size=2)
    with world() as place:
        gathered = place.gather(rank * 10)
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"gathered": gathered, "alive": dist.is_initialized(),
                                                          "owned": place.owns_group}))
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("made_outside", [False, True])
def test_the_run_destroys_the_process_group_it_made_and_only_that(tmp_path, made_outside):
    """A gloo group left to the interpreter's exit can abort a process that finished its work
    (SIGABRT, "terminate called without an active exception"; it failed CI once under torchrun).
    `with world()` destroys the group it made when the run ends, and leaves one made before it."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_in_world, args=(port, made_outside, tmp_path), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"gathered": [0, 10], "alive": made_outside, "owned": False}
