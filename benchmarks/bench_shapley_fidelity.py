"""Fidelity and cost of the cyclic Shapley approximation (Alg. 1).

For k in {8, 16, 28, 64}: mean absolute error of one `cyclic_shapley` draw (what training
uses) against exact Shapley values (k = 8, enumeration) or a converged Monte-Carlo estimate
(larger k), relative to the mean |phi|; the same for plain Monte-Carlo with as many
independent permutations as Alg. 1 makes scans (equal cost); and the time of one call.

    python -m benchmarks.bench_shapley_fidelity [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.shapley_reference import exact_shapley, monte_carlo_shapley
from modeling_shapca.alignment import cyclic_shapley


def similarity(k: int, seed: int) -> torch.Tensor:
    """Cosine similarities of random unit features with a positive diagonal (aligned pairs)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(k, 32, generator=g, dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(a + 0.8 * torch.randn(k, 32, generator=g, dtype=torch.float64), dim=-1)
    return a @ b.t()


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(ks=(8, 16, 28, 64), tau=0.1, reference_permutations=20000, draws=50, repeats=50) -> list[dict]:
    rows = []
    for k in ks:
        sim = similarity(k, seed=k)
        if k <= 10:
            reference, kind = exact_shapley(sim, tau), "exact"
        else:
            reference = monte_carlo_shapley(sim, tau, reference_permutations, torch.Generator().manual_seed(1))
            kind = f"Monte-Carlo, {reference_permutations} permutations"
        g = torch.Generator().manual_seed(2)
        errors = [(cyclic_shapley(sim, tau, generator=g) - reference).abs().mean().item() for _ in range(draws)]
        rounds = max(1, k.bit_length() - 1)  # scans of Alg. 1: strides k//2, ..., 1
        same_budget = [(monte_carlo_shapley(sim, tau, rounds, g) - reference).abs().mean().item() for _ in range(draws)]
        scale = reference.abs().mean().item()
        sim32 = sim.float()
        rows.append({
            "k": k,
            "reference": kind,
            "mae": sum(errors) / len(errors),
            "relative_mae": sum(errors) / len(errors) / scale,
            "mean_abs_phi": scale,
            "scans": rounds,
            "independent_permutations_same_budget_relative_mae": sum(same_budget) / len(same_budget) / scale,
            "cyclic_ms": 1000 * timed(lambda: cyclic_shapley(sim32, tau), repeats),
            "exact_ms": 1000 * timed(lambda: exact_shapley(sim32, tau), 3) if k <= 10 else None,
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small reference and few draws (CI)")
    args = parser.parse_args(argv)
    rows = run(reference_permutations=500, draws=5, repeats=3) if args.quick else run()
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
