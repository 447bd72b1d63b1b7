"""Batch prediction over corpora (`shapca-predict`, issue 37): datasets and Parquet in and out,
N processes under torchrun giving the output of one, resumable chunks after a kill, and the
faults named by split and row."""

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest

from shapca_serving import predict as predict_cli
from tests.helpers import ROOT, random_image, same_rows, strip_scores

WORDS = ["Kevin", "Durant", "enters", "Oracle", "Arena", "with", "Stephen", "Curry", "in", "Paris", "tonight"]


def _rows(n: int) -> list[dict]:
    return [{"id": f"tweet-{i}", "words": WORDS[i % 5:] + WORDS[: i % 7 + 1], "n": i} for i in range(n)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(trained_model_dir, tmp_path_factory):
    """The reference: one process, JSON lines in and out."""
    work = tmp_path_factory.mktemp("single")
    source = _jsonl(work / "in.jsonl", _rows(60))
    predict_cli.main([str(trained_model_dir), "--input", str(source), "--output", str(work / "out.jsonl"),
                      "--chunk-size", "7", "--no-progress"])
    return source, [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]


def test_a_saved_dataset_in_and_parquet_out(trained_model_dir, single, tmp_path, capsys):
    _, expected = single
    rows = _rows(60)
    dataset = datasets.Dataset.from_list([{"tokens": r["words"], "id": r["id"], "n": r["n"],
                                           "nested": {"a": 1}} for r in rows])
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "preds.parquet"
    predict_cli.main([str(trained_model_dir), "--input", str(tmp_path / "saved"), "--split", "test", "--output",
                      str(out), "--tokens_column", "tokens", "--batch-size", "4", "--no-progress"])
    loaded = datasets.Dataset.from_parquet(str(out))
    assert loaded.column_names == ["id", "n", "entities"]  # the plain columns copied; records nested
    assert isinstance(loaded.features["entities"], (datasets.List, datasets.Sequence))
    same_rows(list(loaded), [{"id": e["id"], "n": e["n"], "entities": e["entities"]} for e in expected])
    assert "rows per process: 60" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.parquet", "saved"]  # no parts or locks left


def test_a_parquet_file_with_images_in(trained_model_dir, tmp_path):
    image = random_image(2)
    dataset = datasets.Dataset.from_list([{"text": "Kevin Durant in Paris", "image": image, "key": 1},
                                          {"text": "Go #Bears", "image": None, "key": 2}],
                                         features=datasets.Features({"text": datasets.Value("string"),
                                                                     "image": datasets.Image(),
                                                                     "key": datasets.Value("int64")}))
    dataset.to_parquet(str(tmp_path / "in.parquet"))
    out = tmp_path / "out.jsonl"
    predict_cli.main([str(trained_model_dir), "--input", str(tmp_path / "in.parquet"), "--output", str(out),
                      "--no-progress"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["key"] for line in lines] == [1, 2] and all(isinstance(line["entities"], list) for line in lines)
    from modeling_shapca.pipeline_shapca import ShapCAPipeline
    from shapca_serving.loading import load_trained

    model, processor = load_trained(str(trained_model_dir))
    pipe = ShapCAPipeline(model=model.eval(), processor=processor)
    assert strip_scores(lines[0]["entities"]) == strip_scores(pipe({"text": "Kevin Durant in Paris",
                                                                      "image": image}))


def test_a_missing_column_names_the_columns_that_exist(trained_model_dir, tmp_path):
    datasets.Dataset.from_list([{"sentence": "a b", "id": 1}]).to_parquet(str(tmp_path / "in.parquet"))
    with pytest.raises(ValueError, match=r"in.parquet: give exactly one of a text column or a tokens column .*its "
                                         r"columns: \['sentence', 'id'\]"):
        predict_cli.main([str(trained_model_dir), "--input", str(tmp_path / "in.parquet"), "--output",
                          str(tmp_path / "o.jsonl")])
    with pytest.raises(ValueError, match=r"has no column 'body' \(--text-column\); its columns: \['sentence', 'id'\]"):
        predict_cli.main([str(trained_model_dir), "--input", str(tmp_path / "in.parquet"), "--output",
                          str(tmp_path / "o.jsonl"), "--text-column", "body"])
    assert not (tmp_path / "o.jsonl").exists()
    # a bad row of a dataset is named by its row index when it is reached
    datasets.Dataset.from_list([{"words": ["ok"], "id": 1}, {"words": ["fine", ""], "id": 2}]).to_parquet(
        str(tmp_path / "bad.parquet"))
    with pytest.raises(ValueError, match=r"bad.parquet row 1: word 1 must be a non-empty string, got ''"):
        predict_cli.main([str(trained_model_dir), "--input", str(tmp_path / "bad.parquet"), "--output",
                          str(tmp_path / "o.jsonl")])
    assert not (tmp_path / "o.jsonl").exists()


def _torchrun(args, nproc):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "shapca_serving.predict", *args]


def test_two_processes_under_torchrun_give_the_output_of_one(trained_model_dir, single, tmp_path):
    source, expected = single
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(_torchrun([str(trained_model_dir), "--input", str(source), "--output", str(out),
                                     "--chunk-size", "7", "--no-progress"], 2),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    same_rows([json.loads(line) for line in out.read_text().splitlines()], expected)
    summary = [line for line in done.stdout.splitlines() if "rows per process" in line]
    assert len(summary) == 1 and summary[0].endswith("rows per process: 32, 28")  # chunks 0,2,.. and 1,3,..
    # the default chunk size (1024) on 60 rows: each process still gets an even share (issue 47)
    out = tmp_path / "default.jsonl"
    done = subprocess.run(_torchrun([str(trained_model_dir), "--input", str(source), "--output", str(out),
                                     "--no-progress"], 2),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].endswith("rows per process: 30, 30")
    same_rows([json.loads(line) for line in out.read_text().splitlines()], expected)


def test_a_sigkill_mid_run_then_the_same_command_gives_the_same_output(trained_model_dir, single, tmp_path):
    """A process killed while it writes its part (chunks of 2 rows): the rerun keeps the
    complete chunks, redoes the rest, and writes what an uninterrupted run writes."""
    source, expected = single
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "shapca_serving.predict", str(trained_model_dir), "--input", str(source),
               "--output", str(out), "--chunk-size", "2", "--batch-size", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(".out.jsonl.parts-*/part-*.jsonl"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    kept = {p.name for p in tmp_path.glob(".out.jsonl.parts-*/part-*.jsonl")}
    assert 3 <= len(kept) < 30 and not out.exists()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    same_rows([json.loads(line) for line in out.read_text().splitlines()], expected)
    redone = int(done.stdout.split("predicted ")[1].split(" rows")[0])
    assert redone == 60 - 2 * len(kept)  # the complete chunks were not predicted again


def test_the_onnx_backend_under_torchrun_gives_the_torch_records(trained_model_dir, single, tmp_path):
    import shutil

    from shapca_serving.onnx_export import export_onnx

    source, expected = single
    folder = tmp_path / "run"
    shutil.copytree(trained_model_dir, folder)
    export_onnx(str(folder), folder, with_vision=False)
    out = tmp_path / "out.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(_torchrun([str(folder), "--input", str(source), "--output", str(out), "--chunk-size", "7",
                                     "--backend", "onnx", "--no-progress"], 2),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = list(datasets.Dataset.from_parquet(str(out)))
    assert [strip_scores(g["entities"]) for g in got] == [strip_scores(e["entities"]) for e in expected]
    assert [g["id"] for g in got] == [e["id"] for e in expected]
