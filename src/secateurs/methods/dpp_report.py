"""What DPP logs, writes and reports: per-epoch information metrics, plots, integer export, sizes.

- every epoch, :func:`epoch_metrics` returns flat keys ``dpp/<metric>/<layer>`` and
  ``dpp/<metric>/mean`` (see :mod:`secateurs.metrics.mask_information` for the definitions) plus
  ``dpp/temperature``; the loop writes them into ``metrics.jsonl``;
- at the end, :func:`write_artifacts` writes ``dpp_kofn.safetensors`` (integer or float values, scales
  and the k-of-n indices of every pruned layer) and one PNG per layer into ``dpp_plots/``;
- :func:`report_fields` gives the sizes in bytes (bit-packed values + indices, other parameters
  fp32) against dense fp32, and per-layer k, n and the final metrics for ``report.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from secateurs.core.targets import Target
from secateurs.methods.base import Horizon
from secateurs.methods.dpp_layers import DPPMask
from secateurs.metrics.mask_information import (
    METRIC_NAMES,
    inclusion_confidence,
    inclusion_probabilities,
    information_metrics,
    plot_layer_metrics,
)
from secateurs.quant.integer_export import LayerExport, export_layer, save_export

__all__ = ["EXPORT_FILE", "PLOT_DIR", "DPPRun", "build_exports", "epoch_metrics", "report_fields", "write_artifacts"]

log = logging.getLogger(__name__)

EXPORT_FILE = "dpp_kofn.safetensors"
PLOT_DIR = "dpp_plots"
#: Metrics on the unit interval, drawn in the plots.
PLOTTED = ("confidence", "diversity", "mutual_information", "inclusion_confidence")


class DPPRun(Protocol):
    """What this module reads of an attached DPP method (``secateurs.methods.dpp``, which imports this
    module: a protocol keeps the import one way)."""

    config: Any
    generator: torch.Generator
    history: dict[str, list[float]]
    targets: list[Target]
    horizon: Horizon

    def layers(self) -> Iterator[tuple[str, DPPMask, Tensor]]: ...
    def layer_names(self) -> list[str]: ...
    def cache_exports(self, exports: dict[str, Any]) -> None: ...
    def cached_exports(self) -> dict[str, Any] | None: ...
    def non_target_parameter_count(self) -> int: ...


def _metric_generator(method: DPPRun, epoch: int) -> torch.Generator:
    # A private stream per epoch: the metrics never consume the training randomness.
    device = method.generator.device
    return torch.Generator(device=device).manual_seed(method.config.seed * 1_000_003 + 7919 * (epoch + 1))


@torch.no_grad()
def layer_metrics(method: DPPRun, epoch: int) -> dict[str, dict[str, float]]:
    """Layer name -> the metrics of :data:`METRIC_NAMES` in the current state."""
    gen = _metric_generator(method, epoch)
    out = {}
    for name, mask, _ in method.layers():
        info = information_metrics(mask.logits, mask.k)
        q = inclusion_probabilities(mask.logits, mask.k, mask.noise_scale, method.config.metric_samples, generator=gen)
        info["inclusion_confidence"] = inclusion_confidence(q, mask.k)
        out[name] = info
    return out


def epoch_metrics(method: DPPRun, epoch: int) -> dict[str, float]:
    """Flat ``dpp/<metric>/<layer>`` values (and layer means) for ``metrics.jsonl``."""
    per_layer = layer_metrics(method, epoch)
    logs: dict[str, float] = {}
    masks = [m for _, m, _ in method.layers()]
    if masks:
        logs["dpp/temperature"] = float(masks[0].temperature)
    for metric in METRIC_NAMES:
        values = [info[metric] for info in per_layer.values()]
        for name, info in per_layer.items():
            logs[f"dpp/{metric}/{name}"] = info[metric]
        if values:
            logs[f"dpp/{metric}/mean"] = sum(values) / len(values)
    return logs


@torch.no_grad()
def build_exports(method: DPPRun) -> dict[str, LayerExport]:
    """The k-of-n export of every pruned layer in the current (evaluation) state."""
    cfg = method.config
    exports = {}
    for name, mask, weight in method.layers():
        grouping = mask.grouping
        meta = {"granularity": str(cfg.granularity), "weight_groups": cfg.weight_groups, "tile": cfg.tile}
        exports[name] = export_layer(name, mask.masked_weight(weight), grouping.unit_ids(weight.device),
                                     mask.grouped_hard() > 0.5, mask.quant, meta)
    return exports


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_artifacts(method: DPPRun, run_dir: Path) -> list[Path]:
    """Write the export and the per-layer metric plots into ``run_dir``; return the paths."""
    exports = build_exports(method)
    method.cache_exports(exports)
    paths = [save_export(exports, run_dir / EXPORT_FILE)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed: DPP metric plots are skipped (pip install matplotlib)")
        return paths
    history = method.history
    epochs = history.get("epoch")
    gen = _metric_generator(method, -1)
    series_names = [*method.layer_names(), "mean"]
    masks = {name: mask for name, mask, _ in method.layers()}
    for layer in series_names:
        series = {m: history[f"dpp/{m}/{layer}"] for m in PLOTTED if f"dpp/{m}/{layer}" in history}
        if not series:
            continue
        q = None
        if layer in masks:
            mask = masks[layer]
            q = inclusion_probabilities(mask.logits, mask.k, mask.noise_scale, method.config.metric_samples,
                                        generator=gen)
        xs = epochs if epochs is not None and len(epochs) == len(next(iter(series.values()))) else None
        paths.append(plot_layer_metrics(layer, series, run_dir / PLOT_DIR / f"{_file_stem(layer)}.png", q, xs))
    return paths


def report_fields(method: DPPRun) -> dict[str, Any]:
    """Sizes in bytes, quantization and per-layer k-of-n facts and final metrics for ``report.json``."""
    exports = method.cached_exports() or build_exports(method)
    other = 4 * method.non_target_parameter_count()
    pruned_bytes = sum(e.size_bytes for e in exports.values())
    pruned_dense = sum(4 * t.shape.numel() for t in method.targets)
    size, dense = pruned_bytes + other, pruned_dense + other
    final = layer_metrics(method, method.horizon.epochs)
    layers = {}
    for name, mask, _ in method.layers():
        kept = mask.grouped_hard().sum(1)
        layers[name] = {
            "groups": mask.grouping.groups, "n": mask.grouping.n, "k": mask.k,
            "exactly_k": bool((kept == mask.k).all()), "size_bytes": exports[name].size_bytes,
            **{m: final[name][m] for m in PLOTTED},
        }
    return {
        "size_bytes": size,
        "size_bytes_dense_fp32": dense,
        "compression_ratio": dense / size if size else None,
        "size_bytes_pruned_layers": pruned_bytes,
        "size_bytes_pruned_layers_dense_fp32": pruned_dense,
        "quant_bits": method.config.quant_bits,
        "dpp_layers": layers,
    }
