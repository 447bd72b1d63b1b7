"""Readers for the raw corpus formats. Every error names the file and the line.

NER, CoNLL style (Twitter-2015/2017 and any user corpus): one `token<TAB>tag` line per token,
blank lines between sentences, and optionally an `IMGID:<id>` line opening a sentence (the
Twitter corpora have one on every sentence). Rules applied (see data/README.md for the hazards):

* Tags are `O`, `B-<type>` or `I-<type>`; the types are read from the data unless a preset
  fixes them (Twitter: PER/LOC/ORG/MISC, with `OTHER` renamed `MISC`, the same type under
  the name other datasets use).
* IOB2 normalisation: an `I-X` that does not continue an `X` entity becomes `B-X`. Under the
  conlleval reading the entity set is unchanged; the number of changed tags is reported.
* Tokens are kept verbatim, tokens with whitespace (`New York`, a lone U+00A0) and
  invisible-character tokens included (the processor encodes a token without subwords as the
  unknown token, so no label moves to another word); prediction takes the same word lists. A
  token that is empty, or a line without a TAB, is an error.
* A UTF-8 byte order mark at the start of a file is skipped.

MNRE: one Python dict literal per line, parsed with `ast.literal_eval` (never `eval`).
Relation extraction as JSON lines: the same record as JSON (`docs/data.md`). Joint extraction
as JSON lines: one sentence per line with its entities and relations (`docs/data.md`).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from modeling_shapca.inference import is_word_span

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
TWITTER_ALIASES = {"OTHER": "MISC"}
NONE_LABEL = "None"


def bio_label_names(types: Iterable[str]) -> list[str]:
    """`O` then `B-T`, `I-T` for each type in the order given."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


NER_LABELS = tuple(bio_label_names(ENTITY_TYPES))


def types_of(tags: Iterable[str]) -> list[str]:
    """The entity types of a collection of BIO tags, sorted."""
    return sorted({tag[2:] for tag in tags if tag != "O"})


