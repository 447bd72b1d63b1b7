"""Batch prediction over files and corpora, for every task, on one process or N (not part of
the remote code).

    shapca-predict MODEL --input inputs.jsonl --output preds.jsonl
    shapca-predict MODEL --input user/tweets --split test --output preds.parquet
    torchrun --nproc_per_node 4 -m shapca_serving.predict MODEL --input corpus/ --output preds.parquet
    accelerate launch -m shapca_serving.predict MODEL --input user/tweets --split train --output preds.parquet

Inputs: a JSON-lines file, a Parquet file or folder, a save_to_disk folder, or a Hub dataset id
with --split; dataset columns by --text-column / --tokens-column, --image-column,
--context-column, --pairs-column (training's underscore spellings work too), plain columns (ids)
copied to the output (--columns / --drop-columns choose them). Output: JSON lines, or Parquet
with the input's column types and the records as nested columns (by the suffix), rows in input
order. The work runs on the corpus runner (shapca_serving/runner.py): under torchrun or
accelerate launch each process predicts its share of chunks of at most --chunk-size rows and the
main process writes the one output; a rerun after a kill keeps every complete chunk, with any
number of processes, as long as the input's bytes, the model's files and the options that change
a row are the same (otherwise it says what changed and starts anew; shapca_serving/batch.py). A
progress bar (rows/s) on the main process (--no-progress silences it) and one summary line with
the rows per process.

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

Images without a context, for a model trained with generated contexts: the context comes from
the context cache (the image's bytes and the saved generator settings; filled by
`shapca-contexts` and earlier predictions), else the PyTorch backend writes it with the saved
generator and caches it; the ONNX backend never generates (an uncached image is an error).
`--no-context-cache` neither reads nor writes the cache (`modeling_shapca/context_cache.py`).

Writing is atomic: the predictions go to complete parts in `.<name>.parts-<key>/` beside
`--output`, and the output to `.<name>.partial`, renamed into place once every row is written,
so an error, a full disk, Ctrl-C, SIGTERM or a kill leaves an existing output untouched, the
complete parts and nothing else. The output gets the umask's permissions, or keeps those of the
file it replaces. One run writes an output at a time: a second run naming the same `--output`
is refused while the first holds its lock (`.<name>.lock`, a plain file never followed through a
link). The input may not be the output, the output may not be a folder nor lie inside an input
folder.

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
import os
import re
import shutil
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from modeling_shapca.engine import check_options
from modeling_shapca.inference import check_positive_int
from modeling_shapca.tasks import get_task

from .batch import (
    DEFAULT_CHUNK_SIZE, INPUT_COLUMNS, check_copied, count_records, open_source, parse_line, parts_path, predict_rows,
    prepare_parts, summary, write_jsonl, write_parquet,
)
from .loading import check_serving_options, load_engine, model_fingerprint, model_task
from .runner import OutputLock, PartStore, run_parts, world

def read_inputs(path: Path) -> list[dict]:
    """The records of a JSONL file, each with `_name` = `file:line` for error messages. Every
    fault of a line (bytes that are not UTF-8, bad or too deeply nested JSON, values that could
    not be written back) is reported with its `file:line` before any work. A relative image
    path resolves against the input file's folder."""
    with path.open("rb") as handle:
        entries = [parse_line(raw, line_no, path) for line_no, raw in enumerate(handle, start=1)]
    return [e for e in entries if e is not None]


