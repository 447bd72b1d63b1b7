"""Readers for the raw corpus formats. Every error names the file and the line.

Twitter-2015/2017 (CoNLL style): an `IMGID:<id>` line, one `token<TAB>tag` line per token,
blank lines between sentences. Rules applied (see data/README.md for the hazards):

* `OTHER` is renamed `MISC` (the same type under the name other datasets use).
* IOB2 normalisation: an `I-X` that does not continue an `X` entity becomes `B-X`. Under the
  conlleval reading the entity set is unchanged; the number of changed tags is reported.
* Tokens are kept verbatim, whitespace-only and invisible-character tokens included (the
  processor encodes a token without subwords as the unknown token, so no label moves to
  another word). A token that is empty, or a line without a TAB, is an error.

MNRE: one Python dict literal per line, parsed with `ast.literal_eval` (never `eval`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
NER_LABELS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
_TYPE_ALIASES = {"OTHER": "MISC"}


class DataFormatError(ValueError):
    """A raw data line that does not follow its format; the message names file and line."""

    def __init__(self, path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = str(path), line


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


def normalize_tag(tag: str, path, line: int) -> str:
    """`OTHER` -> `MISC`; anything outside `O`/`B-T`/`I-T` for the four types is an error."""
    if tag == "O":
        return tag
    prefix, _, kind = tag.partition("-")
    kind = _TYPE_ALIASES.get(kind, kind)
    if prefix not in ("B", "I") or kind not in ENTITY_TYPES:
        raise DataFormatError(path, line, f"unknown tag {tag!r}; expected O, B-X or I-X with X in {ENTITY_TYPES} (or OTHER)")
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


def read_twitter_ner(path: str | Path) -> tuple[list[NerSentence], NerReadReport]:
    """Read a Twitter-2015/2017 file into sentences with IOB2 `PER/LOC/ORG/MISC` tags."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({error.reason})") from None
    sentences: list[NerSentence] = []
    report = NerReadReport()
    current: NerSentence | None = None

    def close(line_no: int):
        nonlocal current
        if current is None:
            return
        if not current.words:
            raise DataFormatError(path, current.line, f"sentence IMGID:{current.image_id} has no tokens")
        current.tags, changed = to_iob2(current.tags)
        if changed:
            report.repaired_tags += changed
            report.repaired_sentences += 1
            if len(report.examples) < 5:
                report.examples.append(f"{path.name}:{current.line} IMGID:{current.image_id}")
        sentences.append(current)
        report.sentences += 1
        report.tokens += len(current.words)
        current = None

    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line == "":
            close(line_no)
            continue
        if line.startswith("IMGID:"):
            if current is not None and current.words:
                raise DataFormatError(path, line_no, "IMGID line inside a sentence (missing blank line)")
            if current is not None:
                raise DataFormatError(path, current.line, f"sentence IMGID:{current.image_id} has no tokens")
            image_id = line[len("IMGID:"):].strip()
            if not image_id:
                raise DataFormatError(path, line_no, "empty image id")
            current = NerSentence(image_id=image_id, words=[], tags=[], line=line_no)
            continue
        if current is None:
            raise DataFormatError(path, line_no, "token line before any IMGID: line")
        if line.count("\t") != 1:
            raise DataFormatError(path, line_no, f"expected 'token<TAB>tag', got {line!r}")
        token, tag = line.split("\t")
        if token == "":
            raise DataFormatError(path, line_no, "empty token")
        current.words.append(token)
        current.tags.append(normalize_tag(tag.strip(), path, line_no))
    close(line_no)
    return sentences, report


MNRE_KEYS = ("token", "h", "t", "img_id", "relation")


@dataclass
class MnreInstance:
    words: list[str]
    head: tuple[int, int]  # [start, end) word span
    tail: tuple[int, int]
    image_id: str
    relation: str
    line: int


def _span(entity, words, which: str, path, line: int) -> tuple[int, int]:
    if not isinstance(entity, dict) or "pos" not in entity or "name" not in entity:
        raise DataFormatError(path, line, f"{which!r} must be a dict with 'name' and 'pos'")
    pos = entity["pos"]
    if (
        not isinstance(pos, (list, tuple))
        or len(pos) != 2
        or not all(isinstance(p, int) for p in pos)
        or not 0 <= pos[0] < pos[1] <= len(words)
    ):
        raise DataFormatError(path, line, f"{which!r} span {pos!r} is not [start, end) inside {len(words)} words")
    if " ".join(words[pos[0]:pos[1]]) != entity["name"]:
        raise DataFormatError(path, line, f"{which!r} name {entity['name']!r} does not match its span {pos!r}")
    return int(pos[0]), int(pos[1])


def parse_mnre_line(line: str, path, line_no: int) -> MnreInstance:
    """Parse one MNRE line (a Python dict literal) and check its fields."""
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as error:
        raise DataFormatError(path, line_no, f"not a Python dict literal ({type(error).__name__})") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, line_no, f"expected a dict, got {type(record).__name__}")
    missing = [k for k in MNRE_KEYS if k not in record]
    if missing:
        raise DataFormatError(path, line_no, f"missing keys {missing}")
    words = record["token"]
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise DataFormatError(path, line_no, "'token' must be a non-empty list of non-empty strings")
    if not isinstance(record["relation"], str) or not record["relation"]:
        raise DataFormatError(path, line_no, "'relation' must be a non-empty string")
    if not isinstance(record["img_id"], str) or not record["img_id"]:
        raise DataFormatError(path, line_no, "'img_id' must be a non-empty string")
    return MnreInstance(
        words=list(words),
        head=_span(record["h"], words, "h", path, line_no),
        tail=_span(record["t"], words, "t", path, line_no),
        image_id=record["img_id"],
        relation=record["relation"],
        line=line_no,
    )


def read_mnre(path: str | Path) -> list[MnreInstance]:
    """Read an MNRE file (one dict literal per line, blank lines are errors)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({error.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    instances = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataFormatError(path, line_no, "blank line")
        instances.append(parse_mnre_line(line.rstrip("\r"), path, line_no))
    return instances
