"""Batch prediction over files and corpora, for every task, on one process or N (not part of
the remote code).

    shapca-predict MODEL --input inputs.jsonl --output preds.jsonl
    shapca-predict MODEL --input user/tweets --split test --output preds.parquet
    torchrun --nproc_per_node 4 -m shapca_serving.predict MODEL --input corpus/ --output preds.parquet
    accelerate launch -m shapca_serving.predict MODEL --input user/tweets --split train --output preds.parquet

Inputs: a JSON-lines file, a Parquet file or folder, a save_to_disk folder, or a Hub dataset id
with --split; dataset columns by --text-column / --tokens-column, --image-column,
--context-column, --pairs-column (training's underscore spellings work too), plain columns (ids)
copied to the output. Output: JSON lines, or Parquet with the records as nested columns (by the
suffix), rows in input order. Under torchrun or accelerate launch each process predicts its share
of --chunk-size row chunks and the main process writes the one output; a rerun after a kill keeps
the complete chunks (shapca_serving/batch.py). A progress bar (rows/s) on the main process
(--no-progress silences it) and one summary line with the rows per process.

A JSON-lines input has one record per line (docs/records.md has the formats):

* `{"text": "..."}` or `{"words": ["...", ...]}` (a list; a string is an error), optionally
  `"image"` (a file path or URL) and `"context"` (a string);
* relation extraction (MRE) also needs `"pairs"`: `[[head, tail], ...]`, each a word span
  `[start, end)`.

Inputs of any length: longer ones are read as overlapping windows (`--window`, `--stride`; see
the pipeline). Any other key (an id, say) is copied to the output line, which adds the predictions as the
pipeline returns them: `"entities"` (NER), `"relations"` (MRE), or `"entities"` and
`"relations"` (MJERE). Lines are written in input order; blank lines are skipped. Every fault of
an input line (not UTF-8, not JSON, nested too deeply, a value that cannot be written back such
as NaN or a lone surrogate) is reported with its file and line before any prediction runs; an
unreadable image stops the run with its file and line. A relative image path resolves against
the input file's folder (not the working directory). Image URLs are fetched within
`modeling_shapca/limits.py`'s limits (http(s) only, FETCH_TIMEOUT_S, FETCH_MAX_BYTES,
FETCH_MAX_REDIRECTS); the CLI runs on your machine, so it may fetch from your own network
(private addresses are refused only by the demo app, which serves others).

Writing is atomic: the output goes to `.<name>.partial` beside `--output`, renamed into place
once every record is predicted, so an error, Ctrl-C, SIGTERM or a kill leaves an existing output
untouched and never a partial one (SIGTERM removes the partial file; after a SIGKILL the next run
reuses it). The output gets the umask's permissions, or keeps those of the file it replaces.
One run writes an output at a time: a second run naming the same `--output` is refused while
the first holds its lock. The input may not be the output, nor may the output be a folder.

Backends: both run the one inference engine (`modeling_shapca/engine.py`): `--backend torch`
(default) with the PyTorch model as its runner; `--backend onnx` as
`onnx_predictor.ShapCAOnnxPredictor` on the folder's `onnx/` files (`shapca-export`; add
`--quantized` for the int8 graph), with the same records and no PyTorch installed.

Remote code: by default the model is built from this package's own classes and nothing from
the model folder is executed; `--trust-remote-code` loads the folder's code (for models whose
code differs from this package's) and passes the same consent to its processor.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from modeling_shapca.tasks import get_task

from .batch import (
    DEFAULT_CHUNK_SIZE, INPUT_COLUMNS, assemble, chunks, lock_part, open_source, parts_folder, predict_part, summary,
    world,
)
from .locks import WriterLock

PIPELINE_KEYS = ("text", "words", "image", "context", "pairs")


def _check_line_value(value, where: str) -> None:
    """A passed-through value must be writable as JSON on its output line: no NaN or Infinity
    (not JSON), no lone surrogate (not UTF-8). Checked before any prediction runs."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{where}: a field holds text that is not valid Unicode ({error.reason} at "
                         f"{error.object[error.start:error.end]!r})") from None
    except ValueError as error:
        raise ValueError(f"{where}: a field cannot be written back as JSON ({error})") from None


