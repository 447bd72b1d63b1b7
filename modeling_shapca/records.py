"""From inputs to records and back, without torch: the steps of the inference engine
(`engine.py`), which the PyTorch pipeline, `model.predict` and the ONNX Runtime predictor all
run, so every way to predict takes the same inputs and gives the same records.

* `as_record`: a caller's string / record checked and split into words with offsets;
* `plan`: the record's windows (`windows.py`), the window that owns each word and, for MRE,
  the window of each pair;
* `pieces` / `window_rows`: every window of every record as one row of the model's batch;
* `merge_words`, `decode_word_pairs`: the model's outputs of a batch (NumPy arrays) back to
  per-input tags and marginals, or relation / entity decisions;
* `finish`: one input's decoded values as the pipeline's records.

Formats are described in `pipeline_shapca.py`.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from .inference import (
    bio_to_spans, check_pairs, check_positive_int, check_text, join_with_offsets, load_image,
    normalize_inputs, tokenize_with_offsets,
)
from .limits import MAX_ENTITIES, MAX_RELATIONS
from .windows import owners, pair_window, plan_windows

RECORD_KEYS = {"text", "words", "image", "context", "pairs", "pos_tags", "_name"}


def as_record(item, name: str, task: str, allow_private: bool = True, **overrides) -> dict:
    """A checked input record: `{"text", "words", "offsets", "image", "context", "pairs", "_name"}`.
    `allow_private=False` refuses image URLs that resolve to private addresses (`limits.py`)."""
    if isinstance(item, str):
        record = {"text": item}
    elif isinstance(item, dict):
        unknown = set(item) - RECORD_KEYS
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {sorted(unknown)}; a record has {sorted(RECORD_KEYS - {'_name'})}")
        record = dict(item)
        name = record.pop("_name", name)
    else:
        raise TypeError(f"{name}: expected a string or a record (dict with 'text' or 'words'), got {type(item).__name__}")
    for key, value in overrides.items():
        if value is not None:
            record[key] = value
    check_text_or_words(record, name)
    if "text" in record:
        if not isinstance(record["text"], str):
            raise TypeError(f"{name}: 'text' must be a string, got {type(record['text']).__name__}")
        text = check_text(record["text"], name)
        words, offsets = tokenize_with_offsets(text)
    else:
        words = record["words"]
        if isinstance(words, str) or not isinstance(words, (list, tuple)):
            raise TypeError(f"{name}: 'words' must be a list of strings, got {type(words).__name__}")
        for j, word in enumerate(words):
            if not isinstance(word, str) or not word:
                raise ValueError(f"{name}: word {j} must be a non-empty string, got {word!r}")
            check_text(word, f"{name}: word {j}")
        text, offsets = join_with_offsets(words)
        words = list(words)
    context = record.get("context")
    if context is not None and not isinstance(context, str):
        raise TypeError(f"{name}: 'context' must be a string or None, got {type(context).__name__}")
    if context:
        check_text(context, f"{name}: context")
    pos_tags = record.get("pos_tags")
    if pos_tags is not None and (isinstance(pos_tags, str) or not isinstance(pos_tags, (list, tuple))
                                 or len(pos_tags) != len(words) or not all(isinstance(t, str) for t in pos_tags)):
        raise ValueError(f"{name}: 'pos_tags' must be a list of one universal POS tag (a string) per word "
                         f"({len(words)} words)")
    pairs = record.get("pairs")
    if task == "mre":
        if pairs is None:
            raise ValueError(f"{name}: relation extraction needs 'pairs', the [head, tail] word spans to classify")
        pairs = check_pairs(pairs, len(words), name)
    elif pairs is not None:
        raise ValueError(f"{name}: 'pairs' is only read by relation extraction (mre), not by {task!r}")
    return {"text": text, "words": words, "offsets": offsets,
            "image": load_image(record.get("image"), name, allow_private=allow_private),
            "context": context or "", "pairs": pairs, "_name": name,
            "pos_tags": None if pos_tags is None else list(pos_tags)}


def check_text_or_words(record: dict, name: str) -> None:
    """A record has exactly one of `text` and `words` (the one check of it: records, JSON lines)."""
    if ("text" in record) == ("words" in record):
        raise ValueError(f"{name}: give exactly one of 'text' (a string) or 'words' (a list of strings)")


def named(item, index: int):
    """An item of a caller's list or stream with its position as its name (`input 3`)."""
    if isinstance(item, dict):
        return {"_name": f"input {index}", **item}
    if isinstance(item, str):
        return {"text": item, "_name": f"input {index}"}
    if isinstance(item, (list, tuple)) and item and all(isinstance(w, str) for w in item):
        return {"words": list(item), "_name": f"input {index}"}  # a word list (a `words` column)
    return item


