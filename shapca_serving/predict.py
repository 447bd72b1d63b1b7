"""Batch prediction from JSONL files, for every task (not part of the remote code).

    shapca-predict MODEL --input inputs.jsonl --output preds.jsonl
    python -m shapca_serving.predict MODEL --input inputs.jsonl --output preds.jsonl

One input record per line (docs/records.md has the formats):

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
import importlib
import json
import os
import threading
from pathlib import Path

from tqdm.auto import tqdm

from modeling_shapca.tasks import get_task

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


def read_inputs(path: Path) -> list[dict]:
    """The records of a JSONL file, each with `_name` = `file:line` for error messages. Every
    fault of a line (bytes that are not UTF-8, bad or too deeply nested JSON, values that could
    not be written back) is reported with its `file:line` before any work. A relative image
    path resolves against the input file's folder."""
    records = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not valid UTF-8 (byte {error.start + 1} of the line)") from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
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
            records.append({"line": where, "record": record, "inputs": inputs})
    return records


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
        self.handle = open(self.partial, "w", encoding="utf-8")  # truncates a killed run's leftover
        self._previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        return self.handle

    def __exit__(self, kind, error, traceback):
        import signal

        try:
            if kind is None:
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
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
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
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.window is not None and args.window < 1:
        parser.error(f"--window must be a positive integer, got {args.window}")
    if args.stride is not None and not 0 <= args.stride < (args.window or 2 ** 31):
        parser.error(f"--stride must be >= 0 and smaller than --window, got {args.stride}")
    if not args.input.is_file():
        parser.error(f"--input {args.input} is not a file")
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        parser.error("--output is the --input file; write the predictions to another file")
    if args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; name a file")
    if args.backend == "onnx" and (args.bf16 or args.trust_remote_code):
        parser.error("--bf16 and --trust-remote-code are options of --backend torch")
    if args.quantized and args.backend != "onnx":
        parser.error("--quantized needs --backend onnx")

    entries = read_inputs(args.input)
    with OutputFile(args.output) as out:  # the output is claimed (locked) before the model loads
        if args.backend == "onnx":
            from .onnx_predictor import ShapCAOnnxPredictor

            engine = ShapCAOnnxPredictor.from_pretrained(args.model, quantized=args.quantized)
            options = {}
        else:
            import torch

            from .loading import load_trained

            model, processor = load_trained(args.model, args.trust_remote_code)
            if torch.cuda.is_available():
                model = model.cuda()
            engine = build_engine(model, processor, args.trust_remote_code)
            engine.runner.check()
            options = {"autocast_dtype": torch.bfloat16 if args.bf16 else None}
        output_key = get_task(engine.task).output_key
        chunk_size = args.batch_size * 8
        with tqdm(total=len(entries), desc="predict", unit="record") as bar:
            for start in range(0, len(entries), chunk_size):
                chunk = entries[start:start + chunk_size]
                records = [{**e["inputs"], "_name": e["line"]} for e in chunk]
                # (no progress bar of the engine: the CLI's own bar covers the whole file)
                predictions = engine(records, batch_size=args.batch_size, window=args.window, stride=args.stride,
                                     ignore_labels=args.ignore_labels, show_progress=False, **options)
                out.writelines(output_line(e["record"], p, output_key) for e, p in zip(chunk, predictions))
                bar.update(len(chunk))
    return len(entries)


if __name__ == "__main__":
    main()
