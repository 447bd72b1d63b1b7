"""Batch prediction over a corpus (`shapca-predict`'s work on the corpus runner, `runner.py`).

Inputs (`open_source`): a JSON-lines file (every line checked in a first pass, as always; only
the byte offsets of the lines are kept), a Parquet file or folder, a `save_to_disk` folder, or
a Hub dataset id (`--split`). Datasets are memory-mapped Arrow tables and read row by row, never
the whole corpus in memory; a bad row is reported with its split and row index when it is
reached. Columns: `--text-column` or `--tokens-column`, `--image-column` (an `Image()` feature,
bytes of an image file or paths), `--context-column`, `--pairs-column` (MRE); defaults `text` /
`words` or `tokens` / `image` / `context` / `pairs`. Every other plain column (ids, strings,
numbers, dates) is copied to the output rows (`--columns` names the ones to copy,
`--drop-columns` the ones to leave out); a copied column named like an output key (`entities`,
`relations`) is refused before any work.

Content keys: the input by its bytes (sha256 of a JSON-lines file) or its `datasets`
fingerprint, the model by its files' bytes (a Hub id by its commit), and every option that
changes a row (columns, window, stride, ignored labels, backend, quantized, bf16) make the key of
the parts folder `.<output>.parts-<key>` beside the output; inside it, each row's prediction is
stored under its position (`runner.PartStore`). A rerun with the same key keeps every complete
part, with any number of processes; a rerun with another key says in one line which part of the
key changed and starts that output anew.

Values: the output's rows are the input's rows (the copied columns) with the predictions added.
JSON lines carry what JSON can: NaN and infinite floats become null, dates and times ISO text,
decimals text; a binary column is refused up front (drop it with `--drop-columns`). A Parquet
output keeps the input's column types (a JSON-lines input's field types are found in the first
pass: a field with one type keeps it, ints with floats become floats, a field of mixed or nested
types is written as JSON text), then the task's records as nested columns: its schema is known
before the first row is predicted.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
import math
import shutil
from pathlib import Path

from modeling_shapca.records import check_text_or_words

from .hub import model_location
from .runner import changed_parts, digest_of, file_digest

DEFAULT_CHUNK_SIZE = 1024
INPUT_COLUMNS = {"text": ("text",), "tokens": ("words", "tokens"), "image": ("image",), "context": ("context",),
                 "pairs": ("pairs",)}


# ---------------------------------------------------------------------------------- inputs
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
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with 'text' or 'words', got JSON {type(record).__name__}")
    check_text_or_words(record, where)
    _check_line_value(record, where)
    image = record.get("image")
    inputs = {k: record[k] for k in PIPELINE_KEYS if k in record}
    if isinstance(image, str) and "://" not in image and not Path(image).is_absolute():
        inputs["image"] = str(path.parent / image)
    return {"line": where, "record": record, "inputs": inputs}


class JsonlSource:
    """A JSON-lines file: checked whole in a first pass (faults named `file:line`, each field's
    JSON types noted for a Parquet output), then read by line offsets; keyed by its bytes.
    `keep` / `drop`: the fields to copy (default: every field)."""

    def __init__(self, path: Path, keep=None, drop=None):
        self.path, self.name = path, str(path)
        self.fingerprint = f"sha256:{file_digest(path)}"
        self.offsets, self.numbers, self.kinds = [], [], {}
        offset = 0
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                entry = parse_line(raw, line_no, path)
                if entry is not None:
                    self.offsets.append(offset)
                    self.numbers.append(line_no)
                    for key, value in entry["record"].items():
                        self.kinds.setdefault(key, set()).add(_json_kind(value))
                offset += len(raw)
        self.columns = {role: role for role in PIPELINE_KEYS}
        self.copied = choose_columns(list(self.kinds), keep, drop, self.name, list(self.kinds))

    def __len__(self) -> int:
        return len(self.offsets)

    def rows_at(self, indices: list[int]) -> list[dict]:
        entries = []
        with self.path.open("rb") as handle:
            for i in indices:
                handle.seek(self.offsets[i])
                entries.append(parse_line(handle.readline(), self.numbers[i], self.path))
        return entries

    def copied_rows(self, start: int, end: int) -> list[dict]:
        keep = set(self.copied)
        return [{k: v for k, v in e["record"].items() if k in keep} for e in self.rows_at(range(start, end))]

    def arrow_fields(self) -> list:
        """The copied fields' Arrow types from the JSON types seen in the first pass."""
        import pyarrow as pa

        scalar = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        fields = []
        for key in self.copied:
            kinds = self.kinds[key] - {"null"}
            if kinds == {"int", "float"}:
                kinds = {"float"}
            kind = scalar.get(next(iter(kinds))) if len(kinds) == 1 else None
            fields.append(pa.field(key, kind if kind is not None else pa.string(), metadata=None if kind is not None
                                   else {b"shapca": b"json text"}))
        return fields


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "nested"


