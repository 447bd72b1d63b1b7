"""Training you can trust: losses under gradient accumulation, resume by default, an honest
CLI (every config field a flag, no abbreviations, --optim honoured), errors before heavy work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

import train
from modeling_shapca import ShapCAConfig
from shapca_training import arguments
from shapca_training.trainer import ShapCATrainer
from tests.helpers import base_args, raw_twitter


def run(tiny_text_model, out, *extra, config="twitter2015"):
    args = base_args(tiny_text_model, out, *extra)
    args[0] = str(train.ROOT / "configs" / f"{config}-minilm.yaml")
    return train.main(args)


@pytest.fixture(scope="module")
def no_dropout_text_model(tmp_path_factory):
    import transformers

    from tests.helpers import MINILM_PATH, tiny_text_config

    path = tmp_path_factory.mktemp("bert_no_dropout")
    torch.manual_seed(0)
    config = transformers.BertConfig(**{k: v for k, v in tiny_text_config().items() if k != "model_type"},
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertModel(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(MINILM_PATH).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("config", ["twitter2015", "mnre"])
def test_one_step_at_batch_8_equals_two_accumulated_steps_at_batch_4(no_dropout_text_model, tmp_path, config):
    tiny_text_model = no_dropout_text_model
    common = ("--max_steps", "1", "--dropout", "0", "--eval_strategy", "no", "--save_strategy", "no",
              "--load_best_model_at_end", "false", "--do_train", "true", "--max_grad_norm", "1e9")
    full = run(tiny_text_model, tmp_path / "full", *common, "--per_device_train_batch_size", "8", config=config)
    accumulated = run(tiny_text_model, tmp_path / "acc", *common, "--per_device_train_batch_size", "4",
                      "--gradient_accumulation_steps", "2", config=config)
    a = [e for e in full["log_history"] if "loss" in e][0]
    b = [e for e in accumulated["log_history"] if "loss" in e][0]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert b["main_loss"] == pytest.approx(a["main_loss"], rel=1e-4)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # the same gradient, not GA times it


class Interrupt(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise KeyboardInterrupt  # killed mid-epoch, after the checkpoint of step 4


def run_killed(monkeypatch, callback: TrainerCallback, *args) -> None:
    """`run(*args)` with `callback` added to the Trainer, expecting the KeyboardInterrupt it raises."""
    original_init = ShapCATrainer.__init__

    def init_with_callback(self, *a, **kwargs):
        original_init(self, *a, **kwargs)
        self.add_callback(callback)

    with monkeypatch.context() as patch:
        patch.setattr(ShapCATrainer, "__init__", init_with_callback)
        with pytest.raises(KeyboardInterrupt):
            run(*args)


def test_rerunning_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(tiny_text_model, tmp_path,
                                                                                  monkeypatch):
    common = ("--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--save_strategy", "steps",
              "--save_steps", "2", "--eval_strategy", "epoch", "--dropout", "0", "--load_best_model_at_end", "false")
    straight = run(tiny_text_model, tmp_path / "straight", *common)
    run_killed(monkeypatch, Interrupt(), tiny_text_model, tmp_path / "killed", *common)
    assert (tmp_path / "killed" / "checkpoint-4").exists()
    resumed = run(tiny_text_model, tmp_path / "killed", *common)  # the same command again
    steps = [e["step"] for e in resumed["log_history"] if "loss" in e]
    assert steps == list(range(1, 13))  # 24 samples / 4 x 2 epochs: history kept, nothing repeated
    assert resumed["test"]["test_f1"] == pytest.approx(straight["test"]["test_f1"], abs=1e-6)
    assert resumed["test"]["test_loss"] == pytest.approx(straight["test"]["test_loss"], rel=1e-4)
    # --start_over true trains from scratch
    again = run(tiny_text_model, tmp_path / "killed", *common, "--max_steps", "1", "--start_over", "true")
    assert [e["step"] for e in again["log_history"] if "loss" in e] == [1]


def test_every_config_field_is_a_flag_and_yaml_key(tmp_path):
    fields = {f.name for f in __import__("dataclasses").fields(arguments.ShapCAArguments)}
    settable = set(ShapCAConfig.__annotations__) - arguments.NOT_FLAGS
    assert fields == settable and {"refinement_scale", "max_words", "pos_embedding_dim"} <= fields
    config = tmp_path / "c.yaml"
    config.write_text("refinement_scale: 0.5\nmax_words: 80\nalignment: infonce\n")
    _, shapca, _, _ = train.parse_arguments([str(config), "--fusion", "plain"])
    assert (shapca.refinement_scale, shapca.max_words, shapca.alignment, shapca.fusion) == (0.5, 80, "infonce", "plain")


@pytest.mark.parametrize("argv, message", [
    (["--learning_rat", "1e-3"], "unknown argument"),
    (["--alpha", "0.1", "--not_a_flag", "1"], "unknown argument"),
    (["--alignment", "shapely"], "invalid choice"),
])
def test_unknown_abbreviated_and_invalid_flags_are_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        train.parse_arguments(argv)
    assert message in str(error.value) + capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--alignment_margin", "inf", "error: --alignment_margin must be a finite number >= 0, got inf"),
    ("--alignment_margin", "-1", "error: --alignment_margin must be a finite number >= 0, got -1.0"),
    ("--tau", "nan", "error: --tau must be a finite number > 0, got nan"),
    ("--alpha", "-3", "error: --alpha must be a finite number >= 0, got -3.0"),
    ("--dropout", "1.5", "error: --dropout must be a finite number >= 0 and < 1, got 1.5"),
])
def test_config_values_out_of_range_are_refused_in_one_line_before_any_data(flag, value, message, tmp_path):
    """Issue 42: on the command line and in YAML alike, before anything is read or written."""
    with pytest.raises(SystemExit) as error:
        train.parse_arguments(["twitter2015-minilm", flag, value])
    assert str(error.value) == message
    config = tmp_path / "c.yaml"
    config.write_text(f"{flag[2:]}: {value}\n")
    with pytest.raises(SystemExit) as error:
        train.main([str(config), "--output_dir", str(tmp_path / "out")])
    assert str(error.value) == message and not (tmp_path / "out").exists()


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(SystemExit) as error:
        train.main(["twitter2015-minilm", "--output_dir", str(target)])
    assert str(error.value) == f"error: {target} is not a folder (the lock .shapca-train.lock goes inside it)"


def test_help_starts_with_the_usage_and_explains_the_switches():
    done = subprocess.run([sys.executable, "train.py", "--help"], cwd=train.ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: shapca-train CONFIG [--flag value ...]      (or: python train.py CONFIG ...)")
    assert "{shapley,infonce,none}" in done.stdout and "Eq. 17" in done.stdout and "Eq. 19" in done.stdout
    assert "{adaptive,plain}" in done.stdout


def test_optim_is_honoured_with_two_learning_rates(tiny_text_model, tmp_path):
    results = run(tiny_text_model, tmp_path, "--max_steps", "1", "--optim", "sgd", "--eval_strategy", "no",
                  "--save_strategy", "no", "--load_best_model_at_end", "false", "--do_train", "true")
    assert results["hyperparameters"]["optim"] == "sgd"

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            Probe.seen = (type(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer).__name__,
                          sorted({g["lr"] for g in (optimizer.optimizer if hasattr(optimizer, "optimizer")
                                                     else optimizer).param_groups}))

    import transformers

    from modeling_shapca import ShapCAForTokenClassification
    from tests.helpers import tiny_config

    model = ShapCAForTokenClassification(tiny_config())
    trainer = ShapCATrainer(model=model, args=transformers.TrainingArguments(str(tmp_path / "x"), optim="sgd",
                                                                             learning_rate=1e-3, report_to="none"),
                            head_learning_rate=0.01)
    optimizer = trainer.create_optimizer()
    assert type(optimizer).__name__ == "SGD" and sorted({g["lr"] for g in optimizer.param_groups}) == [1e-3, 0.01]
    trainer = ShapCATrainer(model=model, args=transformers.TrainingArguments(
        str(tmp_path / "y"), optim="galore_adamw", optim_target_modules=["classifier"], report_to="none"))
    with pytest.raises((ValueError, ImportError), match="parameter groups|galore"):
        trainer.create_optimizer()


def test_errors_before_any_heavy_work(tiny_text_model, tmp_path):
    from datasets_scripts import build

    raw = raw_twitter(tmp_path / "raw")
    build.main(["twitter2015", "--raw-dir", str(raw), "--output-dir", str(tmp_path / "built")])
    with pytest.raises(ValueError, match="holds 'ner' data \\(twitter2015\\), not 'mre' data"):
        run(tiny_text_model, tmp_path / "a", "--dataset_path", str(tmp_path / "built"), "--task", "mre")
    with pytest.raises(ValueError, match="--task mre does not fit the preset 'twitter2015'"):
        run(tiny_text_model, tmp_path / "a", "--task", "mre")
    import datasets

    built = datasets.load_from_disk(str(tmp_path / "built"))
    built["validation"] = built["validation"].select([])
    built.save_to_disk(str(tmp_path / "empty-validation"))
    with pytest.raises(ValueError, match="cannot be read .*a split saved empty"):
        run(tiny_text_model, tmp_path / "e", "--dataset_path", str(tmp_path / "empty-validation"))
    assert not (tmp_path / "e" / "model.safetensors").exists()
    from shapca_training.data import check_dataset

    with pytest.raises(ValueError, match="the 'validation' split is empty"):
        check_dataset(built, "twitter2015", "ner")
    with pytest.raises(SystemExit, match="is not a checkpoint folder"):
        run(tiny_text_model, tmp_path / "b", "--resume_from_checkpoint", str(tmp_path / "nope"))
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit, match="metric_for_best_model 'f2' is not computed for 'ner'"):
        run(tiny_text_model, tmp_path / "c", "--metric_for_best_model", "f2")
    with pytest.raises(SystemExit, match="needs --model_name_or_path"):
        run(tiny_text_model, tmp_path / "d", "--do_eval", "true")


def test_evaluate_only_a_trained_model_and_save_metrics(trained_model_dir, tiny_text_model, tmp_path):
    results = run(tiny_text_model, tmp_path / "eval", "--do_predict", "true", "--model_name_or_path",
                  str(trained_model_dir))
    assert results["validation"] == {} and set(results["test"]) >= {"test_f1", "test_precision"}
    saved = json.loads((tmp_path / "eval" / "test_results.json").read_text())
    assert saved["test_f1"] == results["test"]["test_f1"]
    trained = json.loads((trained_model_dir / "results.json").read_text())
    assert results["test"]["test_f1"] == pytest.approx(trained["test"]["test_f1"], abs=1e-9)
    for name in ("train_results.json", "validation_results.json", "test_results.json", "all_results.json"):
        assert (trained_model_dir / name).exists(), name
    assert torch.__version__


@pytest.mark.parametrize("config", sorted(p.name for p in (train.ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_parses(config):
    _, _, data, training = train.parse_arguments([str(train.ROOT / "configs" / config)])
    assert config.startswith(data.dataset) and training.output_dir


def test_resuming_with_other_model_settings_stops_before_training(tiny_text_model, tmp_path, capsys):
    common = ("--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
              "--load_best_model_at_end", "false", "--disable_tqdm", "true")
    run(tiny_text_model, tmp_path, *common, "--do_train", "true")
    assert (tmp_path / "checkpoint-1").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="checkpoint-1 was made with other model settings \\(hidden_dim: 16 there, 32 "
                                         "now\\).*--start_over true.*another --output_dir"):
        run(tiny_text_model, tmp_path, *common, "--do_train", "true", "--hidden_dim", "32")
    assert "%|" not in capsys.readouterr().err  # --disable_tqdm true: no progress bar of any kind was drawn
    run(tiny_text_model, tmp_path, *common, "--do_train", "true", "--hidden_dim", "32", "--start_over", "true")


def test_loading_a_trained_processor_logs_no_warning(trained_model_dir, caplog):
    import logging

    from modeling_shapca import ShapCAProcessor

    with caplog.at_level(logging.WARNING):
        ShapCAProcessor.from_pretrained(trained_model_dir, trust_remote_code=False)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class KillAfterStep6(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 6:
            raise KeyboardInterrupt  # killed after the checkpoint of epoch 2


EARLY_STOP = ("--num_train_epochs", "6", "--per_device_train_batch_size", "8", "--eval_strategy", "epoch",
              "--save_strategy", "epoch", "--learning_rate", "0", "--head_learning_rate", "0",
              "--early_stopping_patience", "2", "--load_best_model_at_end", "true", "--dropout", "0",
              "--do_train", "true", "--do_eval", "true")


@pytest.fixture(scope="module")
def uninterrupted(tiny_text_model, tmp_path_factory):
    return run(tiny_text_model, tmp_path_factory.mktemp("straight"), *EARLY_STOP)


@pytest.mark.parametrize("cut", [None, "trainer_state.json", "optimizer.pt:empty", "trainer_state.json:truncated"])
def test_a_killed_run_resumes_from_its_last_complete_checkpoint_and_stops_where_it_would_have(
        tiny_text_model, tmp_path, monkeypatch, uninterrupted, cut):
    """Learning rate 0: validation F1 never improves, so early stopping (patience 2) ends the
    run after epoch 3 (step 9). Killed after the checkpoint of step 6 (patience counter 1 there),
    the rerun of the same command must stop at step 9 too: the counter is restored with the
    checkpoint. `cut` leaves checkpoint-6 as a kill during its write does (a file missing, empty
    or cut short): it is set aside, and the run resumes from checkpoint-3."""
    common, straight = EARLY_STOP, uninterrupted
    assert straight["log_history"][-1]["step"] == 9 and straight["best_checkpoint"] == "checkpoint-3"
    run_killed(monkeypatch, KillAfterStep6(), tiny_text_model, tmp_path / "killed", *common)
    last = tmp_path / "killed" / "checkpoint-6"
    if cut:
        name, _, how = cut.partition(":")
        if how == "empty":
            (last / name).write_bytes(b"")
        elif how == "truncated":
            (last / name).write_text((last / name).read_text()[:40])
        else:
            (last / name).unlink()
    resumed = run(tiny_text_model, tmp_path / "killed", *common)  # the same command again
    assert resumed["log_history"][-1]["step"] == 9
    assert resumed["best_checkpoint"] == "checkpoint-3"
    assert resumed["validation"]["validation_f1"] == pytest.approx(straight["validation"]["validation_f1"], abs=1e-9)
    aside = sorted(p.name for p in (tmp_path / "killed").glob("incomplete-checkpoint-6-*"))
    assert len(aside) == (1 if cut else 0)  # set aside, kept, never used


def test_a_real_sigkill_of_train_py_is_resumed_by_the_same_command(tiny_text_model, tmp_path):
    """A real process killed with SIGKILL while it trains (checkpoints every step, so the kill
    may land in a checkpoint write): the same command run again finishes the run, each step
    logged once."""
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "train.py", *base_args(tiny_text_model, out), "--max_steps", "40", "--per_device_train_batch_size", "2", "--save_strategy", "steps", "--save_steps",
               "1", "--save_total_limit", "3", "--eval_strategy", "no", "--load_best_model_at_end", "false",
               "--do_train", "true"]
    process = subprocess.Popen(command, cwd=train.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not any(out.glob("checkpoint-4*")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert (out / ".shapca-train.lock").is_file()  # left by the kill; the kernel released its lock
    done = subprocess.run(command, cwd=train.ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / ".shapca-train.lock").exists()
    state = json.loads((out / "checkpoint-40" / "trainer_state.json").read_text())
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == list(range(1, 41))


def test_a_second_run_on_a_locked_output_dir_is_refused_before_any_data(tiny_text_model, tmp_path, monkeypatch):
    """Two trainings on one output_dir: the second stops at once, naming the folder (it used to
    die mid-run when the first one's checkpoint rotation removed a folder it wrote into)."""
    import shapca_training.data

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from shapca_serving.locks import WriterLock; "
        f"lock = WriterLock({str(out / '.shapca-train.lock')!r}, 'busy').acquire(); print('held', flush=True); "
        "time.sleep(60)")], cwd=train.ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"

        def no_data(*args, **kwargs):
            raise AssertionError("data loaded by a refused run")

        monkeypatch.setattr(shapca_training.data, "load_task_dataset", no_data)
        with pytest.raises(SystemExit, match=f"^error: another run is writing {out} right now .*"
                                             "give another --output_dir"):
            run(tiny_text_model, out)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [".shapca-train.lock"]  # the refused run wrote nothing


