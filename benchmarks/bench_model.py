"""Cost of Shap-CA on top of its two encoders, measured in one process and one run.

Times, on the same synthetic batch and the same backbone weights, for the NER head (CRF) or
the word-pair head (`--head mre|mjere`, n x n grid):
  (a) a Shap-CA train step (forward + backward, all losses),
  (b) Shap-CA inference (eval forward including Viterbi / grid decoding),
  (c) the two backbones alone doing the same work: text encoder over [text; context] +
      vision encoder + a linear head, forward + backward (train) and forward (inference),
  (d) the alignment losses alone (context->text, text->context, context->image,
      image->context), forward + backward.
Reports samples/s and the ratios the performance targets are stated in, plus what each
part asks of the device (`benchmarks/dispatch.py`): kernel-launching operators per call (on
a GPU a small head is bound by launch overhead, so this is the device-independent measure of
the head's fixed cost) and host syncs (operators the CPU must wait for; the head must add none),
and the activation memory a train step saves for backward (`benchmarks/memory.py`).

    python -m benchmarks.bench_model --setting minilm [--device cuda] [--bf16] [--compile]
    python -m benchmarks.bench_model --setting paper-128 --head mjere --words 64
    python -m benchmarks.bench_model --setting quick        # CI-size
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch
from torch import nn

from modeling_shapca import ShapCAConfig, ShapCAForTokenClassification, ShapCAForWordPairExtraction
from .dispatch import count_dispatch
from .memory import saved_activation_bytes

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
# Label groups of the word-pair heads at the sizes of MNRE (23 relations incl. None) and MJERE.
RELATIONS = ["None"] + [f"relation_{i}" for i in range(22)]
WORD_PAIR_GROUPS = {
    "mre": {"relation": RELATIONS},
    "mjere": {"entity": ["None", "per", "org", "loc", "misc"], "relation_start": RELATIONS[:22], "relation_end": RELATIONS[:22]},
}
RESNET_152 = dict(model_type="resnet", embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 8, 36, 3],
                  layer_type="bottleneck")
SETTINGS = {
    # the paper's shapes: BERT-base (12 x 768) + ResNet-152, batch 28
    "paper-128": dict(text=dict(model_type="bert", vocab_size=28996), vision=RESNET_152, batch=28, seq=128, words=24, image=224),
    "paper-256": dict(text=dict(model_type="bert", vocab_size=28996), vision=RESNET_152, batch=28, seq=256, words=24, image=224),
    # the offline default: MiniLM-L6 (6 x 384) + the small ResNet of configs/twitter2015-minilm.yaml
    "minilm": dict(text=dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                             num_attention_heads=12, intermediate_size=1536),
                   vision=dict(model_type="resnet", embedding_size=32, hidden_sizes=[64, 128], depths=[1, 1]),
                   batch=16, seq=64, words=20, image=224),
    # the CPU proxy of the launch-bound regime: compute is nothing, dispatch is everything
    "tiny": dict(text=dict(model_type="bert", vocab_size=1000, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32),
                 vision=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1]),
                 batch=2, seq=16, words=5, image=32),
    "quick": dict(text=dict(model_type="bert", vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64),
                  vision=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
                  batch=8, seq=32, words=10, image=64),
}


class BackboneOnly(nn.Module):
    """The same text and vision encoders with a linear head: the cost floor of Shap-CA."""

    def __init__(self, text_model, vision_model, text_dim, vision_dim, num_labels):
        super().__init__()
        self.text_model, self.vision_model = text_model, vision_model
        self.head = nn.Linear(text_dim, num_labels)
        self.image_head = nn.Linear(vision_dim, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids, pixel_values, word_index, labels=None):
        states = self.text_model(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state
        words = states.gather(1, word_index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output.flatten(1)
        logits = self.head(words) + self.image_head(pooled).unsqueeze(1)
        if labels is None:
            return logits.argmax(-1)
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def synthetic_batch(setting: dict, vocab: int, device, group_sizes=None) -> dict:
    """One batch with images and contexts for every example (so every loss is active); word
    labels `(b, n)`, plus grid labels `(b, groups, n, n)` when `group_sizes` is given (about
    a quarter of the cells labelled)."""
    g = torch.Generator().manual_seed(0)
    b, seq, n = setting["batch"], setting["seq"], setting["words"]
    text_len = 2 * n  # two subwords per word
    input_ids = torch.randint(1000, vocab, (b, seq), generator=g) if vocab > 2000 else torch.randint(5, vocab, (b, seq), generator=g)
    positions = torch.arange(seq)
    text_mask = ((positions >= 1) & (positions <= text_len)).expand(b, seq)
    context_mask = ((positions > text_len + 1) & (positions < seq - 1)).expand(b, seq)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(b, seq, dtype=torch.long),
        "token_type_ids": (positions > text_len + 1).long().expand(b, seq).contiguous(),
        "text_mask": text_mask.contiguous(),  # bool, as the processor returns them
        "context_mask": context_mask.contiguous(),
        "word_index": (1 + 2 * torch.arange(n)).expand(b, n).contiguous(),
        "word_mask": torch.ones(b, n, dtype=torch.bool),
        "pos_ids": torch.randint(1, 18, (b, n), generator=g),
        "pixel_values": torch.randn(b, 3, setting["image"], setting["image"], generator=g),
        "has_image": torch.ones(b, dtype=torch.bool),
        "labels": torch.randint(0, len(LABELS), (b, n), generator=g),
    }
    if group_sizes is not None:  # the grid head trains on grid labels; word labels for the backbone
        grids = torch.stack([torch.randint(0, size, (b, n, n), generator=g) for size in group_sizes], dim=1)
        batch["word_labels"] = batch["labels"]
        batch["labels"] = grids.masked_fill(torch.rand(grids.shape, generator=g) > 0.25, -100)
    return {k: v.to(device) for k, v in batch.items()}


def cuda_sync_sites(fn) -> list[str]:
    """Where `fn()` makes synchronising CUDA calls (PyTorch's sync debug mode): one
    `file:line` of the Python frame that ran the operator per sync (autograd's engine for the
    backward). Catches what the operator-level count cannot, e.g. a blocking copy of a CPU
    tensor to the GPU or the host reads inside a CUDA kernel's launcher."""
    import warnings

    sites = []
    for _ in range(2):  # the second call is reported: the first absorbs one-off work under debug mode
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
                torch.cuda.synchronize()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        sites = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    return sites


def cuda_syncs(fn) -> int:
    """How many synchronising CUDA calls `fn()` makes (see `cuda_sync_sites`)."""
    return len(cuda_sync_sites(fn))


class Timer:
    """Seconds of `calls` consecutive calls: CUDA events on a GPU (device time of the whole
    queue, one sync at the end), `perf_counter` on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, calls: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000 / calls
        begin = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - begin) / calls


def warm_up(fn, timer: Timer, minimum: int = 5, maximum: int = 50, tolerance: float = 0.05) -> int:
    """At least `minimum` calls, then until the last three call times agree within `tolerance`
    of their median (cuDNN / cuBLAS heuristics, caches and allocator settled)."""
    times = [timer(fn, 1) for _ in range(minimum)]
    while len(times) < maximum:
        last = sorted(times[-3:])
        if last[-1] - last[0] <= tolerance * last[1]:
            break
        times.append(timer(fn, 1))
    return len(times)


def paired(fn_a, fn_b, device, repeats: int = 7, calls: int = 3) -> dict:
    """Time `fn_a` (Shap-CA) and `fn_b` (backbone only) in alternating repeats (A B, B A, ...),
    each repeat `calls` calls. Returns each one's median seconds per call and the ratio
    `b / a` as median, min and max over the paired repeats."""
    timer = Timer(torch.device(device))
    warm = warm_up(fn_a, timer) + warm_up(fn_b, timer)
    a_times, b_times = [], []
    for r in range(repeats):
        order = ((fn_a, a_times), (fn_b, b_times)) if r % 2 == 0 else ((fn_b, b_times), (fn_a, a_times))
        for fn, out in order:
            out.append(timer(fn, calls))
    ratios = sorted(b / a for a, b in zip(a_times, b_times))
    return {"a": statistics.median(a_times), "b": statistics.median(b_times), "ratio": statistics.median(ratios),
            "ratio_min": ratios[0], "ratio_max": ratios[-1], "repeats": repeats, "warmup_calls": warm}


def single(fn, device, repeats: int = 7, calls: int = 3) -> float:
    timer = Timer(torch.device(device))
    warm_up(fn, timer)
    return statistics.median(timer(fn, calls) for _ in range(repeats))


def gpu_info() -> dict:
    """The GPU's name and clocks (nvidia-smi where present)."""
    if not torch.cuda.is_available():
        return {}
    info = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    try:
        import subprocess

        query = "clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu"
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip().splitlines()[0]
        info["clocks"] = dict(zip(query.split(","), [v.strip() for v in line.split(",")]))
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        pass
    return info


def build(setting: dict, head: str = "ner"):
    """The Shap-CA model of a setting and head, default config otherwise (random weights)."""
    kwargs = dict(text_config=setting["text"], vision_config=setting["vision"])
    if head == "ner":
        labels = dict(id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
        return ShapCAForTokenClassification(ShapCAConfig(**kwargs, **labels))
    config = ShapCAConfig(**kwargs, task=head, label_groups=WORD_PAIR_GROUPS[head])
    return ShapCAForWordPairExtraction(config)


def profile_table(fn, device, calls: int = 5, rows: int = 25) -> str:
    """`torch.profiler` over `calls` calls of `fn` (after one warm call): the operators that
    take the device's time, most first (CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def _first_captured_call(choice: str, switch_on, fn, device) -> tuple[float, int]:
    """Switch a captured region on (`choice`: "default" / "reduce-overhead" with inductor, or a
    backend name), run `fn` once (tracing and compiling it) and return its seconds and the
    kernels inductor generated."""
    from torch._inductor import metrics

    from shapca_training.arguments import compile_options

    switch_on(**compile_options(choice))
    metrics.reset()
    began = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return round(time.perf_counter() - began, 1), metrics.generated_kernel_count


def run(setting_name: str, device: str = "cpu", bf16: bool = False, compile_: bool = False,
        iterations: int = 3, repeats: int = 7, head: str = "ner", gradient_checkpointing: bool = False,
        inference_only: bool = False, overrides: dict | None = None, compile_mode: str | None = None,
        profile: str | None = None, capture_alignment: str | None = None, train_only: bool = False,
        capture_head: str | None = None) -> dict:
    """Measure one setting (`SETTINGS[setting_name]` updated with `overrides`). With `compile_`,
    both models go through `torch.compile(mode=compile_mode)` and the first call of each
    (tracing + compiling + running) is reported as `compile_s_*`. With `profile`, a
    `torch.profiler` table of Shap-CA inference and of a train step is written to that file.
    With `capture_alignment` ("default", "reduce-overhead" or a backend name), the alignment runs
    as its compiled region (`ShapCAModel.capture_alignment`, what `train.py --capture_alignment`
    switches on); its first call (compiling forward and backward) is `compile_s_alignment` and
    the kernels inductor generated for it `alignment_generated_kernels`. With `capture_head`
    (NER), the fusion, classifier and CRF run as their compiled region too
    (`ShapCAForTokenClassification.capture_head`): `compile_s_head`, `head_generated_kernels`."""
    setting = dict(SETTINGS[setting_name], **(overrides or {}))
    device = torch.device(device)
    torch.manual_seed(0)
    model = build(setting, head).to(device)
    config = model.config
    if gradient_checkpointing:  # the encoders' layers and the word-pair grid recompute in backward
        model.activation_checkpointing_enable()
    backbone = BackboneOnly(model.shapca.text_model, model.shapca.vision_model, config.text_hidden_size,
                            config.vision_hidden_size, len(LABELS)).to(device)
    batch = synthetic_batch(setting, config.text_config.vocab_size, device,
                            None if head == "ner" else config.group_sizes)
    word_labels = batch.pop("word_labels", batch["labels"])  # the backbone-only model's targets
    backbone_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "word_index")}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    shapca_fn, backbone_fn = model, backbone
    if compile_:
        shapca_fn, backbone_fn = torch.compile(model, mode=compile_mode), torch.compile(backbone, mode=compile_mode)

    def shapca_train():
        with autocast:
            loss = shapca_fn(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    def backbone_train():
        with autocast:
            loss = backbone_fn(**backbone_inputs, labels=word_labels)
        loss.backward()
        backbone.zero_grad(set_to_none=True)

    inference_batch = {k: v for k, v in batch.items() if k != "labels"}

    @torch.no_grad()
    def shapca_infer():
        with autocast:
            return shapca_fn(**inference_batch).predictions

    @torch.no_grad()
    def backbone_infer():
        with autocast:
            return backbone_fn(**backbone_inputs)

    features = [torch.randn(setting["batch"], config.projection_dim, device=device, requires_grad=True) for _ in range(3)]
    present = torch.ones(setting["batch"], dtype=torch.bool, device=device)

    def alignment_only():  # the model's own call: both losses, all four directions
        semantic, modality, _ = model.shapca._alignment_losses(*features, present, present)
        (semantic + modality).backward()

    if capture_alignment:
        compile_s_alignment, generated_kernels = _first_captured_call(
            capture_alignment, model.shapca.capture_alignment, alignment_only, device)
    if capture_head:
        if head != "ner":
            raise ValueError("--capture_head captures the NER head")
        model.train()
        compile_s_head, head_generated_kernels = _first_captured_call(capture_head, model.capture_head, shapca_train,
                                                                      device)

    b = setting["batch"]
    result = {
        "setting": setting_name, "head": head, "device": str(device), "bf16": bf16, "compile": compile_, "batch": b,
        "seq": setting["seq"], "words": setting["words"], "gradient_checkpointing": gradient_checkpointing,
        "params_million": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }
    result.update(gpu_info())
    if compile_:
        result["compile_mode"] = compile_mode or "default"
    if capture_alignment:
        result.update(capture_alignment=capture_alignment, compile_s_alignment=compile_s_alignment,
                      alignment_generated_kernels=generated_kernels)
    if capture_head:
        result.update(capture_head=capture_head, compile_s_head=compile_s_head,
                      head_generated_kernels=head_generated_kernels)

    def first_call_s(fn) -> float:  # tracing + compiling + one run
        return round(Timer(device)(fn, 1), 1)

    if not inference_only:
        model.train(), backbone.train()
        if compile_:
            result["compile_s_train_shapca"] = first_call_s(shapca_train)
            result["compile_s_train_backbone"] = first_call_s(backbone_train)
        train_times = paired(shapca_train, backbone_train, device, repeats, iterations)
        t_shapca_train, t_backbone_train = train_times["a"], train_times["b"]
        t_alignment = single(alignment_only, device, repeats, max(iterations, 20))
        # Counted eagerly: a compiled region cannot run under the counting dispatch mode; the
        # captured alignment's own count is inductor's `alignment_generated_kernels`.
        captured = model.shapca._captured_alignment if capture_alignment else None
        captured_head = getattr(model, "_captured_head", None)
        model.shapca._captured_alignment = model._captured_head = None
        counts = {name: count_dispatch(fn) for name, fn in (
            ("shapca", shapca_train), ("backbone", backbone_train), ("alignment", alignment_only))}
        model.shapca._captured_alignment, model._captured_head = captured, captured_head
        with autocast:
            shapca_bytes = saved_activation_bytes(lambda: model(**batch), model)
            backbone_bytes = saved_activation_bytes(lambda: backbone(**backbone_inputs, labels=word_labels), backbone)
        result.update({
            "shapca_train_samples_per_s": round(b / t_shapca_train, 2),
            "backbone_train_samples_per_s": round(b / t_backbone_train, 2),
            "train_throughput_ratio": round(train_times["ratio"], 3),
            "train_ratio_spread": [round(train_times["ratio_min"], 3), round(train_times["ratio_max"], 3)],
            "head_train_ms": round(1000 * (t_shapca_train - t_backbone_train), 3),
            "alignment_fraction_of_train_step": round(t_alignment / t_shapca_train, 4),
            "alignment_ms": round(1000 * t_alignment, 3),
            "head_train_kernels": counts["shapca"].kernels - counts["backbone"].kernels,
            "backbone_train_kernels": counts["backbone"].kernels,
            "alignment_kernels": counts["alignment"].kernels,
            "head_train_syncs": counts["shapca"].syncs - counts["backbone"].syncs,
            **({"cuda_sync_sites_train_shapca": cuda_sync_sites(shapca_train),
                "cuda_sync_sites_train_backbone": cuda_sync_sites(backbone_train)} if device.type == "cuda" else {}),
            "backbone_syncs": counts["backbone"].syncs,
            "head_activation_mb": round((shapca_bytes - backbone_bytes) / 2**20, 1),
            "backbone_activation_mb": round(backbone_bytes / 2**20, 1),
        })
    if train_only:
        result.update({"repeats": repeats, "torch": torch.__version__, "machine": platform.machine(),
                       "threads": torch.get_num_threads()})
        return result
    model.eval(), backbone.eval()
    if compile_:
        result["compile_s_infer_shapca"] = first_call_s(shapca_infer)
        result["compile_s_infer_backbone"] = first_call_s(backbone_infer)
    infer_times = paired(shapca_infer, backbone_infer, device, repeats, iterations)
    t_shapca_infer, t_backbone_infer = infer_times["a"], infer_times["b"]
    captured_head = getattr(model, "_captured_head", None)
    model._captured_head = None  # counted eagerly (a compiled region cannot run under the counting mode)
    counts = {name: count_dispatch(fn) for name, fn in (("shapca", shapca_infer), ("backbone", backbone_infer))}
    model._captured_head = captured_head
    result.update({
        "shapca_infer_samples_per_s": round(b / t_shapca_infer, 2),
        "backbone_infer_samples_per_s": round(b / t_backbone_infer, 2),
        "inference_throughput_ratio": round(infer_times["ratio"], 3),
        "inference_ratio_spread": [round(infer_times["ratio_min"], 3), round(infer_times["ratio_max"], 3)],
        "head_infer_ms": round(1000 * (t_shapca_infer - t_backbone_infer), 3),
        "repeats": repeats,
        "head_infer_kernels": counts["shapca"].kernels - counts["backbone"].kernels,
        "backbone_infer_kernels": counts["backbone"].kernels,
        "head_infer_syncs": counts["shapca"].syncs - counts["backbone"].syncs,
        **({"cuda_sync_sites_infer_shapca": cuda_sync_sites(shapca_infer),
            "cuda_sync_sites_infer_backbone": cuda_sync_sites(backbone_infer)} if device.type == "cuda" else {}),
        "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
    })
    if profile:
        parts = [("Shap-CA inference", shapca_infer, False), ("backbones only, inference", backbone_infer, False)]
        if not inference_only:
            parts.append(("Shap-CA train step", shapca_train, True))
        tables = []
        for title, fn, training in parts:
            model.train(training)
            tables.append(f"# {setting_name} {head} batch {b} bf16={bf16}: {title}\n{profile_table(fn, device)}")
        with open(profile, "a", encoding="utf-8") as handle:
            handle.write("\n".join(tables) + "\n")
        result["profile"] = profile
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="minilm")
    parser.add_argument("--head", choices=["ner", "mre", "mjere"], default="ner")
    parser.add_argument("--batch", type=int, help="override the setting's batch size")
    parser.add_argument("--words", type=int, help="override the setting's words per sentence (grows seq to fit)")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--inference_only", action="store_true", help="skip the train-step measurements")
    parser.add_argument("--train_only", action="store_true", help="skip the inference measurements")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile_mode", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode (reduce-overhead: CUDA graphs, the captured inference path)")
    parser.add_argument("--capture_alignment", choices=["default", "reduce-overhead", "aot_eager"],
                        help="run the alignment as its compiled region (train.py --capture_alignment)")
    parser.add_argument("--capture_head", choices=["default", "reduce-overhead", "aot_eager"],
                        help="NER: run the fusion, classifier and CRF as their compiled region (train.py --capture_head)")
    parser.add_argument("--profile", help="append torch.profiler tables (Shap-CA and backbones) to this file")
    parser.add_argument("--iterations", type=int, default=3, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=7, help="alternating Shap-CA / backbone repeats (median, spread)")
    args = parser.parse_args(argv)
    overrides = {}
    if args.batch:
        overrides["batch"] = args.batch
    if args.words:  # two subwords per word plus [CLS] [SEP] [SEP] and a context
        overrides.update(words=args.words, seq=max(SETTINGS[args.setting]["seq"], 2 * args.words + 3 + 16))
    result = run(args.setting, args.device, args.bf16, args.compile, args.iterations, args.repeats, head=args.head,
                 gradient_checkpointing=args.gradient_checkpointing, inference_only=args.inference_only,
                 overrides=overrides, compile_mode=None if args.compile_mode == "default" else args.compile_mode,
                 profile=args.profile, capture_alignment=args.capture_alignment, train_only=args.train_only,
                 capture_head=args.capture_head)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
