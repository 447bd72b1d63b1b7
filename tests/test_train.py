"""train.py end to end on a few shipped sentences with a tiny random text encoder."""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

import train
from shapca_training.trainer import parameter_groups
from tests.helpers import MINILM_PATH, base_args, raw_twitter, tiny_config, tiny_text_config

def test_yaml_and_overrides():
    model_args, shapca_args, data_args, training_args = train.parse_arguments(
        [str(train.ROOT / "configs" / "twitter2015-minilm.yaml"), "--num_train_epochs", "3", "--alpha", "0.5"]
    )
    assert training_args.num_train_epochs == 3 and shapca_args.alpha == 0.5
    assert shapca_args.tau is None  # not in the YAML: ShapCAConfig's default applies
    assert training_args.learning_rate == 5e-5 and model_args.head_learning_rate == 3e-4
    assert json.loads(model_args.vision_config)["model_type"] == "resnet"
    assert train.resolve_path(model_args.text_model).endswith("model")


def test_parameter_groups_get_their_learning_rates():
    from modeling_shapca import ShapCAForTokenClassification

    model = ShapCAForTokenClassification(tiny_config())
    groups = parameter_groups(model, 5e-5, 3e-4, 0.01)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        group = by_id[id(param)]
        expected = 5e-5 if (".text_model." in f".{name}" or ".vision_model." in f".{name}") else 3e-4
        assert group["lr"] == expected, name
        if param.ndim < 2:
            assert group["weight_decay"] == 0.0


def test_tiny_end_to_end_train_and_reload(tiny_text_model, tmp_path):
    results = train.main(base_args(tiny_text_model, tmp_path, "--num_train_epochs", "5"))
    losses = [e["loss"] for e in results["log_history"] if "loss" in e]
    assert len(losses) == 15  # 3 steps per epoch
    assert sum(losses[-3:]) < sum(losses[:3])  # last epoch below the first
    assert all("main_loss" in e and "semantic_loss" in e for e in results["log_history"] if "loss" in e)
    assert 0.0 <= results["test"]["test_f1"] <= 1.0
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "processor_config.json").exists()
    assert any(p.name.startswith("checkpoint-") for p in tmp_path.iterdir())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metric"]["module"] == "metrics/mner_f1"

    model = transformers.AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    words = [["Kevin", "Durant", "in", "Paris"]]
    batch = processor(words=words, pos_tags=[["PROPN", "PROPN", "ADP", "PROPN"]])
    from modeling_shapca import ShapCAForTokenClassification

    local = ShapCAForTokenClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).predictions, local(**batch).predictions)


def test_resume_from_checkpoint(tiny_text_model, tmp_path):
    first = train.main(base_args(tiny_text_model, tmp_path, "--max_steps", "2", "--save_strategy", "steps",
                                 "--save_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2"))
    assert (tmp_path / "checkpoint-2").exists()
    resumed = train.main(base_args(tiny_text_model, tmp_path, "--max_steps", "4", "--save_strategy", "steps",
                                   "--save_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2",
                                   "--resume_from_checkpoint", str(tmp_path / "checkpoint-2")))
    steps = [e["step"] for e in resumed["log_history"] if "loss" in e]
    assert steps[:2] == [1, 2] and steps[-1] == 4  # history restored, training went on from step 2
    assert (tmp_path / "checkpoint-4").exists()
    first_losses = [e["loss"] for e in first["log_history"] if "loss" in e]
    assert [e["loss"] for e in resumed["log_history"] if "loss" in e][:2] == first_losses