def test_a_finished_run_rerun_with_other_data_is_refused(tiny_text_model, tmp_path):
    """A finished run rerun with another corpus used to "resume", train 0 steps and card itself
    as trained on the new data: it is refused, with both ways out; the same data resumes."""
    from tests.helpers import SENTENCES, own_conll

    first, other = own_conll(tmp_path / "a", sentences=SENTENCES * 3), own_conll(tmp_path / "b", sentences=SENTENCES * 4)
    out = tmp_path / "run"
    extra = ("--num_train_epochs", "1", "--save_strategy", "epoch", "--eval_strategy", "epoch")
    run(tiny_text_model, out, "--dataset_path", str(first), *extra)
    with pytest.raises(SystemExit, match=r"checkpoints trained on other data \('a', splits \{'train': 12, "
                                         r"'validation': 12, 'test': 12\}\) than this command's \('b', splits "
                                         r"\{'train': 16, .*--start_over true .* or give another --output_dir"):
        run(tiny_text_model, out, "--dataset_path", str(other), *extra)
    results = run(tiny_text_model, out, "--dataset_path", str(first), *extra)  # the same data: resumed as before
    assert results["data"]["sizes"]["train"] == 12
    results = run(tiny_text_model, out, "--dataset_path", str(other), "--start_over", "true", *extra)
    assert results["data"]["sizes"]["train"] == 16 and results["schedule"]["steps_run"] == 2