class DatasetSource:
    """A `datasets.Dataset` (memory-mapped) with the input columns named by `columns`; keyed by
    its fingerprint. `keep` / `drop`: the plain columns to copy (default: every plain column)."""

    def __init__(self, dataset, name: str, columns: dict[str, str | None], keep=None, drop=None):
        self.dataset, self.name = dataset, name
        self.fingerprint = f"datasets:{dataset._fingerprint}:{len(dataset)}"
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
        image = features.get(chosen.get("image"))
        if getattr(image, "decode", False):  # the file's bytes, which key its context in the cache
            import datasets

            self.dataset = dataset.cast_column(chosen["image"], datasets.Image(decode=False))
        used = set(chosen.values())
        self.copied = choose_columns([c for c in present if c not in used and _is_plain(features[c])], keep, drop,
                                     name, present)

    def __len__(self) -> int:
        return len(self.dataset)

    def rows_at(self, indices: list[int]) -> list[dict]:
        entries = []
        for i, row in zip(indices, self.dataset.select(indices)):
            inputs = {}
            for role, column in self.columns.items():
                value = row[column]
                if value is None:
                    continue
                if role == "image":
                    value = _image_value(value)
                inputs["words" if role == "tokens" else role] = value
            entries.append({"line": f"{self.name} row {i}", "inputs": inputs})
        return entries

    def copied_rows(self, start: int, end: int) -> list[dict]:
        return self.dataset.select_columns(self.copied).select(range(start, end)).to_list() if self.copied \
            else [{} for _ in range(start, end)]

    def copied_table(self, start: int, end: int):
        """The copied columns of rows `[start, end)` as an Arrow table (their own types)."""
        return self.dataset.data.table.select(self.copied).slice(start, end - start) if self.copied else None

    def arrow_fields(self) -> list:
        schema = self.dataset.data.table.schema
        return [schema.field(c) for c in self.copied]


