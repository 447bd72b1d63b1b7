"""Batch prediction over a corpus, on one process or N (`shapca-predict`'s engine room).

Inputs (`open_source`): a JSON-lines file (every line checked in a first pass, as always; only
the byte offsets of the lines are kept), a Parquet file or folder, a `save_to_disk` folder, or
a Hub dataset id (`--split`). Datasets are memory-mapped Arrow tables and read row by row, never
the whole corpus in memory; a bad row is reported with its split and row index when it is
reached. Columns: `--text-column` or `--tokens-column`, `--image-column` (an Image feature, bytes
or paths), `--context-column`, `--pairs-column` (MRE); defaults `text` / `words` or `tokens` /
`image` / `context` / `pairs`. The other columns that hold plain values (ids, strings, numbers)
are copied to the output rows.

Work: the rows are cut into chunks of `chunk_size` rows, keyed by their row range
(`rows-<start>-<end>.jsonl` in `.<output>.parts-<key>/` beside the output, where `<key>` hashes
the input, the model and the options, so a rerun with other options never mixes parts). Chunk k
goes to process `k % N` (N and the process index from the launcher: `torchrun`, `accelerate
launch`, or 1). A chunk is written to a partial file and renamed when complete, so a kill never
leaves a chunk that counts as done; a rerun of the same command (with any N) keeps the complete
chunks and redoes the rest. Each process holds a lock on its own part (`rank-<i>.lock`); the main
process holds the output's lock, waits for every process (torch.distributed, gloo), then writes
the one output in input order (JSON lines, or Parquet with nested columns, by the suffix) through
a partial file, and removes the parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .locks import WriterLock, write_atomic

DEFAULT_CHUNK_SIZE = 1024
INPUT_COLUMNS = {"text": ("text",), "tokens": ("words", "tokens"), "image": ("image",), "context": ("context",),
                 "pairs": ("pairs",)}


# ---------------------------------------------------------------------------------- inputs
class JsonlSource:
    """A JSON-lines file: checked whole in a first pass (faults named `file:line`), then read by
    line offsets."""

    def __init__(self, path: Path):
        from .predict import parse_line

        self.path, self.name = path, str(path)
        stat = path.stat()
        self.fingerprint = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self.offsets, self.numbers = [], []
        offset = 0
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if parse_line(raw, line_no, path) is not None:
                    self.offsets.append(offset)
                    self.numbers.append(line_no)
                offset += len(raw)

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self, start: int, end: int) -> list[dict]:
        from .predict import parse_line

        entries = []
        with self.path.open("rb") as handle:
            for i in range(start, end):
                handle.seek(self.offsets[i])
                entries.append(parse_line(handle.readline(), self.numbers[i], self.path))
        return entries


class DatasetSource:
    """A `datasets.Dataset` (memory-mapped) with the input columns named by `columns`."""

    def __init__(self, dataset, name: str, columns: dict[str, str | None]):
        self.dataset, self.name = dataset, name
        self.fingerprint = f"{name}:{dataset._fingerprint}:{len(dataset)}"
        present = list(dataset.column_names)
        chosen = {}
        for role, given in columns.items():
            if given is not None:
                if given not in present:
                    raise ValueError(f"{name} has no column {given!r} (--{role}-column); its columns: {present}")
                chosen[role] = given
            else:
                found = next((c for c in INPUT_COLUMNS[role] if c in present), None)
                if found:
                    chosen[role] = found
        if ("text" in chosen) == ("tokens" in chosen):
            raise ValueError(f"{name}: give exactly one of a text column or a tokens column (--text-column, "
                             f"--tokens-column); its columns: {present}")
        self.columns = chosen
        features = dataset.features
        used = set(chosen.values())
        self.copied = [c for c in present if c not in used and _is_plain(features[c])]

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, start: int, end: int) -> list[dict]:
        entries = []
        for i, row in enumerate(self.dataset.select(range(start, end)), start=start):
            inputs = {}
            for role, column in self.columns.items():
                value = row[column]
                if value is None:
                    continue
                inputs["words" if role == "tokens" else role] = value
            entries.append({"line": f"{self.name} row {i}", "record": {c: row[c] for c in self.copied},
                            "inputs": inputs})
        return entries


def _is_plain(feature) -> bool:
    import datasets

    return isinstance(feature, (datasets.Value, datasets.ClassLabel))


def open_source(path_or_id: str, split: str | None = None, columns: dict | None = None):
    """The input of a batch prediction (see the module docstring)."""
    columns = columns or {role: None for role in INPUT_COLUMNS}
    path = Path(path_or_id)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".txt"):
        if any(v is not None for v in columns.values()):
            raise ValueError(f"{path} is a JSON-lines file: its fields are named text / words / image / context / "
                             "pairs; the column flags are for datasets")
        return JsonlSource(path)
    import datasets

    if path.is_file() and path.suffix.lower() == ".parquet":
        return DatasetSource(datasets.Dataset.from_parquet(str(path)), str(path), columns)
    if path.is_dir():
        parquet = sorted(str(p) for p in path.rglob("*.parquet"))
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{path} holds the splits {sorted(loaded)}: choose one with --split")
                loaded = loaded[split]
            return DatasetSource(loaded, f"{path}" + (f" split {split!r}" if split else ""), columns)
        if parquet:
            return DatasetSource(datasets.Dataset.from_parquet(parquet), str(path), columns)
        raise ValueError(f"{path} is a folder without a saved dataset (save_to_disk) or Parquet files")
    if path.exists() or path_or_id.startswith((".", "/", "~")):
        raise ValueError(f"--input {path_or_id}: not a JSON-lines file (.jsonl), a Parquet file or a dataset folder")
    if split is None:
        raise ValueError(f"--input {path_or_id} is read as a Hub dataset id: name its --split")
    loaded = datasets.load_dataset(path_or_id, split=split)  # downloaded once, memory-mapped
    return DatasetSource(loaded, f"{path_or_id} split {split!r}", columns)


# ---------------------------------------------------------------------------------- processes
@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value):
        """`value` of every process, in rank order (also the barrier the main process waits at)."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, value)
        return out


