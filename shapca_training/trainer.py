"""The Trainer subclass: Shap-CA parameter groups, separate loss logging, decoded predictions, the
alignment's retrieval in evaluation (`alignment_eval.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer
from modeling_shapca.grids import IGNORE_INDEX

from .alignment_eval import AlignmentCollector

_VALID_ANCHORS = "_shapley_valid_anchors"


def parameter_groups(model, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """Encoder parameters (text and vision backbones) at `encoder_lr`, the rest at `head_lr`;
    no weight decay on biases and norms."""
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_encoder = ".text_model." in f".{name}" or ".vision_model." in f".{name}"
        no_decay = param.ndim < 2 or "norm" in name.lower()
        key = ("encoder" if is_encoder else "head", no_decay)
        group = groups.setdefault(key, {
            "params": [], "lr": encoder_lr if is_encoder else head_lr,
            "weight_decay": 0.0 if no_decay else weight_decay, "name": f"{key[0]}{'-no_decay' if no_decay else ''}",
        })
        group["params"].append(param)
    return list(groups.values())


class ShapCATrainer(Trainer):
    """Trainer with Shap-CA parameter groups, the three losses logged separately, and decoded
    predictions (tags, or word-pair grids padded to `grid_size` so batches concatenate)."""

    def __init__(self, *args, head_learning_rate: float = 3e-4, grid_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate
        self.grid_size = grid_size
        self._loss_parts: dict[str, list[torch.Tensor]] = {}
        self._last_games = None

    def create_optimizer(self, model=None):
        """The optimizer `--optim` names (with `--optim_args`), over Shap-CA's two learning-rate
        groups. Optimizers that choose their own parameter groups (GaLore, APOLLO, LOMO, ...)
        cannot take them and are refused."""
        if self.optimizer is None:
            optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)) \
                    or "optimizer_dict" in kwargs or "optim_target_modules" in kwargs:
                raise ValueError(f"--optim {self.args.optim} chooses its own parameter groups; Shap-CA trains the "
                                 "encoders and the head at two learning rates: use an optimizer such as adamw_torch, "
                                 "adafactor or sgd")
            kwargs.pop("lr", None)  # each group carries its own
            groups = parameter_groups(self.model, self.args.learning_rate, self.head_learning_rate, self.args.weight_decay)
            self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name in ("main_loss", "semantic_loss", "modality_loss"):
                value = getattr(outputs, name)
                if value is not None:
                    self._loss_parts.setdefault(name, []).append(value.detach())
            # the step's Shapley games, summarised only when a log is written (no work per step)
            self._last_games = getattr(outputs, "shapley_games", None)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._loss_parts:  # a training log: the three losses and the games' Shapley values
            # every rank logs at the same step, so the mean over all ranks is one collective
            parts = {name: torch.stack(values).float().mean() for name, values in self._loss_parts.items()}
            if self._last_games is not None:  # the last step's games (Shapley values of matching and other players)
                parts.update({name: value.float() for name, value in self._last_games.values().items()})
                parts[_VALID_ANCHORS] = self._last_games.valid_anchors()
            means = self.accelerator.reduce(torch.stack(list(parts.values())).to(self.args.device), reduction="mean")
            reduced = dict(zip(parts, means.tolist()))
            if not reduced.pop(_VALID_ANCHORS, 1.0):
                # no rank's games had a player (no image or context in the batch): the values are all 0
                reduced = {name: value for name, value in reduced.items() if not name.startswith("shapley/")}
            for name, value in reduced.items():
                logs[name] = round(value, 4)
            self._loss_parts, self._last_games = {}, None
        super().log(logs, *args, **kwargs)

    def _pad_grid(self, grid: torch.Tensor) -> torch.Tensor:
        n = grid.shape[-1]
        return F.pad(grid, (0, self.grid_size - n, 0, self.grid_size - n), value=IGNORE_INDEX)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """The Trainer's evaluation, plus the alignment's retrieval and Shapley gap when the split
        has contexts (`alignment_eval.py`: `<prefix>_alignment_semantic_r1_c2t`, ...)."""
        self._alignment = AlignmentCollector()
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            alignment = self._alignment.metrics()
        finally:
            self._alignment = None
        output.metrics.update({f"{metric_key_prefix}_alignment_{name}": value for name, value in alignment.items()})
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs)
        if getattr(self, "_alignment", None) is not None:
            self._alignment.add(outputs, inputs, self.accelerator.gather_for_metrics)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        if self.model.config.is_word_pair:
            return loss, self._pad_grid(outputs.predictions), self._pad_grid(inputs["labels"])
        return loss, outputs.predictions, inputs.get("labels")