def _image_value(value):
    """An image column's value as the engine takes it: bytes of an image file (a binary column,
    or an undecoded `Image()` feature's `{"bytes", "path"}`) as a file object, else as it is."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(value))
    return value


def choose_columns(copied: list[str], keep, drop, name: str, present: list[str]) -> list[str]:
    """The columns copied to the output: `keep` (in its order) or every plain column, less
    `drop`; each named column must exist."""
    for flag, names in (("--columns", keep), ("--drop-columns", drop)):
        missing = [c for c in names or () if c not in present]
        if missing:
            raise ValueError(f"{flag}: {name} has no column {missing[0]!r}; its columns: {present}")
    chosen = list(keep) if keep is not None else copied
    return [c for c in chosen if c not in set(drop or ())]


def _is_plain(feature) -> bool:
    import datasets

    return isinstance(feature, (datasets.Value, datasets.ClassLabel))


def open_source(path_or_id: str, split: str | None = None, columns: dict | None = None, keep=None, drop=None):
    """The input of a batch prediction (see the module docstring); `keep` / `drop` choose the
    copied columns (`--columns`, `--drop-columns`)."""
    columns = columns or {role: None for role in INPUT_COLUMNS}
    path = Path(path_or_id)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".txt"):
        if any(v is not None for v in columns.values()):
            raise ValueError(f"{path} is a JSON-lines file: its fields are named text / words / image / context / "
                             "pairs; the column flags are for datasets")
        return JsonlSource(path, keep, drop)
    import datasets

    if path.is_file() and path.suffix.lower() == ".parquet":
        return DatasetSource(datasets.Dataset.from_parquet(str(path)), str(path), columns, keep, drop)
    if path.is_dir():
        parquet = sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{path} holds the splits {sorted(loaded)}: choose one with --split")
                loaded = loaded[split]
            return DatasetSource(loaded, f"{path}" + (f" split {split!r}" if split else ""), columns, keep, drop)
        if parquet:
            return DatasetSource(datasets.Dataset.from_parquet(parquet), str(path), columns, keep, drop)
        raise ValueError(f"{path} is a folder without a saved dataset (save_to_disk) or Parquet files")
    try:
        model_location(path_or_id, "dataset folder")  # (a folder was handled above: this is a Hub id or an error)
    except OSError:
        raise ValueError(f"--input {path_or_id}: not a JSON-lines file (.jsonl), a Parquet file or a dataset folder") \
            from None
    if split is None:
        raise ValueError(f"--input {path_or_id} is read as a Hub dataset id: name its --split")
    loaded = datasets.load_dataset(path_or_id, split=split)  # downloaded once, memory-mapped
    return DatasetSource(loaded, f"{path_or_id} split {split!r}", columns, keep, drop)


def check_copied(source, output_keys: tuple[str, ...], parquet: bool) -> None:
    """Before any work: no copied column named like an output key, and (JSON lines) no binary
    column, which JSON cannot carry."""
    clash = [c for c in source.copied if c in output_keys]
    if clash:
        raise ValueError(f"{source.name}: the column {clash[0]!r} would be replaced by the predictions "
                         f"({', '.join(output_keys)}); rename it, or leave it out with --drop-columns {clash[0]}")
    if not parquet and isinstance(source, DatasetSource):
        import pyarrow as pa

        for field in source.arrow_fields():
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                raise ValueError(f"{source.name}: the column {field.name!r} holds bytes, which a JSON-lines output "
                                 f"cannot carry: leave it out with --drop-columns {field.name}, or write .parquet")


# ---------------------------------------------------------------------------------- the parts
def parts_path(output: Path, key: dict) -> Path:
    """The parts folder of this key, beside `output`."""
    return output.with_name(f".{output.name}.parts-{digest_of(key)[:16]}")


def prepare_parts(output: Path, key: dict) -> str | None:
    """The parts folder of this key, made (main process, holding the output's lock), and a
    one-line note when an earlier run's parts under another key were there: which part of the
    key changed. Those parts are removed: nothing of them is reused."""
    folder = parts_path(output, key)
    note = None
    for other in sorted(output.parent.glob(f".{output.name}.parts-*")):
        if other == folder or not other.is_dir():
            continue
        try:
            before = json.loads((other / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = {}
        changed = changed_parts(before, json.loads(json.dumps(key, default=str))) if before else ["key"]
        changed = list(dict.fromkeys(KEY_WORDS.get(name, name) for name in changed))
        note = (f"{output}: the {' and '.join(changed)} changed since the run that left {other.name}; nothing of it is "
                "reused, the output is predicted anew")
        shutil.rmtree(other, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEY_FILE).write_text(json.dumps(key, sort_keys=True, default=str), encoding="utf-8")
    return note


KEY_FILE = "key.json"
KEY_WORDS = {"copied": "columns", "ignore_labels": "ignored labels", "bf16": "bf16 autocast"}  # else the name


def predict_rows(engine, source, batch_size: int, options: dict):
    """The work of one chunk of row positions: the engine's predictions, in order."""
    def work(indices: list[int]) -> list:
        entries = source.rows_at(indices)
        records = [{**e["inputs"], "_name": e["line"]} for e in entries]
        return engine(records, batch_size=batch_size, show_progress=False, **options)

    return work


def count_records(predictions) -> int:
    total = 0
    for prediction in predictions:
        total += (len(prediction.get("entities", [])) + len(prediction.get("relations", []))
                  if isinstance(prediction, dict) else len(prediction))
    return total


# ---------------------------------------------------------------------------------- the output
ASSEMBLY_ROWS = 4096  # rows read back and written at a time


def json_safe(value):
    """A copied value as JSON carries it: NaN and infinities as null, dates and times as ISO
    text, decimals as text, bytes inside a nested value as base64 text (nested values likewise;
    a binary column is refused before, `check_copied`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _with_prediction(row: dict, prediction, output_key: str) -> dict:
    out = {k: json_safe(v) for k, v in row.items()}
    if output_key:
        out[output_key] = prediction
    else:
        out.update(prediction)
    return out


def write_jsonl(source, predictions: dict, output_key: str, handle) -> None:
    """The output's lines in input order: each row's copied columns and its prediction."""
    for start in range(0, len(source), ASSEMBLY_ROWS):
        end = min(start + ASSEMBLY_ROWS, len(source))
        rows = source.copied_rows(start, end)
        handle.write("".join(json.dumps(_with_prediction(row, predictions[i], output_key), ensure_ascii=False,
                                        allow_nan=False) + "\n" for i, row in zip(range(start, end), rows)))


def write_parquet(source, predictions: dict, task: str, target: Path) -> None:
    """One Parquet file: the copied columns in the input's types, then the records as nested
    columns (the schema is fixed before the first row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modeling_shapca.tasks import get_task

    schema = output_schema(source, task)
    output_key = get_task(task).output_key
    record_names = [f.name for f in schema][len(source.copied):]
    with pq.ParquetWriter(str(target), schema) as writer:
        for start in range(0, len(source), ASSEMBLY_ROWS):
            end = min(start + ASSEMBLY_ROWS, len(source))
            found = [predictions[i] for i in range(start, end)]
            records = {name: [p if output_key else p[name] for p in found] for name in record_names}
            columns = _copied_columns(source, start, end, schema)
            for name in record_names:
                columns[name] = pa.array(records[name], type=schema.field(name).type)
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))


