"""Measuring models: parameter counts, MACs, latency, and per-layer sparsity.

Every function reads weights as the model uses them: a parametrized (masked) weight is measured
through its parametrization, and parameters owned by parametrizations (mask scores) are not counted.
"""

from secateurs.metrics.counting import count_nonzero_params, count_params
from secateurs.metrics.flops import LayerMacs, MacReport, count_macs
from secateurs.metrics.latency import LatencyResult, measure_latency
from secateurs.metrics.layers import layer_table, render_layer_table

__all__ = [
    "LatencyResult",
    "LayerMacs",
    "MacReport",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "layer_table",
    "measure_latency",
    "render_layer_table",
]
