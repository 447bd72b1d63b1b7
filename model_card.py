"""Render `model_card.md` (Jinja) from a trained model folder and its `results.json`, and
plot the training curves (loss and validation F1 per epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parent
TEMPLATE = ROOT / "model_card.md"
DATASET_NAMES = {"twitter2015": "Twitter-2015", "twitter2017": "Twitter-2017", "mnre": "MNRE", "mjere": "MJERE"}
# Paper Table 1 (Shap-CA, BERT-base + ResNet-152 + LLaVA-1.5 contexts).
PAPER_F1 = {"twitter2015": 76.93, "twitter2017": 88.32, "mnre": 67.94, "mjere": 55.95}
PAPER_BACKBONES = ("bert-base", "resnet-152")
TASK_TEXT = {
    "ner": dict(pipeline_tag="token-classification", task_tag="named-entity-recognition",
                task_name="Multimodal named entity recognition", metric_name="entity F1 (conlleval)", head="MLP + CRF",
                usage='model.predict("Kevin Durant enters Oracle Arena", images=["tweet.jpg"], contexts=["A basketball player ..."])\n'
                      "# [{'text': 'Kevin Durant', 'label': 'PER', 'start': 0, 'end': 12}, ...]"),
    "mre": dict(pipeline_tag="token-classification", task_tag="relation-extraction",
                task_name="Multimodal relation extraction", metric_name="micro F1 without None", head="word-pair contrastive layer",
                usage='model.predict("Kevin Durant joins the Warriors", pairs=[((0, 2), (4, 5))], images=["tweet.jpg"])\n'
                      "# [{'head': {'text': 'Kevin Durant', ...}, 'tail': {'text': 'Warriors', ...}, 'label': '/per/org/member_of'}]"),
    "mjere": dict(pipeline_tag="token-classification", task_tag="joint-entity-relation-extraction",
                  task_name="Multimodal joint entity-relation extraction", metric_name="triple F1 (MJERE_j)",
                  head="word-pair contrastive layer",
                  usage='model.predict("Kevin Durant joins the Warriors", images=["tweet.jpg"])\n'
                        "# {'entities': [{'text': 'Kevin Durant', 'label': 'per', ...}], 'relations': [...]}"),
}
TASK_OF_DATASET = {"twitter2015": "ner", "twitter2017": "ner", "mnre": "mre", "mjere": "mjere"}
HYPERPARAMETERS = (
    "learning_rate", "head_learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps",
    "lr_scheduler_type", "weight_decay", "seed", "alpha", "beta", "tau", "early_stopping_patience",
)


def plot_training_curves(log_history: list[dict], path: Path) -> Path | None:
    """Training loss per logging step and validation F1 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]
    evals = [(e["epoch"], e["eval_f1"]) for e in log_history if "eval_f1" in e]
    if not train and not evals:
        return None
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    if train:
        loss_ax.plot(*zip(*train), color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss", color="tab:blue")
    if evals:
        f1_ax = loss_ax.twinx()
        f1_ax.plot(*zip(*evals), color="tab:red", marker="o", label="validation F1")
        f1_ax.set_ylabel("validation F1", color="tab:red")
    fig.suptitle("Shap-CA training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_card(model_dir: str | Path, repo_id: str | None = None, results: dict | None = None) -> str:
    """The filled card for the model in `model_dir` (writes `training_curves.png` there)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if results is None:
        path = model_dir / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the card is filled from what training measured")
        results = json.loads(path.read_text())
    dataset = results.get("dataset", "unknown")
    text_model = results.get("text_model") or config["text_config"].get("_name_or_path") or config["text_config"]["model_type"]
    vision_model = results.get("vision_model") or config["vision_config"].get("model_type")
    plot = plot_training_curves(results.get("log_history", []), model_dir / "training_curves.png")
    same_setting = all(b in f"{text_model} {vision_model}".lower() for b in PAPER_BACKBONES)
    test, validation = results["test"], results["validation"]
    context = {
        "model_name": repo_id.split("/")[-1] if repo_id else f"shapca-{dataset}",
        "repo_id": repo_id or str(model_dir),
        "dataset": dataset,
        "dataset_name": DATASET_NAMES.get(dataset, dataset),
        "text_model": text_model,
        "text_layers": config["text_config"].get("num_hidden_layers"),
        "text_hidden": config["text_config"].get("hidden_size"),
        "vision_model": vision_model,
        "alignment": config["alignment"],
        "context_in_alignment": config["context_in_alignment"],
        "fusion": config["fusion"],
        "tau": config["tau"],
        "image_region_grid": config.get("image_region_grid"),
        "labels": [config["id2label"][str(i)] for i in range(len(config["id2label"]))],
        "metric_module": results.get("metric", {}).get("module", ""),
        **TASK_TEXT[TASK_OF_DATASET.get(dataset, "ner")],
        "test_f1": test["test_f1"], "test_precision": test["test_precision"], "test_recall": test["test_recall"],
        "validation_f1": validation["validation_f1"], "validation_precision": validation["validation_precision"],
        "validation_recall": validation["validation_recall"],
        "paper_f1": f"{PAPER_F1[dataset]:.2f}" if same_setting and dataset in PAPER_F1 else "n/a (other backbones)",
        "per_type": {k[len("test_f1_"):]: v for k, v in test.items() if k.startswith("test_f1_")},
        "plot": plot.name if plot else None,
        "hyperparameters": {k: results.get("hyperparameters", {}).get(k) for k in HYPERPARAMETERS
                            if k in results.get("hyperparameters", {})},
        "limits": results.get("limits", ""),
    }
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(TEMPLATE.read_text()).render(**context)