def _copied_columns(source, start: int, end: int, schema) -> dict:
    import pyarrow as pa

    if isinstance(source, DatasetSource):
        table = source.copied_table(start, end)
        return {} if table is None else {name: table.column(name) for name in source.copied}
    rows = source.copied_rows(start, end)
    columns = {}
    for name in source.copied:
        field = schema.field(name)
        values = [row.get(name) for row in rows]
        if field.metadata and field.metadata.get(b"shapca") == b"json text":
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        columns[name] = pa.array(values, type=field.type)
    return columns


def output_schema(source, task: str):
    """The output's Arrow schema: the copied columns (the input's types) and the task's records
    as lists of structs."""
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
    return pa.schema(source.arrow_fields() + [pa.field(name, kind) for name, kind in records])


def summary(stats: list[dict], total_seconds: float) -> str:
    rows = sum(s["items"] for s in stats)
    per = ", ".join(str(s["items"]) for s in stats)
    records = sum(s.get("records", 0) for s in stats)
    rate = rows / total_seconds if total_seconds else 0.0
    return (f"predicted {rows} rows ({records} records) in {total_seconds:.1f} s, {rate:.1f} rows/s; "
            f"rows per process: {per}")


__all__ = ["DEFAULT_CHUNK_SIZE", "DatasetSource", "JsonlSource", "check_copied", "json_safe", "open_source",
           "output_schema", "parse_line", "parts_path", "prepare_parts", "predict_rows", "write_jsonl", "write_parquet"]
