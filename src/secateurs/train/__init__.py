"""Training: the one loop (:func:`fit`), its configuration, checkpoints and evaluation."""

from secateurs.train.config import TrainConfig
from secateurs.train.evaluate import evaluate
from secateurs.train.loop import Callback, FitResult, Replica, fit, fit_replicas

__all__ = ["Callback", "FitResult", "Replica", "TrainConfig", "evaluate", "fit", "fit_replicas"]
