"""Which raw file holds which split: `train`, `validation` (also named `valid`, `dev` or `val`)
and `test`, with the extensions a format allows."""

from __future__ import annotations

from pathlib import Path

SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"), "test": ("test",)}


def canonical_split(name: str) -> str | None:
    """`validation` for `valid` / `dev` / `val`; the split itself for train / test; else None."""
    for split, aliases in SPLIT_ALIASES.items():
        if name in aliases:
            return split
    return None


def find_split_files(raw_dir: str | Path, suffixes: tuple[str, ...], prefix: str = "") -> dict[str, Path]:
    """`{split: file}` in `raw_dir` for `<prefix><alias><suffix>`; a missing or doubly given
    split is an error that lists the names looked for."""
    raw_dir = Path(raw_dir)
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        names = [f"{prefix}{alias}{suffix}" for alias in aliases for suffix in suffixes]
        present = [raw_dir / name for name in names if (raw_dir / name).is_file()]
        if not present:
            raise FileNotFoundError(f"{raw_dir}: no {split} file; looked for {', '.join(names)}")
        if len(present) > 1:
            raise ValueError(f"{raw_dir}: {len(present)} files for the {split} split "
                             f"({', '.join(p.name for p in present)}); keep one")
        found[split] = present[0]
    return found


def has_split_files(raw_dir: str | Path, suffixes: tuple[str, ...], prefix: str = "") -> bool:
    """Whether `raw_dir` has a train file of this format."""
    return any((Path(raw_dir) / f"{prefix}train{suffix}").is_file() for suffix in suffixes)
