"""A benchmark cell's MACs target: build the cell's model, then ask the solver in :mod:`secateurs.allocation`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from secateurs.allocation import MacsSplit
from secateurs.allocation import measure_macs_split as _measure
from secateurs.allocation import sparsity_for_shrunk_macs as _shrunk
from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.models import build_model

__all__ = ["measure_macs_split", "sparsity_for_shrunk_macs"]


def _fresh_model(config: RunConfig) -> tuple[nn.Module, Tensor]:
    """``config``'s freshly built model for its dataset, and an example input of batch size 1."""
    data = build_data(config.data, data_dir=config.data_dir, limit_train=config.limit_train,
                      limit_test=config.limit_test, augment=False, seed=config.seed)
    model = build_model(config.model, in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    return model, torch.zeros(1, *data.input_shape)


def measure_macs_split(config: RunConfig) -> MacsSplit:
    """Build ``config``'s model for its dataset and count the MACs of its pruned layers."""
    model, example = _fresh_model(config)
    return _measure(model, config.select_targets(model), example)


def sparsity_for_shrunk_macs(config: RunConfig, fraction: float) -> tuple[float, int]:
    """The per-group filter sparsity of ``config``'s model whose shrunk model keeps ``fraction`` of the
    dense MACs, and the ``round_to`` it holds with: the run's, or 1 (exact channel counts) when rounded
    widths cannot get that low (small models)."""
    model, example = _fresh_model(config)
    targets = config.select_targets(model)
    scope = config.method_config().scope
    if config.round_to > 1:
        try:
            return _shrunk(model, targets, example, fraction, scope=scope, model_name=config.model,
                           round_to=config.round_to), config.round_to
        except UsageError:
            pass  # exact counts may still reach it (the error below says so when they do not)
    return _shrunk(model, targets, example, fraction, scope=scope, model_name=config.model), 1
