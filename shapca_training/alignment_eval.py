"""Does the alignment align? Retrieval of the matching partner in evaluation (issue 44).

Over an evaluation split, on the projected pooled features the alignment losses see (`x_t`,
`x_c`, `x_v`; the model returns them whenever it computes the losses, as in evaluation):

* `semantic_r1_c2t` / `semantic_r1_t2c`: for each example with a context, is its own text the
  nearest (cosine) of all the split's texts of examples with a context (and the reverse);
* `modality_r1_c2i` / `modality_r1_i2c`: the same between contexts and images, over examples
  with both;
* `semantic_chance` / `modality_chance`: the R@1 of features that carry no information, 1 / N
  for N candidates (`..._pairs`);
* `semantic_shapley_gap` / `modality_shapley_gap`: the matching player's mean Shapley value minus
  a non-matching player's in the evaluation batches' games (both directions averaged; each batch
  is one game of its own examples, so the gap depends on the batch size), where the alignment
  plays Shapley games.

Retrieval is over the whole split (queries in blocks of `BLOCK` rows, so memory stays bounded).
A tie shares the hit: a query whose best score is shared by m candidates, its own among them,
counts 1/m, so collapsed features (all equal) score exactly chance. The Trainer adds these as
`<prefix>_alignment_<name>` (`eval_`, `validation_`, `test_`) when the split has contexts;
a text-only evaluation gets no such keys. Nothing here runs in a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 1024
# The four directions: (loss, key, what is retrieved); `<loss>_r1_<key>` in the metrics.
DIRECTIONS = (("semantic", "c2t", "context -> text"), ("semantic", "t2c", "text -> context"),
              ("modality", "c2i", "context -> image"), ("modality", "i2c", "image -> context"))


def top1_retrieval(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Mean top-1 accuracy of retrieving candidate i for query i by cosine similarity (ties
    share the hit)."""
    if queries.shape != candidates.shape or queries.dim() != 2:
        raise ValueError(f"queries and candidates must be (N, d) of one shape, got {tuple(queries.shape)} and "
                         f"{tuple(candidates.shape)}")
    q, c = F.normalize(queries.float(), dim=-1), F.normalize(candidates.float(), dim=-1)
    hits = []
    for start in range(0, q.shape[0], BLOCK):
        sims = q[start:start + BLOCK] @ c.T
        best = sims.max(dim=1, keepdim=True).values
        tied = sims >= best - 1e-6
        own = tied[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])]
        hits.append(own.float() / tied.sum(dim=1))
    return torch.cat(hits).mean().item()


class AlignmentCollector:
    """Gathers one evaluation's features and games, batch by batch (`add`), and scores them
    (`metrics`)."""

    def __init__(self):
        self.batches: list[dict] = []
        self.gaps: dict[str, list[float]] = {"semantic": [], "modality": []}

    def add(self, outputs, inputs: dict, gather=None) -> None:
        """One evaluation batch: the model's output and its inputs; `gather` collects a tensor
        from every process (the Trainer's `accelerator.gather_for_metrics`)."""
        x_c = getattr(outputs, "context_embeds", None)
        if x_c is None:  # the model computed no alignment features (the same on every process)
            return
        x_t, x_v = outputs.text_embeds, outputs.image_embeds
        has_context = inputs["context_mask"].bool().any(dim=1)
        has_image = inputs.get("has_image")
        has_image = torch.zeros_like(has_context) if x_v is None or has_image is None else has_image.bool()
        if x_v is None:
            x_v = torch.zeros_like(x_t)
        batch = {"text": x_t, "context": x_c, "image": x_v, "has_context": has_context.to(torch.uint8),
                 "has_image": has_image.to(torch.uint8)}
        if gather is not None:
            batch = {name: gather(value) for name, value in batch.items()}
        self.batches.append({name: value.detach().float().cpu() for name, value in batch.items()})
        games = getattr(outputs, "shapley_games", None)
        if games is not None and bool(games.valid_anchors()):
            values = {name: float(value) for name, value in games.values().items()}
            for loss in self.gaps:
                gaps = [value - values[key.removesuffix("/matching") + "/others"] for key, value in values.items()
                        if key.startswith(f"shapley/{loss}/") and key.endswith("/matching")]
                if gaps:
                    self.gaps[loss].append(sum(gaps) / len(gaps))

    def metrics(self) -> dict:
        """The retrieval and gap figures (module docstring); empty when no example had a context."""
        if not self.batches:
            return {}
        every = {name: torch.cat([b[name] for b in self.batches]) for name in self.batches[0]}
        has_context = every["has_context"].bool()
        if not has_context.any():
            return {}
        out = {}
        both = has_context & every["has_image"].bool()
        for loss, mask, other in (("semantic", has_context, "text"), ("modality", both, "image")):
            directions = [key for name, key, _ in DIRECTIONS if name == loss]  # (context -> other, other -> context)
            n = int(mask.sum())
            if n < 2:
                continue  # retrieval needs at least two candidates
            contexts, partners = every["context"][mask], every[other][mask]
            out[f"{loss}_r1_{directions[0]}"] = round(top1_retrieval(contexts, partners), 4)
            out[f"{loss}_r1_{directions[1]}"] = round(top1_retrieval(partners, contexts), 4)
            out[f"{loss}_chance"] = round(1 / n, 4)
            out[f"{loss}_pairs"] = n
        for loss, gaps in self.gaps.items():
            if gaps:
                out[f"{loss}_shapley_gap"] = round(sum(gaps) / len(gaps), 4)
        return out


__all__ = ["DIRECTIONS", "AlignmentCollector", "top1_retrieval"]
