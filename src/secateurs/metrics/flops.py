"""Multiply-accumulates of a forward pass: dense, and effective (skipping zero weights).

Counting happens at the dispatcher level with :class:`torch.utils.flop_counter.FlopCounterMode`, so
functional matmuls and attention count too, not only modules with hooks. MACs are FLOPs / 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from secateurs.metrics.effective_tensors import effective_tensor, eval_mode, is_conv_or_linear

__all__ = ["LayerMacs", "MacReport", "count_macs"]


@dataclass(frozen=True)
class LayerMacs:
    """MACs of one convolution or linear layer.

    Attributes:
        name: Module name, e.g. ``"layer1.0.conv1"``.
        kind: Module class name, e.g. ``"Conv2d"``.
        dense: MACs with every weight counted.
        effective: ``dense`` times the fraction of non-zero weights.
        density: Fraction of non-zero elements of the effective weight.
    """

    name: str
    kind: str
    dense: int
    effective: int
    density: float


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass.

    Attributes:
        dense: MACs of the model as it runs (every op FlopCounterMode counts).
        effective: MACs when the zero weights of conv/linear layers are skipped; other ops
            (attention, functional matmuls outside such layers) count as in ``dense``.
        per_layer: One entry per conv/linear module that ran, in module order.
    """

    dense: int
    effective: int
    per_layer: list[LayerMacs] = field(default_factory=list)


def _total(counts: dict[Any, int] | None) -> int:
    return sum(counts.values()) if counts else 0


def _tracker_key(root: nn.Module, fqn: str) -> str:
    # FlopCounterMode's module tracker names modules "<RootClass>.<fqn>", the root "<RootClass>".
    root_name = type(root).__name__
    return f"{root_name}.{fqn}" if fqn else root_name


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad while counting, restored after.

    FlopCounterMode's module tracker hooks the backward of every module input that requires grad;
    under no_grad a parameter passed straight into a submodule (PiT's class token in a tuple, CaiT's)
    still does, has no gradient function, and the tracker fails on it.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def count_macs(model: nn.Module, example_input: torch.Tensor | tuple[Any, ...]) -> MacReport:
    """Counts the MACs of one forward pass of ``model`` on ``example_input``.

    Runs in eval mode without gradients and restores the model's modes afterwards. Parametrized
    (masked) weights go through their parametrization, and their density is measured on the
    parametrized value; the parametrization's own ops are not counted as the layer's.

    Args:
        model: The model.
        example_input: One input tensor, or a tuple of positional inputs. The batch size scales
            the counts.

    Returns:
        Dense and effective MACs, and a per-layer breakdown.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad():
        with counter, _frozen_parameters(model):
            model(*inputs)
        counts = counter.get_flop_counts()
        dense_flops = _total(counts.get("Global"))
        per_layer: list[LayerMacs] = []
        saved_flops = 0
        for fqn, module in model.named_modules():
            if not is_conv_or_linear(module) or getattr(module, "weight", None) is None:
                continue
            key = _tracker_key(model, fqn)
            layer_flops = _total(counts.get(key))
            if parametrize.is_parametrized(module):
                # The parametrization runs inside the layer's forward; its ops are the mask's,
                # not the layer's, so they stay in the dense total but not in the layer's count.
                for name in module.parametrizations:
                    layer_flops -= _total(counts.get(f"{key}.parametrizations.{name}"))
            if layer_flops <= 0:
                continue  # Not called in this forward (or called through a functional path).
            weight = effective_tensor(module, "weight")
            density = int(torch.count_nonzero(weight)) / max(weight.numel(), 1)
            dense = layer_flops // 2
            effective = round(dense * density)
            saved_flops += layer_flops - 2 * effective
            per_layer.append(LayerMacs(fqn, type(module).__name__, dense, effective, density))
    return MacReport(
        dense=dense_flops // 2, effective=(dense_flops - saved_flops) // 2, per_layer=per_layer
    )