def test_the_data_fingerprint_is_the_content_not_the_transforms_that_made_it(tmp_path):
    """Two processes tagging the same data can give the tables different `datasets` metadata (it
    hashes the tagger's state): the fingerprint ignores it, and still sees rows and label names."""
    import datasets

    from shapca_training.run import data_fingerprint

    features = datasets.Features({"words": datasets.Sequence(datasets.Value("string")),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER"]))})
    rows = {"words": [["Kevin", "Durant"]], "tags": [[1, 0]]}
    plain = datasets.Dataset.from_dict(rows, features=features)

    def tagged(fingerprint):  # a map written to a cache file: its tables carry the map's fingerprint
        return datasets.DatasetDict(train=plain.map(lambda row: row, new_fingerprint=fingerprint,
                                                    cache_file_name=str(tmp_path / f"{fingerprint}.arrow")))

    one, two = tagged("one-process"), tagged("another-process")

    def metadata(d):
        return next(d["train"].with_format("arrow").iter(batch_size=10)).schema.metadata

    assert metadata(one) != metadata(two)  # what differed between two real processes
    assert data_fingerprint(one) == data_fingerprint(two)
    other_rows = datasets.DatasetDict(train=datasets.Dataset.from_dict({**rows, "tags": [[0, 0]]}, features=features))
    assert data_fingerprint(datasets.DatasetDict(train=plain)) == data_fingerprint(one)
    renamed = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"words": features["words"], "tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-ORG"]))})))
    assert len({data_fingerprint(d) for d in (one, other_rows, renamed)}) == 3