def world() -> World:
    """This process's place among the launcher's (`torchrun`, `accelerate launch`: `RANK`,
    `WORLD_SIZE`); a process group over gloo when there are several."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if size > 1:
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))  # a slow part is not an error
    return World(rank, size)


# ---------------------------------------------------------------------------------- chunks
def parts_folder(output: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return output.with_name(f".{output.name}.parts-{digest}")


def chunk_name(start: int, end: int) -> str:
    return f"rows-{start:012d}-{end:012d}.jsonl"


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def predict_part(engine, source, folder: Path, spans: list[tuple[int, int]], output_key: str, batch_size: int,
                 options: dict, bar=None) -> dict:
    """This process's chunks (those not already complete): rows, records and seconds done now."""
    from .predict import output_line

    done = {"rows": 0, "records": 0, "seconds": 0.0}
    for start, end in spans:
        if (folder / chunk_name(start, end)).is_file():
            if bar is not None:
                bar.update(end - start)
            continue
        began = time.perf_counter()
        entries = source.rows(start, end)
        records = [{**e["inputs"], "_name": e["line"]} for e in entries]
        predictions = engine(records, batch_size=batch_size, show_progress=False, **options)
        write_atomic(folder / chunk_name(start, end),  # a chunk is complete or absent
                     "".join(output_line(e["record"], p, output_key) for e, p in zip(entries, predictions)))
        done["rows"] += end - start
        done["records"] += sum(_count(p) for p in predictions)
        done["seconds"] += time.perf_counter() - began
        if bar is not None:
            bar.update(end - start)
    return done


def _count(prediction) -> int:
    if isinstance(prediction, dict):
        return len(prediction.get("entities", [])) + len(prediction.get("relations", []))
    return len(prediction)


def assemble(folder: Path, total: int, size: int, handle, parquet: bool, task: str) -> None:
    """The one output from the complete chunks, in input order (JSON lines into `handle`, or a
    Parquet file at `handle.name`)."""
    paths = [folder / chunk_name(start, end) for start, end in chunks(total, size)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} chunk(s) are not complete ({', '.join(missing[:3])}...): rerun the same "
                           "command to finish them")
    if not parquet:
        for path in paths:
            with path.open("r", encoding="utf-8") as part:
                for line in part:
                    handle.write(line)
        return
    write_parquet(paths, handle, task)


def write_parquet(paths: list[Path], handle, task: str) -> None:
    """The chunks' lines as one Parquet file with the records as nested columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle.close()
    writer = None
    try:
        for path in paths:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            if writer is None:
                schema = output_schema(rows, task)
                writer = pq.ParquetWriter(handle.name, schema)
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        if writer is None:
            writer = pq.ParquetWriter(handle.name, output_schema([], task))
    finally:
        if writer is not None:
            writer.close()


def output_schema(rows: list[dict], task: str):
    """The output's Arrow schema: the copied input columns (inferred from the first chunk, text
    where it holds only nulls) and the task's records as lists of structs."""
    import pyarrow as pa

    span = [("word", pa.string()), ("start", pa.int64()), ("end", pa.int64())]
    entity = pa.struct([("entity_group", pa.string()), ("score", pa.float64()), *span])
    if task == "ner":
        records = [("entities", pa.list_(entity))]
    else:
        ends = entity if task == "mjere" else pa.struct(span)
        relation = pa.struct([("head", ends), ("tail", ends), ("label", pa.string()), ("score", pa.float64())])
        records = [("relations", pa.list_(relation))] if task == "mre" else [("entities", pa.list_(entity)),
                                                                               ("relations", pa.list_(relation))]
    names = {name for name, _ in records}
    fields = []
    if rows:
        inferred = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in names} for r in rows]).schema
        fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type) for f in inferred]
    return pa.schema(fields + [pa.field(name, kind) for name, kind in records])


def lock_part(folder: Path, rank: int) -> WriterLock:
    folder.mkdir(parents=True, exist_ok=True)
    return WriterLock(folder / f"rank-{rank}.lock", f"another run is predicting part {rank} in {folder} right now; "
                                                     "wait for it or choose another --output").acquire()


def summary(stats: list[dict], total_seconds: float) -> str:
    rows = sum(s["rows"] for s in stats)
    per = ", ".join(str(s["rows"]) for s in stats)
    records = sum(s["records"] for s in stats)
    rate = rows / total_seconds if total_seconds else 0.0
    return (f"predicted {rows} rows ({records} records) in {total_seconds:.1f} s, {rate:.1f} rows/s; "
            f"rows per process: {per}")


__all__ = ["DEFAULT_CHUNK_SIZE", "DatasetSource", "JsonlSource", "World", "assemble", "chunks", "open_source",
           "parts_folder", "predict_part", "world"]
