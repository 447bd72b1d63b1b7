"""The benchmark scripts run in their CI-size mode and report what docs/benchmarks.md uses."""

import json
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


# Kernel-launching operators the head adds to the backbones at the `tiny` setting (CPU proxy
# of the launch-bound GPU regime), recorded in docs/benchmarks.md. A change that adds kernels
# fails here: lower the numbers when you remove some.
KERNEL_BUDGET = {
    "ner": {"head_train_kernels": 368, "head_infer_kernels": 73, "alignment_kernels": 160},
    "mre": {"head_train_kernels": 406, "head_infer_kernels": 83, "alignment_kernels": 160},
    "mjere": {"head_train_kernels": 446, "head_infer_kernels": 91, "alignment_kernels": 160},
}


@pytest.mark.parametrize("head", sorted(KERNEL_BUDGET))
def test_head_kernel_count_does_not_grow(head):
    result = bench_model.main(["--setting", "tiny", "--device", "cpu", "--iterations", "1", "--repeats", "1",
                               "--head", head])
    for key, budget in KERNEL_BUDGET[head].items():
        assert result[key] <= budget, f"{head} {key}: {result[key]} kernels > {budget}"
    assert result["head_train_syncs"] == 0 and result["head_infer_syncs"] == 0
    assert len(result["train_ratio_spread"]) == 2 and result["repeats"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU operator-level test above holds)")
@pytest.mark.parametrize("head", ["ner", "mre", "mjere"])
def test_no_cuda_sync_added_in_a_train_step_or_inference(head):
    """PyTorch's sync debug mode counts the synchronising CUDA calls of a Shap-CA train step
    and inference call; they equal those of the backbones alone (transformers' BERT checks its
    attention mask once per forward), so the head adds none."""
    setting = bench_model.SETTINGS["quick"]
    device = torch.device("cuda")
    model = bench_model.build(setting, head).to(device)
    config = model.config
    backbone = bench_model.BackboneOnly(model.shapca.text_model, model.shapca.vision_model, config.text_hidden_size,
                                        config.vision_hidden_size, len(bench_model.LABELS)).to(device)
    batch = bench_model.synthetic_batch(setting, config.text_config.vocab_size, device,
                                        None if head == "ner" else config.group_sizes)
    word_labels = batch.pop("word_labels", batch["labels"])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    backbone_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "word_index")}

    def shapca_step():
        model(**batch).loss.backward()

    def backbone_step():
        backbone(**backbone_inputs, labels=word_labels).backward()

    @torch.no_grad()
    def shapca_infer():
        model(**inputs)

    @torch.no_grad()
    def backbone_infer():
        backbone(**backbone_inputs)

    model.train(), backbone.train()
    shapca_step(), backbone_step()  # warm-up: allocator, generators, cached indices
    sites = bench_model.cuda_sync_sites(shapca_step), bench_model.cuda_sync_sites(backbone_step)
    assert len(sites[0]) == len(sites[1]), f"train step sync sites: Shap-CA {sites[0]}, backbone {sites[1]}"
    model.eval(), backbone.eval()
    shapca_infer(), backbone_infer()
    sites = bench_model.cuda_sync_sites(shapca_infer), bench_model.cuda_sync_sites(backbone_infer)
    assert len(sites[0]) == len(sites[1]), f"inference sync sites: Shap-CA {sites[0]}, backbone {sites[1]}"


def test_run_seeds_table_skips_existing_runs(tmp_path, monkeypatch):
    import json as _json

    from benchmarks import run_seeds

    for seed, f1 in ((42, 0.70), (43, 0.72)):
        folder = run_seeds.run_dir(tmp_path, "twitter2015", seed)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(_json.dumps({"test": {"test_f1": f1}}))
    calls = []
    monkeypatch.setattr(run_seeds.subprocess, "run", lambda command, **kwargs: calls.append(command))
    text = run_seeds.main(["--datasets", "twitter2015", "--runs-dir", str(tmp_path)])
    assert len(calls) == 1 and "--seed" in calls[0] and calls[0][calls[0].index("--seed") + 1] == "44"
    assert "| twitter2015 | test F1 | 70.00 | 72.00 | – | 71.00 ± 1.41 (2) |" in text
    assert (tmp_path / "seeds.md").read_text() == text


