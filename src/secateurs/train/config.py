"""Training settings shared by ``train``, ``prune`` and the benchmarks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from secateurs.errors import UsageError
from secateurs.train.speed import COMPILE_MODES

__all__ = ["OPTIMIZERS", "LR_SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("cosine", "step", "onecycle", "constant")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train (one phase's learning-rate schedule restarts with each phase of a method).

    Defaults are the usual CIFAR-style recipe: SGD with Nesterov momentum 0.9, lr 0.1, weight decay
    5e-4, cosine decay; ``warmup_epochs`` adds a linear warm-up at the start of each phase (worth it for
    networks without batch norm such as LeNet-5, for which lr 0.1 sits at the edge of stability).
    """

    epochs: int = field(default=10, metadata={"help": "total epoch budget of the run"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    optimizer: str = field(default="sgd", metadata={"help": "sgd (Nesterov), adam or adamw"})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay (never on mask parameters)"})
    decay_bias_norm: bool = field(default=True, metadata={
        "help": "decay biases and normalisation parameters too (false: only weight matrices and kernels)"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine, step, onecycle or constant"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up at the start of each phase"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    amp: bool = field(default=True, metadata={"help": "bfloat16 autocast on CUDA (ignored on CPU)"})
    grad_clip: float = field(default=0.0, metadata={"help": "max gradient norm, 0 = off"})
    compile: str = field(default="off", metadata={"help": "torch.compile: off, default, reduce-overhead or max-autotune"})
    channels_last: bool = field(default=False, metadata={"help": "channels-last (NHWC) weights and inputs"})
    bn_recalibration: int | None = field(default=None, metadata={
        "help": "batches to re-estimate batch-norm statistics with the final masks; 0 = off, "
                "unset = 100 for methods that train with sampled masks (dpp, gibbs), else off"})

    def __post_init__(self) -> None:
        for f in fields(self):  # NaN passes every comparison below, and an infinite lr diverges at once
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{f.name} must be a finite number, got {value}")
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"unknown lr_schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError("label_smoothing must lie in [0, 1)")
        if self.bn_recalibration is not None and (isinstance(self.bn_recalibration, bool)
                                                  or not isinstance(self.bn_recalibration, int)
                                                  or self.bn_recalibration < 0):
            raise UsageError(f"bn_recalibration must be a number of batches >= 0, got {self.bn_recalibration!r}")
        if not isinstance(self.decay_bias_norm, bool):
            raise UsageError(f"decay_bias_norm must be true or false, got {self.decay_bias_norm!r}")
        if self.compile not in COMPILE_MODES:
            raise UsageError(f"unknown compile mode {self.compile!r}; known: {', '.join(COMPILE_MODES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML."""
        return asdict(self)