def parse_line(raw: bytes, line_no: int, path: Path) -> dict | None:
    """One input line as `{"line": file:line, "record", "inputs"}` (None for a blank line); every
    fault named with its `file:line`."""
    where = f"{path}:{line_no}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not valid UTF-8 (byte {error.start + 1} of the line)") from None
    if line_no == 1:
        line = line.removeprefix("\ufeff")
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    if not isinstance(record, dict) or (("text" in record) == ("words" in record)):
        raise ValueError(f"{where}: expected an object with exactly one of 'text' or 'words'")
    _check_line_value(record, where)
    image = record.get("image")
    inputs = {k: record[k] for k in PIPELINE_KEYS if k in record}
    if isinstance(image, str) and "://" not in image and not Path(image).is_absolute():
        inputs["image"] = str(path.parent / image)
    return {"line": where, "record": record, "inputs": inputs}


def read_inputs(path: Path) -> list[dict]:
    """The records of a JSONL file, each with `_name` = `file:line` for error messages. Every
    fault of a line (bytes that are not UTF-8, bad or too deeply nested JSON, values that could
    not be written back) is reported with its `file:line` before any work. A relative image
    path resolves against the input file's folder."""
    with path.open("rb") as handle:
        entries = [parse_line(raw, line_no, path) for line_no, raw in enumerate(handle, start=1)]
    return [e for e in entries if e is not None]


class OutputFile:
    """Writes `target` as a whole or not at all: into `.<name>.partial` beside it, renamed into
    place when complete. The output keeps an existing file's mode (else the umask's); one run at
    a time per output (a lock beside it: a second writer is refused while the first runs); the
    partial file of a killed run is reused by the next one; SIGTERM removes it like an error."""

    def __init__(self, target: Path):
        self.target = target
        self.partial = target.with_name(f".{target.name}.partial")
        self.lock_path = target.with_name(f".{target.name}.lock")

    def __enter__(self):
        import signal

        if self.target.is_dir():
            raise ValueError(f"--output {self.target} is a folder; name a file")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.lock_path, f"another run is writing {self.target} right now; wait for it or "
                                                "choose another --output").acquire()
        self._previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)  # before the partial file exists: it never outlives a SIGTERM
        try:
            self.handle = open(self.partial, "w", encoding="utf-8")  # truncates a killed run's leftover
        except BaseException:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous)
            self._lock.release()
            raise
        return self.handle

    def __exit__(self, kind, error, traceback):
        import signal

        try:
            if kind is None:
                if not self.handle.closed:  # (a Parquet output is written by its own writer)
                    self.handle.flush()
                    os.fsync(self.handle.fileno())
                    self.handle.close()
                if self.target.exists():
                    os.chmod(self.partial, self.target.stat().st_mode & 0o7777)
                os.replace(self.partial, self.target)
            else:
                self.handle.close()
                self.partial.unlink(missing_ok=True)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous)
            self._lock.release()
        return False


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through OutputFile.__exit__: the partial file goes


def build_engine(model, processor, trust_remote_code: bool = False):
    """The inference engine with the model as its runner: this package's engine, or with
    consent the engine shipped with the model's own code (where it has one)."""
    from modeling_shapca import engine, torch_runner

    if trust_remote_code:
        package = type(model).__module__.rsplit(".", 1)[0]
        try:
            engine = importlib.import_module(f"{package}.engine")
            torch_runner = importlib.import_module(f"{package}.torch_runner")
        except ImportError:  # remote code written before the engine: this package's engine drives it
            pass
    return engine.InferenceEngine(torch_runner.TorchRunner(model, processor))