class DataFormatError(ValueError):
    """A raw data line that does not follow its format; the message names file and line."""

    def __init__(self, path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


@dataclass
class NerSentence:
    image_id: str
    words: list[str]
    tags: list[str]
    line: int  # line of the IMGID header


@dataclass
class NerReadReport:
    sentences: int = 0
    tokens: int = 0
    repaired_tags: int = 0  # orphan I-X turned into B-X
    repaired_sentences: int = 0
    examples: list[str] = field(default_factory=list)


def normalize_tag(tag: str, path, line: int, types: tuple[str, ...] | None = None,
                  aliases: Mapping[str, str] | None = None) -> str:
    """`O`, `B-T` or `I-T`. With `types` (a preset) T must be one of them (after `aliases`);
    without, any non-empty type is read from the data."""
    if tag == "O":
        return tag
    prefix, dash, kind = tag.partition("-")
    kind = (aliases or {}).get(kind, kind)
    if prefix not in ("B", "I") or not dash or not kind:
        raise DataFormatError(path, line, f"tag {tag!r} is not BIO: expected O, B-<type> or I-<type>")
    if any(c.isspace() for c in kind):
        raise DataFormatError(path, line, f"tag {tag!r}: the entity type {kind!r} contains whitespace, which the "
                                          f"metrics and the Hub's label lists do not keep; write it as "
                                          f"{prefix}-{'_'.join(kind.split())}")
    if types is not None and kind not in types:
        alias_note = f" (or {', '.join(aliases)})" if aliases else ""
        raise DataFormatError(path, line, f"unknown tag {tag!r}; this preset expects O, B-X or I-X with X in {types}"
                                          f"{alias_note}. For your own entity types build the data as 'ner' "
                                          "(python -m datasets_scripts.build ner --name NAME ...) or train with "
                                          "--dataset_path on the folder")
    return f"{prefix}-{kind}"


def to_iob2(tags: list[str]) -> tuple[list[str], int]:
    """Turn every `I-X` that does not continue an `X` entity into `B-X`; returns the changes."""
    fixed, changed, previous = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
            changed += 1
        fixed.append(tag)
        previous = tag
    return fixed, changed


def read_text(path: Path) -> str:
    """A raw file as text: UTF-8 (a leading byte order mark skipped); invalid bytes are an
    error naming the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({error.reason})") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_conll_ner(path: str | Path, types: tuple[str, ...] | None = None, aliases: Mapping[str, str] | None = None,
                   require_image_ids: bool = False) -> tuple[list[NerSentence], NerReadReport]:
    """Read a CoNLL-style NER file into sentences with IOB2 tags. `types` / `aliases` fix the
    label set (a preset); `require_image_ids` makes an `IMGID:` line mandatory on every
    sentence (the Twitter corpora). A sentence without one has `image_id == ""`."""
    path = Path(path)
    text = read_text(path)
    sentences: list[NerSentence] = []
    report = NerReadReport()
    current: NerSentence | None = None

    def where(sentence: NerSentence) -> str:
        return f"IMGID:{sentence.image_id}" if sentence.image_id else f"line {sentence.line}"

    def close():
        nonlocal current
        if current is None:
            return
        if not current.words:
            raise DataFormatError(path, current.line, f"sentence {where(current)} has no tokens")
        current.tags, changed = to_iob2(current.tags)
        if changed:
            report.repaired_tags += changed
            report.repaired_sentences += 1
            if len(report.examples) < 5:
                report.examples.append(f"{path.name}:{current.line} {where(current)}")
        sentences.append(current)
        report.sentences += 1
        report.tokens += len(current.words)
        current = None

    line_no = 0
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line == "":
            close()
            continue
        if line.startswith("IMGID:"):
            if current is not None and current.words:
                raise DataFormatError(path, line_no, "IMGID line inside a sentence (missing blank line)")
            if current is not None:
                raise DataFormatError(path, current.line, f"sentence {where(current)} has no tokens")
            image_id = line[len("IMGID:"):].strip()
            if not image_id:
                raise DataFormatError(path, line_no, "empty image id")
            current = NerSentence(image_id=image_id, words=[], tags=[], line=line_no)
            continue
        if current is None:
            if require_image_ids:
                raise DataFormatError(path, line_no, "token line before any IMGID: line (this format opens every "
                                                     "sentence with IMGID:<id>)")
            current = NerSentence(image_id="", words=[], tags=[], line=line_no)
        if line.count("\t") != 1:
            raise DataFormatError(path, line_no, f"expected 'token<TAB>tag', got {line!r}")
        token, tag = line.split("\t")
        if token == "":
            raise DataFormatError(path, line_no, "empty token")
        current.words.append(token)
        current.tags.append(normalize_tag(tag.strip(), path, line_no, types, aliases))
    close()
    return sentences, report


def read_twitter_ner(path: str | Path) -> tuple[list[NerSentence], NerReadReport]:
    """Read a Twitter-2015/2017 file into sentences with IOB2 `PER/LOC/ORG/MISC` tags."""
    return read_conll_ner(path, ENTITY_TYPES, TWITTER_ALIASES, require_image_ids=True)


MNRE_KEYS = ("token", "h", "t", "img_id", "relation")


@dataclass
class MnreInstance:
    words: list[str]
    head: tuple[int, int]  # [start, end) word span
    tail: tuple[int, int]
    image_id: str
    relation: str
    line: int


def _span(entity, words, which: str, path, line: int, require_name: bool = True) -> tuple[int, int]:
    if not isinstance(entity, dict) or "pos" not in entity or (require_name and "name" not in entity):
        keys = "'name' and 'pos'" if require_name else "'pos' (and optionally 'name')"
        raise DataFormatError(path, line, f"{which!r} must be a dict with {keys}")
    pos = entity["pos"]
    if not is_word_span(pos, len(words)):
        raise DataFormatError(path, line, f"{which!r} span {pos!r} is not [start, end) of two ints inside "
                                          f"{len(words)} words")
    if "name" in entity and " ".join(words[pos[0]:pos[1]]) != entity["name"]:
        raise DataFormatError(path, line, f"{which!r} name {entity['name']!r} does not match its span {pos!r}")
    return int(pos[0]), int(pos[1])


def _words(record: dict, keys: tuple[str, ...], path, line_no: int) -> list[str]:
    key = next((k for k in keys if k in record), None)
    words = record.get(key) if key else None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise DataFormatError(path, line_no, f"{'/'.join(repr(k) for k in keys)} must be a non-empty list of "
                                             "non-empty strings")
    return list(words)


def _image_id(record: dict, path, line_no: int, required: bool) -> str:
    value = record.get("img_id", record.get("image_id"))
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise DataFormatError(path, line_no, "'img_id' must be a non-empty string" + ("" if required else " when given"))
    return value


def mnre_record(record, path, line_no: int, strict: bool = True) -> MnreInstance:
    """Check one relation-extraction record: MNRE's keys (`strict`: all of them, entity names
    included) or the JSON-lines form (`token` or `words`; `img_id` and entity names optional)."""
    if not isinstance(record, dict):
        raise DataFormatError(path, line_no, f"expected a dict, got {type(record).__name__}")
    needed = MNRE_KEYS if strict else ("h", "t", "relation")
    missing = [k for k in needed if k not in record]
    if missing:
        raise DataFormatError(path, line_no, f"missing keys {missing}")
    words = _words(record, ("token",) if strict else ("token", "words", "tokens"), path, line_no)
    if not isinstance(record["relation"], str) or not record["relation"]:
        raise DataFormatError(path, line_no, "'relation' must be a non-empty string")
    return MnreInstance(
        words=words,
        head=_span(record["h"], words, "h", path, line_no, strict),
        tail=_span(record["t"], words, "t", path, line_no, strict),
        image_id=_image_id(record, path, line_no, strict),
        relation=record["relation"],
        line=line_no,
    )


def parse_mnre_line(line: str, path, line_no: int) -> MnreInstance:
    """Parse one MNRE line (a Python dict literal) and check its fields."""
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as error:
        raise DataFormatError(path, line_no, f"not a Python dict literal ({type(error).__name__})") from None
    return mnre_record(record, path, line_no)


def _lines(path: Path) -> list[tuple[int, str]]:
    """The numbered lines of a record-per-line file; blank lines are errors, a final newline is not."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    numbered = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataFormatError(path, line_no, "blank line")
        numbered.append((line_no, line.rstrip("\r")))
    return numbered


