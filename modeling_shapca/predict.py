"""Batch prediction from JSONL files.

    python -m modeling_shapca.predict MODEL --input inputs.jsonl --output preds.jsonl

Each input line is `{"text": "..."}` or `{"words": [...]}`, optionally with `"image"` (a file
path) and `"context"`; any other keys (an id, say) are copied to the output line, which adds
`"entities"`. Lines are written in input order; a malformed line stops the run with its line
number (nothing is skipped silently).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm


def read_inputs(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or (("text" in record) == ("words" in record)):
                raise ValueError(f"{path}:{line_no}: expected an object with exactly one of 'text' or 'words'")
            records.append(record)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or Hub id (loaded with trust_remote_code=True)")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    args = parser.parse_args(argv)

    from transformers import AutoModel

    records = read_inputs(args.input)
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
    if torch.cuda.is_available():
        model = model.cuda()
    dtype = torch.bfloat16 if args.bf16 else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as out, tqdm(total=len(records), desc="predict", unit="text") as bar:
        for start in range(0, len(records), args.batch_size):
            chunk = records[start:start + args.batch_size]
            inputs = [r["text"] if "text" in r else r["words"] for r in chunk]
            predictions = model.predict(
                inputs,
                images=[r.get("image") for r in chunk],
                contexts=[r.get("context") for r in chunk],
                batch_size=args.batch_size,
                is_split_into_words=False,
                dtype=dtype,
            )
            for record, entities in zip(chunk, predictions):
                out.write(json.dumps({**record, "entities": entities}, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    return len(records)


if __name__ == "__main__":
    main()
