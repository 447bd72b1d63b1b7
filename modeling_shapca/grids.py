"""The word-pair grid codecs of MRE and MJERE (the grid layout is documented in
`word_pair.py`): encode a sample's labels into a grid, decode a grid of label ids into
predictions. NumPy only, no torch: the pipeline, the metrics and torch-free serving share them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE_INDEX = -100  # label of what no loss or metric reads (padding, non-first subwords, empty cells)


def encode_mre(n: int, head: Sequence[int], tail: Sequence[int], relation: int) -> list[list[list[int]]]:
    """One group; only the cell (head start, tail start) is labelled."""
    grid = [[IGNORE_INDEX] * n for _ in range(n)]
    grid[head[0]][tail[0]] = relation
    return [grid]


RELATION_CELLS = ("all", "entity_pairs")


def encode_mjere(n: int, entities: Sequence[dict], triples: Sequence[dict],
                 relation_cells: str = "all") -> list[list[list[int]]]:
    """Three groups (entity, relation_start, relation_end); ids are 0 = None, types / relations
    shifted by one (`entity["type"]` and `triple["relation"]` are 0-based ids without None).

    `relation_cells` chooses which cells of the two relation groups are trained: `"all"`
    (every cell, nearly all `None`), or `"entity_pairs"` (only the cells the decoder reads:
    those between the first words of two gold entities in `relation_start`, between their last
    words in `relation_end`; the rest is -100). Decoding is the same either way.
    """
    if relation_cells not in RELATION_CELLS:
        raise ValueError(f"relation_cells must be one of {RELATION_CELLS}, got {relation_cells!r}")
    entity = [[0 if i <= j else IGNORE_INDEX for j in range(n)] for i in range(n)]
    if relation_cells == "all":
        start = [[0] * n for _ in range(n)]
        end = [[0] * n for _ in range(n)]
    else:
        firsts = {e["start"] for e in entities}
        lasts = {e["end"] - 1 for e in entities}
        start = [[0 if i in firsts and j in firsts else IGNORE_INDEX for j in range(n)] for i in range(n)]
        end = [[0 if i in lasts and j in lasts else IGNORE_INDEX for j in range(n)] for i in range(n)]
    for e in entities:
        entity[e["start"]][e["end"] - 1] = e["type"] + 1
    for t in triples:
        start[t["head_start"]][t["tail_start"]] = t["relation"] + 1
        end[t["head_end"] - 1][t["tail_end"] - 1] = t["relation"] + 1
    return [entity, start, end]


_MAX_CONFLICTS = 64


def _top(scores: np.ndarray, k: int | None) -> np.ndarray:
    """Indices of the `k` highest `scores`, in their original order (all when `k` is None or
    not smaller than the count)."""
    if k is None or len(scores) <= k:
        return np.arange(len(scores))
    return np.sort(np.argpartition(-scores, k - 1)[:k])


def decode_mjere(grid, n: int, probs=None, group_sizes: Sequence[int] | None = None, max_entities: int | None = None,
                 max_relations: int | None = None, counts: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Entities and triples (0-based type / relation ids) from a `(3, >=n, >=n)` grid.

    A triple `(A, B, r)` is read when both relation cells of the pair carry `r`. When they
    carry two different relations, one of them was overwritten by another triple sharing
    that cell; the cell is explained if another decoded pair sharing it carries the same
    relation on its own other cell, and the pair takes the relation of its unexplained cell.
    (On a noisy grid with more than 64 such conflicts, conflicting pairs are dropped.) The
    pair cells are read for all entity pairs at once with numpy indexing.

    With `probs` (`(>=n, >=n, labels)` probabilities of the three groups side by side, sizes
    `group_sizes`), each entity and triple gets a `score` (an entity: its cell's probability; a
    triple: the mean of its two relation cells'), and `max_entities` / `max_relations` keep only
    the highest-scoring ones (`limits.MAX_ENTITIES`, `limits.MAX_RELATIONS`: an untrained or
    noisy model marks most cells, and the relation decode is quadratic in the entities); `counts`
    (a dict) receives how many of each were found before the bounds.
    """
    grid = np.asarray(grid.cpu() if hasattr(grid, "cpu") else grid)[:, :n, :n]
    entity, start, end = grid[0], grid[1], grid[2]
    heads, tails = np.nonzero(np.triu(entity > 0))
    entity_scores = None
    if counts is not None:
        counts["entities"] = counts.get("entities", 0) + len(heads)
    if probs is not None:
        probs = np.asarray(probs)[:n, :n]
        offset_start, offset_end = group_sizes[0], group_sizes[0] + group_sizes[1]
        entity_scores = probs[heads, tails, entity[heads, tails]]
        keep = _top(entity_scores, max_entities)
        heads, tails, entity_scores = heads[keep], tails[keep], entity_scores[keep]
    entities = [{"start": int(i), "end": int(j) + 1, "type": int(entity[i, j]) - 1} for i, j in zip(heads, tails)]
    if entity_scores is not None:
        for e, score in zip(entities, entity_scores.tolist()):
            e["score"] = score
    if len(entities) < 2:
        return entities, []
    first, last = heads, tails  # each entity's first and last word
    ss = start[first[:, None], first[None, :]]  # (E, E) relation on the start cell of pair (a, b)
    ee = end[last[:, None], last[None, :]]
    np.fill_diagonal(ss, 0)
    relation = np.where((ss == ee) & (ss > 0), ss, 0)
    conflicts = np.argwhere((ss > 0) & (ee > 0) & (ss != ee))
    if 0 < len(conflicts) <= _MAX_CONFLICTS:
        for a, b in conflicts:
            same_start = (first[:, None] == first[a]) & (first[None, :] == first[b])
            same_end = (last[:, None] == last[a]) & (last[None, :] == last[b])
            same_start[a, b] = same_end[a, b] = False
            starts_explained = bool((ee[same_start] == ss[a, b]).any())
            ends_explained = bool((ss[same_end] == ee[a, b]).any())
            if starts_explained and not ends_explained:
                relation[a, b] = ee[a, b]
            elif ends_explained and not starts_explained:
                relation[a, b] = ss[a, b]
    found = np.argwhere(relation > 0)
    a, b = found[:, 0], found[:, 1]
    r = relation[a, b]
    if counts is not None:
        counts["relations"] = counts.get("relations", 0) + len(r)
    scores = None
    if probs is not None:
        scores = (probs[first[a], first[b], offset_start + r] + probs[last[a], last[b], offset_end + r]) / 2
        keep = _top(scores, max_relations)
        a, b, r, scores = a[keep], b[keep], r[keep], scores[keep].tolist()
    triples = [{"head_start": int(first[i]), "head_end": int(last[i]) + 1, "tail_start": int(first[j]),
                "tail_end": int(last[j]) + 1, "relation": int(k) - 1} for i, j, k in zip(a, b, r)]
    if scores is not None:
        for t, score in zip(triples, scores):
            t["score"] = score
    return entities, triples
