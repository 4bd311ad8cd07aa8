"""``report.json``: the numbers a user compares runs by, with sparsity counted two ways.

``achieved_sparsity`` is measured over the pruned tensors from their masks (structural), while
``params_nonzero`` and ``macs_effective`` count what is non-zero in the whole model, so weights
that happen to be zero and layers that were not pruned are visible too. Filter-pruned runs also
get ``params_shrunk`` and ``macs_shrunk``: the size ``secateurs shrink`` will deliver.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.experiment.config import RunConfig
from secateurs.metrics import count_macs, count_nonzero_params, count_params, layer_table, measure_latency

__all__ = ["build_report"]

if TYPE_CHECKING:
    from secateurs.structured.groups import ChannelGroup

log = logging.getLogger(__name__)


def build_report(
    config: RunConfig,
    model: nn.Module,
    *,
    example_input: torch.Tensor,
    masks: MaskSet | None,
    accuracy: float | None,
    dense_accuracy: float | None,
    train_seconds: float,
    channel_groups: list[ChannelGroup] | None = None,
) -> dict[str, Any]:
    """Measure ``model`` (masks already baked in) and assemble the report dictionary.

    ``channel_groups``, when the run traced them, spare a second trace for the shrunk size.
    """
    macs = count_macs(model, example_input)
    latency = measure_latency(model, example_input, min_run_time=0.2)
    method_config = config.method_config() if config.method else None
    names = list(masks) if masks is not None else None
    layers = layer_table(model, names)
    if masks is not None:
        for row in layers:
            entry = masks[row["name"]]
            row["granularity"] = str(entry.granularity)
            row["mask_sparsity"] = entry.sparsity
    report = {
        "method": config.method or "dense",
        "model": config.model,
        "dataset": config.data,
        "granularity": str(method_config.granularity) if method_config else None,
        "scope": method_config.scope if method_config else None,
        "target_sparsity": method_config.sparsity if method_config else 0.0,
        "achieved_sparsity": masks.sparsity() if masks is not None else 0.0,
        "params_total": count_params(model),
        "params_nonzero": count_nonzero_params(model),
        "macs_dense": macs.dense,
        "macs_effective": macs.effective,
        "accuracy": accuracy,
        "dense_accuracy": dense_accuracy,
        "epochs": config.train.epochs,
        "train_seconds": train_seconds,
        "latency_ms_batch1": latency.median_ms,
        "latency_device": str(latency.device),
        "seed": config.seed,
        "method_options": method_config.to_dict() if method_config else {},
        "layers": layers,
    }
    report.update(_shrunk_size(model, masks, example_input, channel_groups, round_to=config.round_to))
    return report


def _shrunk_size(model: nn.Module, masks: MaskSet | None, example_input: torch.Tensor,
                 groups: list[ChannelGroup] | None, *, round_to: int = 1) -> dict[str, Any]:
    """For filter masks: what ``secateurs shrink`` (at the run's ``round_to``) will leave (effective MACs count only the zero
    filters, not the input channels of the next layer that removal also takes away).

    The shrink itself is run (and thrown away), so that groups it refuses (their removal would break
    the model or its outputs) are counted as kept: the numbers are the ones ``secateurs shrink``
    delivers, not only the plan's."""
    if masks is None or not len(masks) or not all(isinstance(e.granularity, Filter) for e in masks.values()):
        return {}
    from torch.nn.utils import parametrize

    from secateurs.errors import SecateursError
    from secateurs.structured import predict_from_masks, shrink

    refused: dict[str, str] = {}
    try:
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            size = predict_from_masks(model, masks, example_input, groups=groups, round_to=round_to)
        else:
            result = shrink(model, masks, example_input, groups=groups, round_to=round_to)
            size, refused = result.prediction, result.refused
    except SecateursError as exc:
        log.warning("no shrunk size in the report: %s", exc)
        return {}
    out: dict[str, Any] = {"params_shrunk": size.params_after, "macs_shrunk": size.macs_after, "round_to": round_to}
    if refused:
        out["shrink_refused_groups"] = sorted(refused)
    return out
