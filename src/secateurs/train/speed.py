"""Opt-in speed settings of the training loop: channels-last memory format and ``torch.compile``.

Both leave the model's parameters, state dict and checkpoints as they are: ``channels_last`` only
changes the strides of 4-D tensors, and the compiled module is a wrapper used for the forward pass
while the loop keeps saving the original. Masks stay live under compilation: they are parameters
and buffers of the parametrizations, read on every call, so a pruning step that rewrites them in
place changes the next compiled forward without a recompile. Stochastic masks draw with their own
``torch.Generator``, which ``torch.compile`` runs eagerly (a graph break), so they are correct but
gain less.

``compile="reduce-overhead"`` adds CUDA graphs on a GPU (fixed batch shapes: the loader's last,
shorter batch is compiled once more); on a CPU it behaves as ``"default"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["COMPILE_MODES", "accelerate", "to_memory_format"]

#: ``off`` plus torch.compile's modes.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def accelerate(model: nn.Module, *, compile_mode: str = "off", channels_last: bool = False) -> nn.Module:
    """The module to call for forward passes: ``model`` itself, or a compiled wrapper of it.

    Args:
        model: The network (on its device, masks attached). With ``channels_last`` its 4-D
            parameters and buffers are converted in place.
        compile_mode: One of :data:`COMPILE_MODES`.
        channels_last: Store 4-D weights in channels-last (NHWC) order, which cuDNN's fastest
            convolution kernels and tensor cores prefer.

    Returns:
        A module sharing ``model``'s parameters.
    """
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_mode == "off":
        return model
    mode = None if compile_mode == "default" else compile_mode
    if mode == "reduce-overhead" and next(model.parameters()).device.type != "cuda":
        mode = None  # CUDA graphs exist only on CUDA
    compiled: Any = torch.compile(model, mode=mode)
    return compiled


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in channels-last order when asked and it is an image batch (4-D), else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