def test_synthetic_multimodal_quick_images_and_contexts_decide_the_types(tmp_path):
    """The quick synthetic benchmark: entity types are only in the image and the context.
    With them Shap-CA reads the types; without them it can only guess (chance: 25 F1); the
    alignment losses are non-zero and fall during training."""
    from benchmarks import synthetic_multimodal

    rows = {r["variant"]: r for r in synthetic_multimodal.main(["--quick", "--work-dir", str(tmp_path)])}
    full, text_only = rows["images + contexts (Shap-CA)"], rows["neither (text only)"]
    assert full["test_f1"] >= 60.0 and text_only["test_f1"] <= 40.0
    assert full["test_f1"] - text_only["test_f1"] >= 30.0
    for loss in ("semantic_loss", "modality_loss"):
        first, last = full[loss]
        assert first != 0 and last < first
        assert text_only[loss] == [0.0, 0.0]


def test_bench_model_profile_writes_where_the_time_goes(tmp_path):
    """`--profile FILE` appends torch.profiler tables (Shap-CA and backbones-only inference)."""
    path = tmp_path / "profile.txt"
    result = bench_model.main(["--setting", "tiny", "--device", "cpu", "--iterations", "1", "--repeats", "1",
                               "--inference_only", "--profile", str(path)])
    text = path.read_text()
    assert result["profile"] == str(path)
    headers = [line for line in text.splitlines() if line.startswith("# ")]
    assert headers == ["# tiny ner batch 2 bf16=False: Shap-CA inference",
                       "# tiny ner batch 2 bf16=False: backbones only, inference"]
    assert "aten::addmm" in text and "Self CPU time total" in text


