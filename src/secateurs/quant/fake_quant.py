"""Symmetric k-bit fake quantization of weights with straight-through gradients.

For ``bits >= 2`` a weight is mapped to the integer grid ``q = clamp(round(w / s), -Q, Q)`` with
``Q = 2**(bits-1) - 1`` and the scale ``s = max|w| / Q`` (per tensor, or per output channel = along
dimension 0), and used as ``q * s`` (dequantized, so the network keeps computing in floating point
with BatchNorm and biases unchanged). ``round`` is round-half-to-even. The grid is symmetric: the
code ``-2**(bits-1)`` is never used, so zero is exact and a pruned weight stays exactly zero.

For ``bits == 1`` weights become binary ``s * sign(w)``; weights that are exactly zero (pruned) stay
zero, so a masked layer is *ternary* ``{-s, 0, +s}``. The scale ``s`` is the mean absolute value of
the non-zero weights (the L2-optimal scale for fixed signs, as in XNOR-Net).

Gradients are straight-through: the backward pass treats quantization as the identity, and the
scale is computed from detached weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from secateurs.errors import UsageError

__all__ = ["QUANT_SCALES", "QuantConfig", "fake_quantize", "integer_dtype", "quantize_to_int", "quant_scale"]

#: Where scales are shared: one per tensor or one per output channel (dimension 0).
QUANT_SCALES = ("tensor", "channel")

_MAX_BITS = 16


@dataclass(frozen=True)
class QuantConfig:
    """How weights are quantized.

    Attributes:
        bits: bits per weight value, 1 to 16 (1 = binary, ternary once masked).
        scale: ``"tensor"`` (one scale per tensor) or ``"channel"`` (one per output channel).
    """

    bits: int
    scale: str = "tensor"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= _MAX_BITS:
            raise UsageError(f"quantization bits must be an integer from 1 to {_MAX_BITS}, got {self.bits!r}")
        if self.scale not in QUANT_SCALES:
            raise UsageError(f"unknown quantization scale {self.scale!r}; known: {', '.join(QUANT_SCALES)}")

    @property
    def per_channel(self) -> bool:
        """Whether each output channel has its own scale."""
        return self.scale == "channel"

    @property
    def qmax(self) -> int:
        """Largest integer code (1 for binary)."""
        return 1 if self.bits == 1 else 2 ** (self.bits - 1) - 1


def integer_dtype(bits: int) -> torch.dtype:
    """The smallest signed integer dtype that holds ``bits``-bit codes."""
    return torch.int8 if bits <= 8 else torch.int16


def _reduce_dims(w: Tensor, per_channel: bool) -> tuple[int, ...]:
    if per_channel and w.dim() >= 2:
        return tuple(range(1, w.dim()))
    return tuple(range(w.dim()))


@torch.no_grad()
def quant_scale(w: Tensor, config: QuantConfig) -> Tensor:
    """The scale(s) of ``w``: shape ``(C, 1, ...)`` per channel, or ``()`` per tensor; never zero."""
    w = w.detach()
    dims = _reduce_dims(w, config.per_channel)
    keepdim = config.per_channel and w.dim() >= 2
    absw = w.abs()
    if config.bits == 1:
        nonzero = (absw > 0).sum(dim=dims, keepdim=keepdim)
        scale = absw.sum(dim=dims, keepdim=keepdim) / nonzero.clamp(min=1)
    else:
        scale = absw.amax(dim=dims, keepdim=keepdim) / config.qmax
    # An all-zero tensor or channel gets scale 1: its codes are 0 anyway.
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_to_int(w: Tensor, config: QuantConfig) -> tuple[Tensor, Tensor]:
    """Integer codes and scales: ``w ~= codes * scale`` with ``|codes| <= config.qmax``.

    Returns:
        ``(codes, scale)``: codes in :func:`integer_dtype` of the weight's shape; scale as returned
        by :func:`quant_scale` (float, broadcastable against ``codes``).
    """
    w = w.detach()
    scale = quant_scale(w, config)
    if config.bits == 1:
        codes = torch.sign(w)
    else:
        codes = torch.round(w / scale).clamp(-config.qmax, config.qmax)
    return codes.to(integer_dtype(config.bits)), scale


def fake_quantize(w: Tensor, config: QuantConfig) -> Tensor:
    """Quantize and dequantize ``w`` in the forward pass; identity gradient in the backward pass."""
    codes, scale = quantize_to_int(w, config)
    dequantized = codes.to(w.dtype) * scale.to(w.dtype)
    # The value of q exactly (q + 0), the gradient of w (straight-through estimator). The common
    # w + (q - w).detach() rounds twice and can miss q by one ulp, and a deployed weight that is
    # not exactly code * scale cannot be stored as its integer code without loss.
    return dequantized.detach() + (w - w.detach())
