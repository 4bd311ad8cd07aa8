"""Parameters and MACs of the model ``secateurs shrink`` delivers when units lose given filter counts.

The same accounting as :func:`secateurs.structured.predict_shrunk_size` (every tensor dimension of a
group shrinks by the positions of its removed channels; convolution and linear MACs scale with their
weight's size), but from channel *counts*, with the MAC count of the dense model taken once: the
level-1 search evaluates it dozens of times. The tests hold it equal to ``predict_shrunk_size``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch import nn

from secateurs.analysis.singularity.units import AnalysisUnit
from secateurs.core.parametrize import original_name
from secateurs.metrics import count_macs

__all__ = ["ShrunkSize"]


class ShrunkSize:
    """Counts of the shrunk model as a function of the channels each unit removes.

    Args:
        model: The model (parametrized or not; only shapes and the MACs of one pass are read).
        units: The analysis units.
        example_input: One input (batch 1 gives per-image MACs).
    """

    def __init__(self, model: nn.Module, units: Sequence[AnalysisUnit], example_input: Any) -> None:
        self.units = list(units)
        self.shapes = {n: tuple(p.shape) for pn, p in model.named_parameters() if (n := original_name(pn)) is not None}
        self.params_dense = sum(math.prod(s) for s in self.shapes.values())
        was_training = model.training
        model.eval()
        try:
            macs = count_macs(model, example_input)
        finally:
            model.train(was_training)
        self.macs_dense = macs.dense
        self.layer_macs = [(f"{layer.name}.weight" if layer.name else "weight", layer.dense)
                           for layer in macs.per_layer]
        # (unit, param, dim, positions per channel) for every member of every unit.
        self.members = [
            (u, m.param, m.dim, len(m.index) // unit.channels)
            for u, unit in enumerate(self.units) for m in unit.group.members if m.param in self.shapes
        ]

    def counts(self, removed: Sequence[int]) -> tuple[int, int]:
        """``(params, MACs)`` after removing ``removed[u]`` channels of unit ``u``."""
        cut: dict[tuple[str, int], int] = defaultdict(int)
        for u, param, dim, per in self.members:
            cut[(param, dim)] += removed[u] * per
        numel = dict.fromkeys(self.shapes, 0)
        for name, shape in self.shapes.items():
            new = list(shape)
            for dim in range(len(new)):
                new[dim] -= cut.get((name, dim), 0)
            numel[name] = math.prod(new)
        params = sum(numel.values())
        macs = self.macs_dense
        for weight, dense in self.layer_macs:
            old = math.prod(self.shapes[weight]) if weight in self.shapes else 0
            if old:
                macs += dense * numel[weight] // old - dense
        return params, macs