def output_line(record: dict, prediction, output_key: str) -> str:
    out = dict(record)
    if output_key:
        out[output_key] = prediction
    else:
        out.update(prediction)
    return json.dumps(out, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--input", required=True,
                        help="a JSON-lines file, a Parquet file or folder, a save_to_disk folder, or a Hub dataset id")
    parser.add_argument("--output", required=True, type=Path, help="a .jsonl file, or .parquet (nested columns)")
    parser.add_argument("--split", help="the split of a dataset folder or Hub dataset")
    for role, flag in (("text", "text"), ("tokens", "tokens"), ("image", "image"), ("context", "context"),
                       ("pairs", "pairs")):
        parser.add_argument(f"--{flag}-column", f"--{flag}_column", dest=f"{role}_column",
                            help=f"the dataset column of the {role} (default: {' or '.join(INPUT_COLUMNS[role])})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help="rows per resumable chunk (a rerun after a kill keeps the complete chunks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    parser.add_argument("--window", type=int, help="words per window over long inputs (default: the model's max_words)")
    parser.add_argument("--stride", type=int, help="words shared by consecutive windows (default: window // 4)")
    parser.add_argument("--ignore-labels", nargs="+", metavar="LABEL", help="labels left out of the predictions")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="torch: the PyTorch pipeline; onnx: ONNX Runtime on the folder's onnx/ files (no torch)")
    parser.add_argument("--quantized", action="store_true", help="with --backend onnx: the int8 graph")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the code shipped in the model folder (off: this package's classes are used)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.window is not None and args.window < 1:
        parser.error(f"--window must be a positive integer, got {args.window}")
    if args.stride is not None and not 0 <= args.stride < (args.window or 2 ** 31):
        parser.error(f"--stride must be >= 0 and smaller than --window, got {args.stride}")
    source_path = Path(args.input)
    if source_path.suffix.lower() in (".jsonl", ".json") and not source_path.is_file():
        parser.error(f"--input {args.input} is not a file")
    if args.output.exists() and source_path.exists() and args.output.resolve() == source_path.resolve():
        parser.error("--output is the --input file; write the predictions to another file")
    if args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; name a file")
    if args.output.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        parser.error(f"--output {args.output}: name a .jsonl or a .parquet file")
    if args.backend == "onnx" and (args.bf16 or args.trust_remote_code):
        parser.error("--bf16 and --trust-remote-code are options of --backend torch")
    if args.quantized and args.backend != "onnx":
        parser.error("--quantized needs --backend onnx")

    columns = {role: getattr(args, f"{role}_column") for role in INPUT_COLUMNS}
    source = open_source(args.input, args.split, columns)  # a JSON-lines file is checked whole here
    place = world()
    key = {"input": source.fingerprint, "model": str(args.model), "backend": args.backend, "quantized": args.quantized,
           "window": args.window, "stride": args.stride, "ignore": args.ignore_labels, "chunk": args.chunk_size,
           "bf16": args.bf16}
    folder = parts_folder(args.output, key)
    spans = chunks(len(source), args.chunk_size)
    mine = spans[place.rank::place.size]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(OutputFile(args.output)) if place.is_main else None  # claimed before the model loads
        stack.callback(_drop_if_empty, folder)  # a failure before any complete chunk leaves nothing behind
        stack.callback(lock_part(folder, place.rank).release)
        engine = _engine(args)
        options = {"window": args.window, "stride": args.stride, "ignore_labels": args.ignore_labels}
        if args.backend == "torch":
            import torch

            options["autocast_dtype"] = torch.bfloat16 if args.bf16 else None
        task = engine.task
        started = time.perf_counter()
        show = place.is_main and not args.no_progress
        with tqdm(total=sum(end - start for start, end in mine), desc="predict", unit="row", disable=not show) as bar:
            done = predict_part(engine, source, folder, mine, get_task(task).output_key, args.batch_size, options, bar)
        stats = place.gather(done)  # every process's part is complete past this point
        if place.is_main:
            assemble(folder, len(source), args.chunk_size, out, args.output.suffix.lower() == ".parquet", task)
            print(summary(stats, time.perf_counter() - started))
    if place.is_main:
        for leftover in args.output.parent.glob(f".{args.output.name}.parts-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return len(source)


def _drop_if_empty(folder: Path) -> None:
    """Remove the parts folder when it holds no complete chunk (and no other process's lock)."""
    if folder.is_dir() and not any(folder.glob("rows-*.jsonl")) and not any(folder.glob("rank-*.lock")):
        shutil.rmtree(folder, ignore_errors=True)


def _engine(args):
    """The inference engine of the chosen backend, on this process's GPU when there is one."""
    if args.backend == "onnx":
        from .onnx_predictor import ShapCAOnnxPredictor

        return ShapCAOnnxPredictor.from_pretrained(args.model, quantized=args.quantized)
    import torch

    from .loading import load_trained

    model, processor = load_trained(args.model, args.trust_remote_code)
    if torch.cuda.is_available():
        model = model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    engine = build_engine(model, processor, args.trust_remote_code)
    engine.runner.check()
    return engine


if __name__ == "__main__":
    main()
