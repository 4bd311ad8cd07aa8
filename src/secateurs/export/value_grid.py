"""Integer grids under float weights: find the codes and scale a quantized tensor was made of.

A weight that was quantized to ``bits`` bits (DPP's joint quantization, or any symmetric
quantizer) is stored in float32 as ``codes * scale``; its information is the codes. :func:`find_grid`
recovers the narrowest grid on which *every* value is reproduced bit for bit by the same float32
product (per tensor, else per output channel), so a file that stores codes and scales is lossless.
:func:`quantize_grid` makes a grid for a tensor that has none (lossy; the caller says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from secateurs.quant.fake_quant import QuantConfig, quantize_to_int

__all__ = ["Grid", "dequantize_grid", "find_grid", "qmax_of", "quantize_grid"]

_ULPS = 3  # scales within this many float32 steps of max|w| / qmax are tried
_MAX_BITS = 8


def qmax_of(bits: int) -> int:
    """Largest code of a symmetric ``bits``-bit grid (1 for binary / ternary)."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class Grid:
    """``values == codes.float() * scale`` bit for bit (scale per tensor, or per row of dimension 0).

    Attributes:
        bits: The grid's width: codes lie in ``[-qmax_of(bits), qmax_of(bits)]``.
        codes: Integer codes (int64) of the tensor's shape.
        scale: float32, shape ``()`` (per tensor) or ``(rows,)`` (per channel).
    """

    bits: int
    codes: Tensor
    scale: Tensor

    @property
    def per_channel(self) -> bool:
        """Whether every row of dimension 0 has its own scale."""
        return self.scale.dim() == 1


def dequantize_grid(codes: Tensor, scale: Tensor) -> Tensor:
    """``codes * scale`` in float32, the scale broadcast over dimension 0 when per channel: the same
    product the quantizer computed, so the result equals its values bit for bit."""
    if scale.dim() == 1:
        scale = scale.reshape(-1, *([1] * (codes.dim() - 1)))
    return codes.to(torch.float32) * scale.to(torch.float32)


def _neighbours(base: Tensor) -> list[Tensor]:
    """``base`` and the float32 values up to :data:`_ULPS` steps either side of it."""
    out, up, down = [base], base, base
    for _ in range(_ULPS):
        up = torch.nextafter(up, torch.full_like(up, float("inf")))
        down = torch.nextafter(down, torch.zeros_like(down))
        out += [up, down]
    return out


def _exact(rows: Tensor, scale: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """Per row: whether ``round(rows / scale)`` reproduces ``rows`` within ``qmax``; and the codes."""
    codes = torch.round(rows / scale[:, None])
    ok = (codes.abs() <= qmax).all(dim=1) & (codes * scale[:, None] == rows).all(dim=1)
    return ok, codes


def _fit(rows: Tensor, bits: int) -> tuple[Tensor, Tensor] | None:
    """Codes and per-row scales on a ``bits``-bit grid reproducing every row exactly, or None."""
    qmax = qmax_of(bits)
    absw = rows.abs()
    amax = absw.amax(dim=1)
    amin = torch.where(absw > 0, absw, torch.full_like(absw, float("inf"))).amin(dim=1)
    empty = amax == 0
    candidates = [*_neighbours(torch.where(empty, torch.ones_like(amax), amax / qmax)),
                  torch.where(empty, torch.ones_like(amin), amin)]  # amin: the scale when code 1 occurs
    scale = torch.full_like(amax, float("nan"))
    codes = torch.zeros_like(rows)
    for s in candidates:
        open_rows = torch.isnan(scale)
        if not bool(open_rows.any()):
            break
        ok, c = _exact(rows, s, qmax)
        take = ok & open_rows
        scale = torch.where(take, s, scale)
        codes[take] = c[take]
    if bool(torch.isnan(scale).any()):
        return None
    return codes, scale


def _distinct_per_row(rows: Tensor) -> Tensor:
    """Number of distinct non-zero magnitudes in every row (a grid of ``qmax`` holds at most ``qmax``)."""
    ordered = rows.abs().sort(dim=1).values
    changes = (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] > 0)
    return changes.sum(dim=1) + (ordered[:, 0] > 0).long()


@torch.no_grad()
def find_grid(tensor: Tensor, max_bits: int = _MAX_BITS) -> Grid | None:
    """The narrowest symmetric grid (one scale per tensor, else per output channel) that reproduces
    every value of a float32 tensor of 2+ dimensions exactly; None when there is none within ``max_bits``."""
    if tensor.dtype != torch.float32 or tensor.dim() < 2 or tensor.numel() == 0:
        return None
    values = tensor.detach().cpu()
    if not bool(torch.isfinite(values).all()):
        return None
    nonzero = values != 0
    kept = values[nonzero]
    if kept.numel() == 0:
        return None
    rows = values.reshape(values.shape[0], -1)
    # Counting distinct magnitudes first rules out the widths (and the float tensors) no grid can hold.
    distinct_total = int(torch.unique(kept.abs()).numel())
    distinct_row = int(_distinct_per_row(rows).max())
    for bits in range(1, max_bits + 1):
        qmax = qmax_of(bits)
        if distinct_total <= qmax:
            whole = _fit(kept.reshape(1, -1), bits)
            if whole is not None:
                codes = torch.zeros(values.shape, dtype=torch.long)
                codes[nonzero] = whole[0].reshape(-1).long()
                return Grid(bits, codes, whole[1].reshape(()))
        if distinct_row <= qmax:
            per_row = _fit(rows, bits)
            if per_row is not None:
                return Grid(bits, per_row[0].reshape(values.shape).long(), per_row[1])
    return None


@torch.no_grad()
def quantize_grid(tensor: Tensor, bits: int = 8) -> Grid:
    """A symmetric ``bits``-bit grid for a float tensor (per output channel for 2+ dimensions):
    lossy, the values change by up to half a step."""
    scope = "channel" if tensor.dim() >= 2 else "tensor"
    codes, scale = quantize_to_int(tensor.detach().cpu().float(), QuantConfig(bits, scope))
    return Grid(bits, codes.long(), scale.reshape(-1) if scope == "channel" else scale.reshape(()))
