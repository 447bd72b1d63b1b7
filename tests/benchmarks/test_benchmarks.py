"""The benchmark scripts run in their CI-size mode and report what docs/benchmarks.md uses."""

import math

import pytest
import torch

from benchmarks import bench_model, bench_shapley_fidelity
from modeling_shapca.alignment import info_nce_loss, shapley_contrastive_loss


@pytest.mark.parametrize("head", ["ner", "mjere"])
def test_bench_model_quick(head):
    result = bench_model.main(["--setting", "quick", "--device", "cpu", "--iterations", "1", "--head", head])
    for key in ("train_throughput_ratio", "inference_throughput_ratio", "alignment_fraction_of_train_step",
                "shapca_train_samples_per_s", "backbone_train_samples_per_s"):
        assert math.isfinite(result[key]) and result[key] > 0
    # what the head asks of the device on top of the backbones: kernels, and never a host sync
    assert result["head_train_syncs"] == 0 and result["head_infer_syncs"] == 0
    assert 0 < result["alignment_kernels"] < result["head_train_kernels"]
    assert result["head_infer_kernels"] > 0


def test_bench_shapley_fidelity_quick():
    rows = bench_shapley_fidelity.main(["--quick"])
    assert [r["k"] for r in rows] == [8, 16, 28, 64]
    assert rows[0]["reference"] == "exact" and rows[0]["exact_ms"] > 0
    assert all(r["mae"] >= 0 and r["scans"] >= 3 for r in rows)


def test_all_masked_losses_are_zero_and_differentiable():
    sim = torch.randn(4, 4, requires_grad=True)
    none = torch.zeros(4, dtype=torch.bool)
    for loss in (shapley_contrastive_loss(sim, 0.1, pair_mask=none), info_nce_loss(sim, 0.1, pair_mask=none)):
        assert loss.item() == 0.0
        loss.backward()


def test_bench_model_inference_only_and_words():
    result = bench_model.main(["--setting", "quick", "--iterations", "1", "--inference_only", "--words", "20",
                               "--batch", "4", "--head", "mre"])
    assert result["words"] == 20 and result["seq"] >= 2 * 20 + 3 and result["batch"] == 4
    assert "train_throughput_ratio" not in result and result["inference_throughput_ratio"] > 0
    assert result["head_infer_syncs"] == 0
    assert bench_model.SETTINGS["quick"]["words"] == 10  # overrides do not leak into the table