def row_record(row: dict) -> dict:
    """A `datasets` row as a record: `words` (or `tokens`) or `text`, the image unless
    `has_image` is false, `context`, `pairs`; the other columns (labels, ids) are not inputs."""
    record = {}
    for key in ("words", "tokens", "text"):
        if key in row:
            record["words" if key == "tokens" else key] = row[key]
            break
    if row.get("image") is not None and row.get("has_image", True):
        record["image"] = row["image"]
    for key in ("context", "pairs"):
        if row.get(key) is not None:
            record[key] = row[key]
    return record


def check_window_args(window, stride) -> None:
    """`window` a positive int, `stride` an int >= 0 and smaller than `window` (either may be
    None; a stride with the model's own window is checked against it in `plan`)."""
    if window is not None:
        check_positive_int(window, "window")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 0):
        raise ValueError(f"stride must be an int >= 0 (words shared by consecutive windows), got {stride!r}")
    if window is not None and stride is not None and stride >= window:
        raise ValueError(f"stride={stride} must be smaller than the window of {window} words")


def check_ignore_labels(ignore_labels) -> frozenset:
    """Labels left out of the results: a list of label names (None: none)."""
    if ignore_labels is None:
        return frozenset()
    if isinstance(ignore_labels, str) or not all(isinstance(label, str) for label in ignore_labels):
        raise TypeError(f"ignore_labels must be a list of label names, got {ignore_labels!r}")
    return frozenset(ignore_labels)


def is_dataset(inputs) -> bool:
    """A `datasets.Dataset` (read as a stream of rows, `row_record`)."""
    return type(inputs).__module__.startswith("datasets.") and hasattr(inputs, "column_names")


def plan(record: dict, task: str, size: int, stride: int | None, budget: int,
         subword_counts: Callable[[list[str]], list[int]]) -> None:
    """The record's windows of at most `size` words and `budget` subwords that share `stride`
    words (default `size // 4`), the window that decides each word, and for MRE the window of
    each pair (only windows holding a pair are read). An error names the record."""
    words = record["words"]
    record["windows"], record["owners"], record["pair_windows"] = [], [], []
    if not words:
        return
    stride = size // 4 if stride is None else stride
    try:
        if stride >= size:
            raise ValueError(f"stride={stride} must be smaller than the window of {size} words")
        whole = len(words) <= size and fits_unencoded(words, budget)
        counts = None if whole else subword_counts(words)
        windows = [(0, len(words))] if whole else plan_windows(counts, size, budget, stride)
        if task == "mre":
            if whole:  # one window holds every word: every pair inside the words is in it
                whole = all(0 <= min(h[0], t[0]) and max(h[1], t[1]) <= len(words) for h, t in record["pairs"])
                counts = None if whole else subword_counts(words)
            chosen = [0 if whole else pair_window(windows, head, tail, counts, size, budget)
                      for head, tail in record["pairs"]]
            used = sorted(set(chosen))
            record["pair_windows"] = [used.index(k) for k in chosen]
            windows = [windows[k] for k in used]
    except ValueError as error:
        raise ValueError(f"{record['_name']}: {error}") from None
    record["windows"] = windows
    record["owners"] = owners(windows, len(words))


def fits_unencoded(words: list[str], budget: int) -> bool:
    """Whether `words` fit in `budget` subwords without encoding them: for ASCII words (which no
    tokenizer normaliser expands), a word is at most one subword per character plus one (a
    prefix space or word marker, as byte-level BPE and SentencePiece add), so their sum bounds
    the count. One short sentence a call then skips a tokenizer pass (the windows are the same)."""
    return sum(len(w) + 1 for w in words) <= budget and all(w.isascii() for w in words)


def subword_counts(encode_words: Callable[[list[str]], Sequence[int | None]], words: list[str]) -> list[int]:
    """Subwords of each word from a tokenizer's `word_ids` (a word without any counts as one:
    the processor encodes it as the unknown token)."""
    counts = [0] * len(words)
    for word in encode_words(words):
        if word is not None:
            counts[word] += 1
    return [max(1, c) for c in counts]


def pieces(records: list[dict]) -> list[tuple[int, int, int, int]]:
    """`(input, window, start, end)` of every window of every record: one row each."""
    return [(i, k, start, end) for i, r in enumerate(records) for k, (start, end) in enumerate(r["windows"])]


