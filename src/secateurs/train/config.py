"""Training settings shared by ``train``, ``prune`` and the benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from secateurs.config_validation import validate_fields
from secateurs.train.speed import COMPILE_MODES

__all__ = ["OPTIMIZERS", "LR_SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("cosine", "step", "onecycle", "constant")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train (one phase's learning-rate schedule restarts with each phase of a method).

    Defaults are the usual CIFAR-style recipe: SGD with Nesterov momentum 0.9, lr 0.1, weight decay
    5e-4 on weight matrices and kernels (not on biases and normalisation parameters), cosine decay; ``warmup_epochs`` adds a linear warm-up at the start of each phase (worth it for
    networks without batch norm such as LeNet-5, for which lr 0.1 sits at the edge of stability).
    """

    epochs: int = field(default=10, metadata={"help": "total epoch budget of the run", "ge": 1})
    batch_size: int = field(default=128, metadata={"help": "training batch size", "ge": 1})
    optimizer: str = field(default="sgd", metadata={"help": "sgd (Nesterov), adam or adamw", "choices": OPTIMIZERS})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate", "gt": 0.0})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "ge": 0.0, "lt": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay (never on mask parameters)", "ge": 0.0})
    decay_bias_norm: bool = field(default=False, metadata={
        "help": "decay biases and normalisation parameters too (default false: only weight matrices and "
                "kernels, the better of the two on LeNet-5/gmp 95 %, see docs/results.md)"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine, step, onecycle or constant",
                                                          "choices": LR_SCHEDULES})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up at the start of each phase", "ge": 0.0})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing", "ge": 0.0, "lt": 1.0})
    amp: bool = field(default=True, metadata={"help": "bfloat16 autocast on CUDA (ignored on CPU)"})
    grad_clip: float = field(default=0.0, metadata={"help": "max gradient norm, 0 = off", "ge": 0.0})
    compile: str = field(default="off", metadata={"help": "torch.compile: off, default, reduce-overhead or max-autotune",
                                                  "choices": COMPILE_MODES})
    channels_last: bool = field(default=False, metadata={"help": "channels-last (NHWC) weights and inputs"})
    bn_recalibration: int | None = field(default=None, metadata={
        "help": "batches to re-estimate batch-norm statistics with the final masks; 0 = off, "
                "unset = 100 for methods that train with sampled masks (dpp, gibbs), else off", "ge": 0})

    def __post_init__(self) -> None:
        # Types, ranges and choices come from the fields' metadata; cross-field rules would follow here.
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML."""
        return asdict(self)
