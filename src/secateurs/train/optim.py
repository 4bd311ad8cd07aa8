"""Optimizers with the right parameter groups, and learning rates as pure functions of the step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from secateurs.core.weight_groups import decay_split, weight_groups
from secateurs.methods.base import PruningMethod
from secateurs.train.config import TrainConfig

__all__ = ["build_optimizer", "decay_split", "lr_factor"]  # decay_split: re-exported, it lived here


def build_optimizer(model: nn.Module, config: TrainConfig, method: PruningMethod | None = None) -> torch.optim.Optimizer:
    """An optimizer over the model's weights plus the method's mask parameters.

    Learned mask state (scores, logits) lives inside parametrizations; it gets its own groups from
    the method, without weight decay (decaying scores towards 0 would bias the masks). Biases and
    normalisation parameters are decayed only when ``config.decay_bias_norm`` says so.
    """
    if method is not None:
        groups = method.param_groups(model, weight_decay=config.weight_decay, decay_bias_norm=config.decay_bias_norm)
    else:
        groups = weight_groups(model, config.weight_decay, decay_bias_norm=config.decay_bias_norm)
    for g in groups:
        g.setdefault("lr", config.lr)
        g["base_lr"] = g["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


def lr_factor(config: TrainConfig, steps_in_phase: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of each group's base learning rate after ``step`` steps of the current phase."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    total = max(steps_in_phase, 1)

    def after_warmup(step: int) -> float:
        t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
        if config.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if config.lr_schedule == "step":
            return 0.1 ** (int(t >= 0.5) + int(t >= 0.75))
        if config.lr_schedule == "onecycle":
            # Ramp up for the first 30 %, then cosine down to almost zero (Smith's one-cycle shape).
            return 0.04 + 0.96 * t / 0.3 if t < 0.3 else 0.5 * (1.0 + math.cos(math.pi * (t - 0.3) / 0.7))
        return 1.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return after_warmup(step)

    return factor