def test_two_process_run_matches_one_process(tmp_path_factory):
    """torchrun with 2 CPU processes and gathered alignment features: the first logged loss
    (the mean over ranks) and the test F1 equal those of one process over the same global batch."""
    tmp = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    config = transformers.BertConfig(**{k: v for k, v in tiny_text_config().items() if k != "model_type"},
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertModel(config).save_pretrained(tmp / "bert")
    transformers.AutoTokenizer.from_pretrained(MINILM_PATH).save_pretrained(tmp / "bert")
    from datasets_scripts.readers import read_twitter_ner

    sentences, _ = read_twitter_ner(train.ROOT / "data" / "twitter2015" / "train.txt")
    with open(tmp / "contexts.jsonl", "w") as handle:
        for i, sentence in enumerate(sentences[:24]):
            if i % 3:  # some examples without context
                handle.write(json.dumps({"image_id": sentence.image_id, "context": f"picture number {i}"}) + "\n")
    common = base_args(str(tmp / "bert"), tmp / "unused") + [
        "--contexts", str(tmp / "contexts.jsonl"), "--gather_alignment_features", "true", "--dropout", "0",
        "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    runs = {
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(train.ROOT / "train.py"), *common, "--per_device_train_batch_size", "4", "--output_dir", str(tmp / "two")],
        "one": [sys.executable, str(train.ROOT / "train.py"), *common, "--per_device_train_batch_size", "8",
                "--output_dir", str(tmp / "one")],
    }
    results = {}
    for name, command in runs.items():
        done = subprocess.run(command, cwd=train.ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        results[name] = json.loads((tmp / name / "results.json").read_text())
        assert "early stopping required" not in done.stderr + done.stdout  # no spurious warnings
    first = {name: [e for e in r["log_history"] if "loss" in e][0] for name, r in results.items()}
    assert first["two"]["semantic_loss"] != 0
    for part in ("loss", "main_loss", "semantic_loss", "modality_loss"):  # every part: the mean over ranks
        assert first["two"][part] == pytest.approx(first["one"][part], abs=2e-3), part
    # evaluation: Trainer gathers every rank's predictions before the metric runs once
    assert results["two"]["test"]["test_f1"] == pytest.approx(results["one"]["test"]["test_f1"], abs=1e-9)
    # (eval losses are not compared: with 12 test samples accelerate pads rank 1 with repeated
    # samples, which gather_for_metrics drops from predictions but which join the gathered
    # Shapley game of the reported eval loss)


@pytest.mark.parametrize("dataset, metric, checkpointing", [("mnre", "metrics/mre_f1", "false"),
                                                             ("mjere", "metrics/mjere_f1", "true")])
def test_word_pair_end_to_end(tiny_text_model, tmp_path, dataset, metric, checkpointing):
    args = base_args(tiny_text_model, tmp_path, "--num_train_epochs", "4", "--head_learning_rate", "1e-3",
                     "--gradient_checkpointing", checkpointing)  # the grid recomputed in backward
    args[0] = str(train.ROOT / "configs" / f"{dataset}-minilm.yaml")
    results = train.main(args)
    assert results["metric"]["module"] == metric
    losses = [e["loss"] for e in results["log_history"] if "loss" in e]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert 0.0 <= results["test"]["test_f1"] <= 1.0
    model = transformers.AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(model).__name__ == "ShapCAForWordPairExtraction"
    assert model.config.task == ("mre" if dataset == "mnre" else "mjere")
    card = (tmp_path / "README.md").read_text()
    assert metric in card and "word-pair contrastive layer" in card


def test_train_from_a_built_dataset_folder(tiny_text_model, tmp_path):
    from datasets_scripts import build

    raw = raw_twitter(tmp_path / "raw")
    build.main(["twitter2015", "--raw-dir", str(raw), "--output-dir", str(tmp_path / "built")])
    results = train.main(base_args(tiny_text_model, tmp_path / "run", "--dataset_path", str(tmp_path / "built"),
                                   "--num_train_epochs", "1"))
    assert results["test"]["test_samples_per_second"] > 0
    assert len([e for e in results["log_history"] if "loss" in e]) == 1  # 2 sentences, batch 8: one step


def test_capture_head_trains_from_the_same_first_loss(tiny_text_model, tmp_path):
    """train.py --capture_head: the compiled fusion + CRF head gives the eager first-step loss
    (later steps draw dropout from the graph's own stream), trains and evaluates; a word-pair
    corpus is refused by name."""
    eager = train.main(base_args(tiny_text_model, tmp_path / "eager", "--num_train_epochs", "1"))
    captured = train.main(base_args(tiny_text_model, tmp_path / "captured", "--num_train_epochs", "1",
                                    "--capture_head", "aot_eager"))
    first = [[e["main_loss"] for e in r["log_history"] if "main_loss" in e][0] for r in (eager, captured)]
    assert first[0] == pytest.approx(first[1], abs=1e-3)
    assert "test_f1" in captured["test"] and (tmp_path / "captured" / "model.safetensors").exists()
    args = base_args(tiny_text_model, tmp_path / "mre", "--capture_head", "aot_eager")
    args[0] = str(train.ROOT / "configs" / "mnre-minilm.yaml")
    with pytest.raises(ValueError, match="--capture_head captures the NER head .* mnre is 'mre' data"):
        train.main(args)
