"""Batch prediction from JSONL files, for every task (not part of the remote code).

    python -m modeling_shapca.predict MODEL --input inputs.jsonl --output preds.jsonl

One input record per line (docs/records.md has the formats):

* `{"text": "..."}` or `{"words": ["...", ...]}` (a list; a string is an error), optionally
  `"image"` (a file path or URL) and `"context"` (a string);
* relation extraction (MRE) also needs `"pairs"`: `[[head, tail], ...]`, each a word span
  `[start, end)`.

Inputs of any length: longer ones are read as overlapping windows (`--window`, `--stride`; see
the pipeline). Any other key (an id, say) is copied to the output line, which adds the predictions as the
pipeline returns them: `"entities"` (NER), `"relations"` (MRE), or `"entities"` and
`"relations"` (MJERE). Lines are written in input order; blank lines are skipped; a malformed
line or an unreadable image stops the run with the file and line number.

Writing is atomic: the output goes to a temporary file beside `--output` that is renamed into
place once every record is predicted, so an error or a kill leaves an existing output file
untouched and never a partial one. The input may not be the output.

Remote code: by default the model is built from this package's own classes and nothing from
the model folder is executed; `--trust-remote-code` loads the folder's code (for models whose
code differs from this package's) and passes the same consent to its processor.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

PIPELINE_KEYS = ("text", "words", "image", "context", "pairs")


def read_inputs(path: Path) -> list[dict]:
    """The records of a JSONL file, each with `_name` = `file:line` for error messages."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or (("text" in record) == ("words" in record)):
                raise ValueError(f"{where}: expected an object with exactly one of 'text' or 'words'")
            records.append({"line": where, "record": record})
    return records


def load_model(name: str, trust_remote_code: bool = False):
    """The model: this package's classes (nothing from the folder runs), or with consent the
    folder's own code through `AutoModel`."""
    if trust_remote_code:
        from transformers import AutoModel

        return AutoModel.from_pretrained(name, trust_remote_code=True)
    import modeling_shapca
    from modeling_shapca import ShapCAConfig
    from modeling_shapca.tasks import get_task

    config = ShapCAConfig.from_pretrained(name)
    return getattr(modeling_shapca, get_task(config.task).model_class).from_pretrained(name)


def build_pipeline(model, trust_remote_code: bool = False):
    """The Shap-CA pipeline of the model's own code (local package or the trusted remote modules)."""
    package = type(model).__module__.rsplit(".", 1)[0]
    pipeline_module = importlib.import_module(f"{package}.pipeline_shapca")
    tasks = importlib.import_module(f"{package}.tasks")
    processor = pipeline_module.load_processor(model, trust_remote_code)
    return pipeline_module.ShapCAPipeline(model=model, processor=processor, device=model.device,
                                          task=tasks.get_task(model.config.task).pipeline_task)


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

    entries = read_inputs(args.input)
    model = load_model(args.model, args.trust_remote_code)
    if torch.cuda.is_available():
        model = model.cuda()
    pipe = build_pipeline(model, args.trust_remote_code)
    output_key = pipe.spec.output_key
    dtype = torch.bfloat16 if args.bf16 else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{args.output.name}.", suffix=".partial", dir=args.output.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out, tqdm(total=len(entries), desc="predict", unit="record") as bar:
            chunk_size = args.batch_size * 8
            for start in range(0, len(entries), chunk_size):
                chunk = entries[start:start + chunk_size]
                records = [{**{k: e["record"][k] for k in PIPELINE_KEYS if k in e["record"]}, "_name": e["line"]}
                           for e in chunk]
                predictions = pipe(records, batch_size=args.batch_size, autocast_dtype=dtype, window=args.window,
                                   stride=args.stride, ignore_labels=args.ignore_labels,
                                   show_progress=False)  # the CLI's own bar covers the whole file
                out.writelines(output_line(e["record"], p, output_key) for e, p in zip(chunk, predictions))
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, args.output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return len(entries)


if __name__ == "__main__":
    main()