def test_ablation_regimes_are_built_as_documented_and_the_switches_change_the_losses(tmp_path):
    """The quick size of `benchmarks.alignment_ablation`: the regime's test split has no context
    (train and validation keep theirs), every example has its image, and each Table 3 switch
    changes which alignment losses the model computes on the regime's data."""
    import json

    import datasets

    from benchmarks import alignment_ablation as ablation
    from benchmarks import synthetic_multimodal as synthetic
    from modeling_shapca import ShapCAConfig, ShapCAForTokenClassification, ShapCAProcessor
    from shapca_training.data import ShapCACollator

    folder = ablation.build_regime(tmp_path, "test-without-context", ablation.REGIMES["test-without-context"], quick=True)
    dataset = datasets.load_from_disk(str(folder))
    assert {k: len(v) for k, v in dataset.items()} == {"train": 32, "validation": 8, "test": 16}
    assert all(dataset["train"]["has_image"]) and all(dataset["test"]["has_image"])
    assert all(c for c in dataset["train"]["context"]) and all(c for c in dataset["validation"]["context"])
    assert set(dataset["test"]["context"]) == {""}
    assert json.loads((folder / "shapca_dataset.json").read_text())["task"] == "ner"
    few = ablation.REGIMES["few-labels"]
    assert few["train_size"] == 48 and few["test_contexts"]
    assert ablation.REGIMES["noisy-images"]["image_noise"] == 90.0

    text_model = synthetic.tiny_text_model(tmp_path / "text")
    import transformers

    processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32}),
                                transformers.AutoTokenizer.from_pretrained(text_model), max_length=64, max_words=64)
    rows = [dict(row, pos_tags=["NOUN"] * len(row["words"])) for row in dataset["train"].select(range(8))]
    batch = ShapCACollator(processor, "ner")(rows)
    losses = {}
    for variant, flags in ablation.VARIANTS.items():
        settings = dict(zip(flags[::2], flags[1::2]))
        config = ShapCAConfig.from_text_vision_pretrained(
            text_model, {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
            label2id={n: i for i, n in enumerate(dataset["train"].features["tags"].feature.names)},
            id2label=dict(enumerate(dataset["train"].features["tags"].feature.names)),
            projection_dim=16, fusion_dim=16, fusion_heads=2, hidden_dim=16, max_words=64,
            alignment=settings.get("--alignment", "shapley"), fusion=settings.get("--fusion", "adaptive"),
            context_in_alignment=settings.get("--context_in_alignment", "true") == "true")
        torch.manual_seed(0)
        out = ShapCAForTokenClassification(config).train()(**batch)
        losses[variant] = (float(out.semantic_loss), float(out.modality_loss), out.shapley_games is not None)
        if out.shapley_games is not None:
            assert len(out.shapley_games.values()) == 8 if variant != "w/o context in alignment" else 4
    full = losses["Shap-CA (full)"]
    assert full[0] != 0 and full[1] != 0 and full[2]
    assert losses["w/o alignment (none)"] == (0.0, 0.0, False)
    assert losses["w/o context in alignment"][0] == 0 and losses["w/o context in alignment"][1] != full[1]
    assert losses["w/o Shapley value (infonce)"][0] > 0 and not losses["w/o Shapley value (infonce)"][2]
    plain = losses["w/o adaptive fusion (plain)"]  # fusion is not a loss switch: both games are played
    assert plain[0] != 0 and plain[1] != 0 and plain[2]
    args = ablation.train_args(folder, text_model, tmp_path / "run", 3, 8, ablation.VARIANTS["w/o alignment (none)"])
    assert args[-2:] == ["--alignment", "none"] and args[args.index("--seed") + 1] == "3"


@pytest.fixture(scope="module")
def minilm_shapca(tmp_path_factory):
    """A MiniLM Shap-CA folder (the shipped encoder, fresh heads: speed does not depend on training)."""
    from tests.helpers import save_minilm_shapca

    folder = tmp_path_factory.mktemp("bench") / "model"
    save_minilm_shapca(folder)
    return folder


def test_bench_serving_quick(minilm_shapca):
    from benchmarks import bench_serving
    from benchmarks.bench_onnx import SPEED_PATHS

    speed = bench_serving.main(["speed", "--model", str(minilm_shapca), "--rounds", "1", "--limit", "40"])
    rates = speed["sentences_per_second"]
    assert speed["sentences_per_round"] == 20 and sorted(rates) == sorted(SPEED_PATHS)
    for name, (ours, anchor, least) in bench_serving.TARGETS.items():
        ratio = speed["targets"][name]["ratio"]  # of the unrounded rates
        assert ratio == pytest.approx(rates[ours] / rates[anchor], abs=0.011)
        assert speed["targets"][name]["met"] == (ratio >= least) or abs(ratio - least) <= 0.01
    latency = bench_serving.main(["latency", "--model", str(minilm_shapca), "--sentences", "3"])
    assert latency["sentences"] == 3 and sorted(latency["ms"]) == sorted(p for p in SPEED_PATHS if "onnx" in p)
    assert all(v["p50_ms"] <= v["p95_ms"] for v in latency["ms"].values())
    ms = latency["ms"]
    assert latency["int8_p50_ratio"]["ratio"] == round(ms["shapca-onnx-int8"]["p50_ms"] / ms["tagger-onnx-int8"]["p50_ms"], 2)
    assert latency["int8_p50_ratio"]["target"] == 1.2
    threads = bench_serving.main(["threads", "--model", str(minilm_shapca), "--sentences", "3", "--rounds", "1",
                                  "--limit", "40"])
    assert list(threads["settings"]) == ["sleep", "spin-within-runs", "spin"]
    assert all(threads[name]["p50_ms"] <= threads[name]["p95_ms"] for name in threads["settings"])
    profile = bench_serving.main(["profile", "--model", str(minilm_shapca), "--sentences", "40", "--limit", "40"])
    # the exported encoder attends eagerly: one Softmax per layer (6) plus the fusion's
    assert profile["shapca-fp32"]["ops"]["Softmax"]["calls_per_run"] == 7
    assert profile["tagger-fp32"]["ops"]["Softmax"]["calls_per_run"] == 6
    assert set(profile["shapca-int8 predictor, batch 1"]["shares"]) == {"pos", "tokenizer", "graph",
                                                               "rest (encoding, CRF, records)"}


def test_bench_serving_tag_ahead_quick(minilm_shapca):
    from benchmarks import bench_serving

    result = bench_serving.main(["tag-ahead", "--model", str(minilm_shapca), "--rounds", "2", "--limit", "120",
                                 "--batch-size", "8"])
    assert result["sentences_per_round"] == 40 and result["same_records_last_round"] is True
    assert result["gain"] == pytest.approx(result["with_tag_ahead"] / result["without"] - 1, abs=0.01)


def test_bench_serving_pos_quick():
    from benchmarks import bench_serving

    result = bench_serving.main(["pos", "--limit", "30"])
    assert (result["spacy_path"], result["fast_path"]) == (False, True)
    assert result["words_with_other_tags"] == 0 and (result["sentences"], result["words"]) == (158, 2540)


def test_context_dropout_quick(tmp_path):
    """The context dropout evidence (issue 43) in quick mode: one training per (dropout, seed),
    each tested with and without the test split's contexts, resumable, and its table."""
    from benchmarks import context_dropout

    text = context_dropout.main(["--quick", "--seeds", "0", "--epochs", "1", "--work", str(tmp_path),
                                 "--dropouts", "0", "0.5"])
    results = tmp_path / "results" / "context-dropout"
    for dropout in ("0", "0.5"):
        found = json.loads((results / dropout / "0.json").read_text())
        assert set(found) == {"contexts", "none", "validation_f1"}
    assert not (results / "0.3").exists() and not list((tmp_path / "runs").glob("*"))  # weights removed
    lines = text.splitlines()
    assert lines[0].startswith("| context_dropout | test F1, no context at test | test F1, contexts at test |")
    assert lines[2].startswith("| 0 | ") and lines[4].startswith("| 0.5 | ") and "(n = 1)" in lines[4]
    again = context_dropout.main(["--quick", "--seeds", "0", "--epochs", "1", "--work", str(tmp_path),
                                  "--dropouts", "0", "0.5"])
    assert again == text  # resumed: nothing run again, the same table


def test_image_cost_quick(tmp_path):
    """The multimodal cost job at tiny sizes: every step at both batch sizes, every generation
    exactly max_new_tokens long, LLaVA's scaled estimate t_fixed + (L / k) t_layers, the cache
    figures, and a table row per step; the result file is what it returned."""
    from benchmarks import image_cost

    out = tmp_path / "cost.json"
    result = image_cost.main(["--quick", "--layers", "1", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    steps = result["steps"]
    assert list(steps) == ["text-only", "resnet-152", "clip-vit-b16", "llava-1.5-7b", "smolvlm-256m", "blip-large"]
    assert all(list(step["seconds_per_image"]) == ["1", "2"] for step in steps.values())
    for name in image_cost.GENERATORS:
        assert [c["new_tokens"] for c in steps[name]["calls"].values()] == [3, 3]
    llava = steps["llava-1.5-7b"]
    assert llava["scaled"] and (llava["layers_built"], llava["layers_full"]) == (1, 2)
    for batch, call in llava["calls"].items():
        assert call["t_fixed_s"] + call["t_layers_s"] == pytest.approx(call["measured_s"])
        assert call["estimated_full_s"] == pytest.approx(call["t_fixed_s"] + 2 * call["t_layers_s"])
        assert llava["seconds_per_image"][batch] == pytest.approx(call["estimated_full_s"] / int(batch))
        assert llava["inputs"][batch]["image_tokens"] == (28 // 14) ** 2
    smol = steps["smolvlm-256m"]["inputs"]["1"]
    assert smol["image_tokens"] == 13 * 1  # 1024 x 768 in 64-pixel tiles of the 128-pixel picture: 3 x 4 and the whole, 1 token each
    assert not steps["smolvlm-256m"]["scaled"] and not steps["blip-large"]["scaled"]
    cache = result["cache"]
    text = steps["text-only"]["seconds_per_image"]["1"]
    gen = steps["blip-large"]["seconds_per_image"]["1"]
    assert cache["stream_speedup"]["blip-large"]["0.5"] == pytest.approx((text + gen) / (text + gen / 2 + cache["hit_s"]))
    rows = image_cost.table(result).splitlines()
    assert sum(row.startswith(("| text-only", "| resnet-152", "| clip-vit-b16", "| llava-1.5-7b (1 of 2 layers",
                               "| smolvlm-256m", "| blip-large")) for row in rows) == 6 + 2  # + 2 speedup rows


def test_int8_schemes_quick(trained_model_dir, tmp_path):
    """Every int8 scheme exported once and scored on validation and test; the kept one is what
    `shapca-export` keeps on the same figures; one table row per graph."""
    import shutil

    from benchmarks import int8_schemes
    from shapca_serving.quantization import SCHEMES
    from shapca_training.export import pick_scheme
    from tests.helpers import raw_twitter

    model = tmp_path / "run"
    shutil.copytree(trained_model_dir, model)
    data = raw_twitter(tmp_path / "raw")
    out = tmp_path / "result.json"
    result = int8_schemes.main(["--model", str(model), "--data", str(data), "--rounds", "2", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert list(result["f1"]) == ["fp32", *SCHEMES] and list(result["int8"]) == list(SCHEMES)
    assert result["calibration"] == {"data": str(data), "split": "train", "sentences": 2, "sampled_from": 2, "seed": 0}
    candidates = {s: {"f1": result["f1"][s]["validation"], "sentences_per_second": result["sentences_per_second"][s]}
                  for s in SCHEMES}
    assert (result["kept"], result["chosen_by"]) == pick_scheme(candidates)
    kept = result["kept"]
    assert result["kept_test_change"] == round(result["f1"][kept]["test"] - result["f1"]["fp32"]["test"], 2)
    assert sorted(p.name for p in (tmp_path / "run-int8-schemes" / "onnx").iterdir()) == [
        "export.json", "model.onnx", "model_int8.onnx", "model_int8.static-minmax.onnx",
        "model_int8.static-percentile.onnx", "vision.onnx"]
    rows = int8_schemes.table([str(out)]).splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == ["fp32", *(s + (" (kept)" if s == kept else "") for s in SCHEMES)]
    again = int8_schemes.main(["--model", str(model), "--data", str(data), "--rounds", "1"])
    assert result["export_seconds"] > 0 and again["export_seconds"] is None  # the same weights' export reused
    assert again["f1"] == result["f1"] and again["calibration"] == result["calibration"]