def window_rows(records: list[dict], parts) -> list[dict]:
    """One row of the model's batch per window: its words (and POS tags, when the caller gave
    them), the input's context and image."""
    return [{"words": records[i]["words"][start:end], "context": records[i]["context"], "image": records[i]["image"],
             "pos_tags": None if records[i].get("pos_tags") is None else records[i]["pos_tags"][start:end],
             "_name": records[i]["_name"]} for i, _, start, end in parts]


def row_pos_tags(rows: list[dict], tag_pos: Callable) -> list[list[str]] | None:
    """The POS tags of a batch of rows: None when no row brings its own (the encoder tags them
    all), else each row's own tags, the others tagged by `tag_pos`."""
    if all(r.get("pos_tags") is None for r in rows):
        return None
    missing = [k for k, r in enumerate(rows) if r.get("pos_tags") is None]
    tagged = dict(zip(missing, tag_pos([rows[k]["words"] for k in missing]) if missing else []))
    return [tagged[k] if k in tagged else list(r["pos_tags"]) for k, r in enumerate(rows)]


def merge_words(records, parts, tags: np.ndarray, marginals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-word tags `(inputs, words)` and marginals `(inputs, words, labels)` of each input,
    each word taken from the window that owns it (`windows.owners`)."""
    width = max(len(r["words"]) for r in records)
    merged_tags = np.zeros((len(records), width), dtype=np.int64)
    merged_marginals = np.zeros((len(records), width, marginals.shape[-1]), dtype=marginals.dtype)
    for p, (i, k, start, end) in enumerate(parts):
        own = np.asarray(records[i]["owners"][start:end]) == k
        merged_tags[i, start:end][own] = tags[p, : end - start][own]
        merged_marginals[i, start:end][own] = marginals[p, : end - start][own]
    return merged_tags, merged_marginals


def span(record: dict, start: int, end: int) -> dict:
    begin, stop = record["offsets"][start][0], record["offsets"][end - 1][1]
    return {"word": record["text"][begin:stop], "start": begin, "end": stop}


def with_span(record: dict, entity: dict) -> dict:
    """An entity of word span `[first, last)` as a record with its text and character offsets."""
    return {"entity_group": entity["entity_group"], "score": entity["score"], **span(record, entity["first"], entity["last"])}


def entities_ner(record, tags: np.ndarray, marginals: np.ndarray, id2label) -> list[dict]:
    """Entities of one input from its tags and marginals; the score is the mean marginal of the
    decoded tag over the entity's words."""
    n = len(record["words"])
    tags = [int(t) for t in tags[:n]]
    labels = [id2label[t] for t in tags]
    tag_probs = np.asarray(marginals)[np.arange(n), tags]
    return [{"entity_group": label, "score": float(tag_probs[first:last].mean()), **span(record, first, last)}
            for first, last, label in bio_to_spans(labels)]


def pairs_mre(records, parts, probs: np.ndarray, labels: np.ndarray) -> list[list[tuple[int, float]]]:
    """`(label id, probability)` of each pair of each input, read in the pair's window."""
    row = {(i, k): p for p, (i, k, _, _) in enumerate(parts)}
    decoded = []
    for i, record in enumerate(records):
        found = []
        for (head, tail), k in zip(record["pairs"] or [], record["pair_windows"]):
            p, start = row[(i, k)], record["windows"][k][0]
            h, t = head[0] - start, tail[0] - start
            label = int(labels[p, 0, h, t])
            found.append((label, float(probs[p, h, t, label])))
        decoded.append(found)
    return decoded


def joint_windows(records, parts, probs: np.ndarray, labels: np.ndarray, label_groups, group_sizes) -> list[dict | None]:
    """Entities and relations of each input (word spans `first`/`last`), each kept from the
    window that owns its first word (a relation: its head's first word). At most
    `limits.MAX_ENTITIES` entities and `limits.MAX_RELATIONS` relations per input, the
    highest-scoring (a warning names the input when more were found)."""
    from .grids import decode_mjere

    types, relations = label_groups["entity"], label_groups["relation_start"]
    merged: list[dict | None] = [None if not r["windows"] else {"entities": [], "relations": []} for r in records]
    counts = [{} for _ in records]
    for p, (i, k, start, end) in enumerate(parts):
        owner = records[i]["owners"]
        entities, triples = decode_mjere(labels[p], end - start, probs[p], group_sizes, MAX_ENTITIES, MAX_RELATIONS,
                                         counts[i])
        found = {}
        for e in entities:
            found[(e["start"], e["end"])] = {"entity_group": types[e["type"] + 1], "first": start + e["start"],
                                             "last": start + e["end"], "score": e["score"]}
            if owner[start + e["start"]] == k:
                merged[i]["entities"].append(found[(e["start"], e["end"])])
        for t in triples:
            if owner[start + t["head_start"]] != k:
                continue
            merged[i]["relations"].append({
                "head": dict(found[(t["head_start"], t["head_end"])]),
                "tail": dict(found[(t["tail_start"], t["tail_end"])]),
                "label": relations[t["relation"] + 1], "score": t["score"]})
    for record, values, found in zip(records, merged, counts):
        if values is not None:
            for key, limit, name in (("entities", MAX_ENTITIES, "MAX_ENTITIES"),
                                     ("relations", MAX_RELATIONS, "MAX_RELATIONS")):
                values[key] = _bounded(values[key], limit, found.get(key, 0), f"{record['_name']}: {key}", name)
    return merged


def _bounded(items: list[dict], limit: int, found: int, what: str, name: str) -> list[dict]:
    """At most `limit` items, the highest-scoring (in their order), with a warning when the
    model found more (`found`, counted over windows before each window's own bound)."""
    if len(items) > limit:
        keep = sorted(sorted(range(len(items)), key=lambda j: -items[j]["score"])[:limit])
        items = [items[j] for j in keep]
    if found > limit:
        warnings.warn(f"{what}: the model marked {found:,} (over its windows), more than {name}={limit:,} (an "
                      f"untrained or noisy model marks most word pairs); the {len(items):,} highest-scoring are kept",
                      stacklevel=3)
    return items


def decode_word_pairs(task: str, records, parts, probs: np.ndarray, labels: np.ndarray, label_groups, group_sizes) -> list:
    """Per-input decisions of a word-pair batch: MRE `(label id, score)` per pair, MJERE
    entities and relations."""
    if task == "mre":
        return pairs_mre(records, parts, probs, labels)
    return joint_windows(records, parts, probs, labels, label_groups, group_sizes)


def finish(task: str, record: dict, id2label, label_groups, ignore_labels=frozenset(), tags=None,
           marginals=None, decoded=None):
    """One input's records: NER from its merged `tags` / `marginals`, MRE and MJERE from the
    `decoded` values of `decode_word_pairs` (None: the input had no words)."""
    if task == "ner":
        if not record["words"]:
            return []
        entities = entities_ner(record, tags, marginals, id2label)
        return [e for e in entities if e["entity_group"] not in ignore_labels]
    if task == "mre":
        names = label_groups["relation"]
        return [{"head": span(record, *head), "tail": span(record, *tail), "label": names[label], "score": score}
                for (head, tail), (label, score) in zip(record["pairs"] or [], decoded or [])
                if names[label] not in ignore_labels]
    if decoded is None:
        return {"entities": [], "relations": []}
    return {"entities": [with_span(record, e) for e in decoded["entities"] if e["entity_group"] not in ignore_labels],
            "relations": [{**r, "head": with_span(record, r["head"]), "tail": with_span(record, r["tail"])}
                          for r in decoded["relations"] if r["label"] not in ignore_labels]}


def records_from_lists(inputs, images=None, contexts=None, pairs=None, is_split_into_words=None):
    """`predict`'s arguments (inputs plus per-input lists) as pipeline records; returns
    `(records, single)`. For a single input, `images` / `contexts` may be the value itself or
    a list of one, `pairs` is that input's list of pairs. A string where a per-input list is
    expected is an error (it would otherwise be read character by character)."""
    batch, single = normalize_inputs(inputs, is_split_into_words)
    n = len(batch)

    def per_input(values, name: str, unwrap: bool) -> list:
        if values is None:
            return [None] * n
        if single and (not unwrap or not isinstance(values, (list, tuple))):
            return [values]
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{name}: expected a list with one entry per input ({n}), got {type(values).__name__}")
        if len(values) != n:
            raise ValueError(f"got {len(values)} {name} for {n} inputs (use None for a missing one)")
        return list(values)

    columns = {"image": per_input(images, "images", True), "context": per_input(contexts, "contexts", True),
               "pairs": per_input(pairs, "pair lists", not single)}
    records = []
    for i, item in enumerate(batch):
        record = {"text": item} if isinstance(item, str) else {"words": list(item)}
        record.update({key: values[i] for key, values in columns.items() if values[i] is not None})
        record["_name"] = f"input {i}"
        records.append(record)
    return records, single


__all__ = ["as_record", "check_ignore_labels", "check_window_args", "decode_word_pairs", "finish", "is_dataset",
           "merge_words", "named", "pieces", "plan", "records_from_lists", "row_pos_tags", "row_record",
           "fits_unencoded", "subword_counts", "window_rows"]