def read_mnre(path: str | Path) -> list[MnreInstance]:
    """Read an MNRE file (one dict literal per line, blank lines are errors)."""
    path = Path(path)
    return [parse_mnre_line(line, path, line_no) for line_no, line in _lines(path)]


def _json(line: str, path, line_no: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataFormatError(path, line_no, f"not JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise DataFormatError(path, line_no, "JSON nested too deeply") from None


def read_relation_jsonl(path: str | Path) -> list[MnreInstance]:
    """Relation extraction as JSON lines: one entity pair per line (see `mnre_record`)."""
    path = Path(path)
    return [mnre_record(_json(line, path, line_no), path, line_no, strict=False) for line_no, line in _lines(path)]


@dataclass
class JointSentence:
    words: list[str]
    entities: list[tuple[int, int, str]]  # (start, end, type), word spans [start, end)
    triples: list[tuple[int, int, int, int, str]]  # (head_start, head_end, tail_start, tail_end, relation)
    image_id: str
    line: int


def joint_record(record, path, line_no: int) -> JointSentence:
    """One joint-extraction sentence: `words` (or `token` / `tokens`), `entities`
    `[{"start", "end", "type"}]`, `relations` `[{"head": [s, e], "tail": [s, e], "relation"}]`
    whose spans are listed entities, optional `img_id`."""
    if not isinstance(record, dict):
        raise DataFormatError(path, line_no, f"expected a dict, got {type(record).__name__}")
    words = _words(record, ("words", "token", "tokens"), path, line_no)
    entities = record.get("entities")
    if not isinstance(entities, list):
        raise DataFormatError(path, line_no, "'entities' must be a list of {'start', 'end', 'type'}")
    spans: dict[tuple[int, int], str] = {}
    for k, entity in enumerate(entities):
        if (not isinstance(entity, dict) or not is_word_span([entity.get("start"), entity.get("end")], len(words))
                or not isinstance(entity.get("type"), str) or not entity["type"]):
            raise DataFormatError(path, line_no, f"entity {k} must be {{'start', 'end', 'type'}} with [start, end) "
                                                 f"inside {len(words)} words and a non-empty type, got {entity!r}")
        span = (entity["start"], entity["end"])
        if spans.get(span, entity["type"]) != entity["type"]:
            raise DataFormatError(path, line_no, f"entity {k}: span {list(span)} is listed with two types")
        spans[span] = entity["type"]
    relations = record.get("relations", [])
    if not isinstance(relations, list):
        raise DataFormatError(path, line_no, "'relations' must be a list of {'head', 'tail', 'relation'}")
    triples = []
    for k, relation in enumerate(relations):
        if not isinstance(relation, dict) or not isinstance(relation.get("relation"), str) or not relation["relation"]:
            raise DataFormatError(path, line_no, f"relation {k} must be {{'head', 'tail', 'relation'}} with a "
                                                 f"non-empty relation name, got {relation!r}")
        ends = []
        for role in ("head", "tail"):
            span = relation.get(role)
            if not is_word_span(span, len(words)) or tuple(span) not in spans:
                raise DataFormatError(path, line_no, f"relation {k}: {role} {span!r} is not the [start, end) span "
                                                     "of a listed entity")
            ends += list(span)
        triples.append((*ends, relation["relation"]))
    return JointSentence(words, sorted((s, e, t) for (s, e), t in spans.items()), triples,
                         _image_id(record, path, line_no, False), line_no)


def read_joint_jsonl(path: str | Path) -> list[JointSentence]:
    """Joint entity-relation extraction as JSON lines: one sentence per line (`joint_record`)."""
    path = Path(path)
    return [joint_record(_json(line, path, line_no), path, line_no) for line_no, line in _lines(path)]