class OutputFile:
    """Writes `target` as a whole or not at all: into `.<name>.partial` beside it (`path`; `open()`
    gives a text handle), renamed into place when complete, with an existing file's mode (else
    the umask's). On any failure, a full disk included, the partial file is removed and the
    previous output stays as it was. The caller holds the output's lock (`runner.OutputLock`)."""

    def __init__(self, target: Path):
        self.target = target
        self.path = target.with_name(f".{target.name}.partial")
        self.handle = None

    def open(self):
        self.handle = open(self.path, "w", encoding="utf-8")  # truncates a killed run's leftover
        return self.handle

    def __enter__(self) -> "OutputFile":
        if self.target.is_dir():
            raise ValueError(f"--output {self.target} is a folder; name a file")
        return self

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                if self.handle is not None:
                    self.handle.flush()
                    os.fsync(self.handle.fileno())
                    self.handle.close()
                if self.target.exists():
                    os.chmod(self.path, self.target.stat().st_mode & 0o7777)
                os.replace(self.path, self.target)
                return False
        except BaseException:
            self._discard()
            raise
        self._discard()
        return False

    def _discard(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()  # flushes: fails again on a full disk
            except OSError:
                pass
        self.path.unlink(missing_ok=True)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: partial parts and the partial output are removed


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises SystemExit for the run (main thread only), so nothing partial outlives it."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    parser.add_argument("--columns", nargs="+", metavar="COLUMN",
                        help="the input columns copied to the output (default: every plain column)")
    parser.add_argument("--drop-columns", "--drop_columns", dest="drop_columns", nargs="+", metavar="COLUMN",
                        help="input columns left out of the output")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help="rows per resumable chunk, at most (and at most rows / processes, so every process works)")
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
    parser.add_argument("--no-context-cache", dest="context_cache", action="store_false",
                        help="neither read nor write the context cache (see SHAPCA_CONTEXT_CACHE)")
    args = parser.parse_args(argv)
    try:  # the engine's checks and messages, as flags
        check_positive_int(args.chunk_size, "--chunk-size")
        check_options(args.batch_size, args.window, args.stride)
        check_serving_options(None, args.backend, args.quantized, None, args.trust_remote_code)
    except (TypeError, ValueError) as error:
        parser.error(_as_flags(str(error)))
    source_path = Path(args.input)
    if source_path.suffix.lower() in (".jsonl", ".json") and not source_path.is_file():
        parser.error(f"--input {args.input} is not a file")
    if args.output.exists() and source_path.exists() and args.output.resolve() == source_path.resolve():
        parser.error("--output is the --input file; write the predictions to another file")
    if source_path.is_dir() and args.output.resolve().is_relative_to(source_path.resolve()):
        parser.error(f"--output {args.output} is inside the --input folder {args.input}: a later run would read it as "
                     "input; write it elsewhere")
    if args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; name a file")
    if args.output.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        parser.error(f"--output {args.output}: name a .jsonl or a .parquet file")
    if args.backend == "onnx" and args.bf16:
        parser.error("--bf16 is an option of --backend torch")
    with _sigterm_unwinds():
        return _run(args)


def _run(args) -> int:
    parquet = args.output.suffix.lower() == ".parquet"
    columns = {role: getattr(args, f"{role}_column") for role in INPUT_COLUMNS}
    # a JSON-lines file is checked whole here (and hashed); every check comes before any work
    source = open_source(args.input, args.split, columns, args.columns, args.drop_columns)
    task = model_task(args.model)
    spec = get_task(task)
    check_copied(source, (spec.output_key,) if spec.output_key else ("entities", "relations"), parquet)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with world() as place, OutputLock(args.output, place):  # claimed before the model loads
        key = {"input": source.fingerprint, "model": model_fingerprint(args.model), "backend": args.backend,
               "quantized": args.quantized, "columns": source.columns, "copied": source.copied,
               "window": args.window, "stride": args.stride, "ignore_labels": args.ignore_labels, "bf16": args.bf16}
        folder = parts_path(args.output, key)
        if place.is_main:
            note = prepare_parts(args.output, key)
            if note:
                print(note)
        place.gather(None)  # the parts folder is ready before anyone writes
        try:
            engine = _engine(args)
            options = {"window": args.window, "stride": args.stride, "ignore_labels": args.ignore_labels}
            if args.backend == "torch":
                import torch

                options["autocast_dtype"] = torch.bfloat16 if args.bf16 else None
            started = time.perf_counter()
            show = place.is_main and not args.no_progress
            counted = {"records": 0}
            work = predict_rows(engine, source, args.batch_size, options)

            def counting(indices):
                predictions = work(indices)
                counted["records"] += count_records(predictions)
                return predictions

            store = PartStore(folder)
            with tqdm(total=len(source), desc="predict", unit="row", disable=not show) as bar:
                done = run_parts(list(range(len(source))), store, counting, place, args.chunk_size, bar)
            stats = place.gather({**done, **counted})  # every process's parts are complete past this point
        except BaseException:
            if place.is_main:
                _drop_if_empty(folder)  # a failure before any complete part leaves nothing behind
            raise
        if place.is_main:
            predictions = store.done()
            with OutputFile(args.output) as out:
                if parquet:
                    write_parquet(source, predictions, engine.task, out.path)
                else:
                    write_jsonl(source, predictions, spec.output_key, out.open())
            print(summary(stats, time.perf_counter() - started))
            shutil.rmtree(folder, ignore_errors=True)
    return len(source)


def _drop_if_empty(folder: Path) -> None:
    """Remove the parts folder when it holds no complete part."""
    if folder.is_dir() and not any(folder.glob("part-*.jsonl")):
        shutil.rmtree(folder, ignore_errors=True)


def _as_flags(message: str) -> str:
    """An option's message in the CLI's spelling (`batch_size` -> `--batch-size`)."""
    for name in ("batch_size", "window", "stride", "trust_remote_code", "quantized", "backend"):
        message = re.sub(rf"(?<![-\w]){name}\b", "--" + name.replace("_", "-"), message)
    return message


def _engine(args):
    """The inference engine of the chosen backend (`loading.load_engine`), on this process's
    GPU when there is one."""
    return load_engine(args.model, args.backend, args.quantized, device="auto" if args.backend == "torch" else None,
                       trust_remote_code=args.trust_remote_code, context_cache=args.context_cache)


if __name__ == "__main__":
    main()
