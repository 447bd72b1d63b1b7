"""Windows over long inputs: a text of any length is read as overlapping windows of words that
the model takes whole, and every word is decided by exactly one window.

* `plan_windows`: consecutive windows `[start, end)` of at most `max_words` words and
  `max_subwords` subwords each; consecutive windows share `stride` words (fewer where a
  window cannot hold them and still move on).
* `owners`: for each word, the window in which it lies farthest from a window edge (the
  earlier window on a tie): the window whose reading of that word has the most context on
  both sides. NER takes each word's tag and marginals from its owner, so no word is in two
  entities; joint extraction keeps an entity (and a relation) from the window that owns its
  first word (its head's first word), so relations are found only between entities that
  share a window.
* `pair_window`: for relation extraction, a window that holds both spans of a pair (the one
  where the pair sits most centrally), or a window made around the pair.

Pure Python, no torch: the pipeline and the torch-free predictor share it. Not part of the
forward pass (no tensors).
"""

from __future__ import annotations

from typing import Sequence


def plan_windows(subwords: Sequence[int], max_words: int, max_subwords: int, stride: int) -> list[tuple[int, int]]:
    """Windows covering all words (`subwords[i]`: subword count of word i, at least 1)."""
    if max_words < 1 or not 0 <= stride < max_words:
        raise ValueError(f"windows need max_words >= 1 and 0 <= stride < max_words, got {max_words} and {stride}")
    n = len(subwords)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, total = start, 0
        while end < n and end - start < max_words and total + subwords[end] <= max_subwords:
            total += subwords[end]
            end += 1
        if end == start:
            raise ValueError(f"word {start} alone is {subwords[start]} subwords, more than the "
                             f"{max_subwords} a window holds")
        windows.append((start, end))
        if end == n:
            break
        start = max(end - stride, start + 1)
    return windows


def owners(windows: Sequence[tuple[int, int]], n: int) -> list[int]:
    """The index of the window that decides each of `n` words (see the module docstring)."""
    best = [-1] * n
    depth = [-1] * n
    for k, (start, end) in enumerate(windows):
        for i in range(start, end):
            d = min(i - start, end - 1 - i)
            if d > depth[i]:
                best[i], depth[i] = k, d
    return best


def pair_window(windows: list[tuple[int, int]], head: tuple[int, int], tail: tuple[int, int],
                subwords: Sequence[int], max_words: int, max_subwords: int) -> int:
    """The index of a window holding both spans of a pair, appending one centred on the pair
    when none does; a pair wider than a window is a `ValueError`."""
    lo, hi = min(head[0], tail[0]), max(head[1], tail[1])
    inside = [(min(lo - s, e - hi), k) for k, (s, e) in enumerate(windows) if s <= lo and hi <= e]
    if inside:
        return max(inside)[1]
    if hi - lo > max_words or sum(subwords[lo:hi]) > max_subwords:
        raise ValueError(f"the pair spans words {lo}-{hi} ({hi - lo} words, {sum(subwords[lo:hi])} subwords), more "
                         f"than one window holds ({max_words} words, {max_subwords} subwords)")
    start, end = lo, hi
    total = sum(subwords[lo:hi])
    while end - start < max_words:  # grow around the pair, alternating sides, while it fits
        grown = False
        if start > 0 and total + subwords[start - 1] <= max_subwords and end - start < max_words:
            start -= 1
            total += subwords[start]
            grown = True
        if end < len(subwords) and total + subwords[end] <= max_subwords and end - start < max_words:
            total += subwords[end]
            end += 1
            grown = True
        if not grown:
            break
    windows.append((start, end))
    return len(windows) - 1


__all__ = ["owners", "pair_window", "plan_windows"]
