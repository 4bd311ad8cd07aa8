"""A compressed on-disk format for sparse (unstructured or N:M) weights, with an exact reader.

Pruned weights are mostly zeros, yet a dense file stores every zero in 32 bits. This format stores
each sparse tensor as its kept values plus where they are, in one safetensors file (so reading it
can never execute code):

* ``bitmask``: one bit per element (packed, row-major) + the kept values in row-major order;
  best from moderate sparsity up (the mask costs 1/32 of the dense size);
* ``csr``: the tensor viewed as ``(shape[0], -1)``: row pointers, column indices (16-bit when the rows
  are short enough) and values; best at very high sparsity.

Values keep their dtype, or are integers with a scale per output channel when the weights were
quantized (``quantized=`` the integer weights of a joint quantization, or :func:`quantize_symmetric`).
Tensors that would not get smaller stay dense. :func:`load_sparse` restores every tensor exactly.

File layout: for a tensor ``name``, the entries ``name`` (dense), or ``name/bits`` + ``name/values``,
or ``name/indptr`` + ``name/indices`` + ``name/values``, plus ``name/scale`` for integer values; the
metadata key ``secateurs.sparse`` maps each name to its layout, shape and dtype.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from secateurs.core.masks import MaskSet
from secateurs.errors import UsageError

__all__ = ["LAYOUTS", "QuantizedWeight", "SparseReport", "load_sparse", "quantize_symmetric", "save_sparse"]

LAYOUTS = ("bitmask", "csr")
_META = "secateurs.sparse"


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer weights and the scale that maps them back: ``weight = ints * scale`` (scale per row)."""

    ints: Tensor
    scale: Tensor

    def dequantize(self) -> Tensor:
        """The float weights, ``ints * scale`` broadcast over dimension 0."""
        return self.ints.to(torch.float32) * self.scale.reshape(-1, *([1] * (self.ints.dim() - 1)))


@dataclass(frozen=True)
class SparseReport:
    """Sizes of a written file.

    Attributes:
        bytes_on_disk: Size of the compressed file.
        bytes_dense_fp32: Size of the same tensors stored densely in float32.
        layouts: Tensor name -> layout used (``dense``, ``bitmask`` or ``csr``).
    """

    bytes_on_disk: int
    bytes_dense_fp32: int
    layouts: dict[str, str] = field(default_factory=dict)

    @property
    def compression(self) -> float:
        """Dense fp32 bytes / bytes on disk."""
        return self.bytes_dense_fp32 / max(self.bytes_on_disk, 1)

    def to_dict(self) -> dict[str, object]:
        """Plain values for report.json."""
        counts: dict[str, int] = {}
        for layout in self.layouts.values():
            counts[layout] = counts.get(layout, 0) + 1
        return {"bytes_on_disk": self.bytes_on_disk, "bytes_dense_fp32": self.bytes_dense_fp32,
                "compression": round(self.compression, 3), "tensors_by_layout": counts}


def quantize_symmetric(weight: Tensor, bits: int = 8) -> QuantizedWeight:
    """Symmetric per-output-channel quantization to ``bits``-bit integers (zeros stay zero).

    For weights without integers of their own (a joint quantization provides them otherwise).
    """
    if not 2 <= bits <= 8:
        raise UsageError(f"quantize to 2..8 bits, got {bits}")
    levels = 2 ** (bits - 1) - 1
    rows = weight.detach().reshape(weight.shape[0], -1).float()
    scale = rows.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / levels
    ints = torch.round(rows / scale[:, None]).clamp_(-levels, levels).to(torch.int8)
    return QuantizedWeight(ints.reshape(weight.shape), scale)


def _sparse_bytes(numel: int, nnz: int, rows: int, cols: int, itemsize: int, layout: str) -> int:
    if layout == "bitmask":
        return math.ceil(numel / 8) + nnz * itemsize
    return (rows + 1) * 4 + nnz * (2 if cols <= 32767 else 4) + nnz * itemsize


def _pattern(name: str, tensor: Tensor, masks: MaskSet | None) -> Tensor:
    if masks is not None and name in masks:
        pattern = masks[name].full()
        if bool((tensor[~pattern] != 0).any()):
            raise UsageError(f"{name} has non-zero weights where its mask is False; finalise (squash) the model first")
        return pattern
    return tensor != 0


def _encode(name: str, values_src: Tensor, pattern: Tensor, layout: str) -> dict[str, Tensor]:
    if layout == "bitmask":
        bits = np.packbits(pattern.reshape(-1).cpu().numpy().astype(np.uint8), bitorder="little")
        return {f"{name}/bits": torch.from_numpy(bits), f"{name}/values": values_src[pattern].contiguous()}
    rows = pattern.reshape(pattern.shape[0], -1)
    counts = rows.sum(dim=1)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]).to(torch.int32)
    indices = torch.nonzero(rows)[:, 1]
    indices = indices.to(torch.int16 if rows.shape[1] <= 32767 else torch.int32)
    values = values_src.reshape(rows.shape)[rows]
    return {f"{name}/indptr": indptr, f"{name}/indices": indices, f"{name}/values": values.contiguous()}


def save_sparse(
    path: str | Path,
    tensors: Mapping[str, Tensor],
    *,
    layout: str = "bitmask",
    masks: MaskSet | None = None,
    quantized: Mapping[str, QuantizedWeight] | None = None,
) -> SparseReport:
    """Write tensors (e.g. a state dict) in the compressed format.

    Args:
        path: The file to write (atomically).
        tensors: Name -> tensor; tensors of 2 or more dimensions are compressed where that saves bytes.
        layout: ``"bitmask"`` or ``"csr"``.
        masks: Where given, a tensor's kept positions are its mask (the weights outside must be zero);
            otherwise its non-zero entries.
        quantized: Name -> integer weights to store instead of the float values.

    Returns:
        Bytes on disk against dense float32, and the layout of each tensor.
    """
    from safetensors.torch import save_file

    from secateurs.utils.io import atomic_path

    if layout not in LAYOUTS:
        raise UsageError(f"unknown sparse layout {layout!r}; use {' or '.join(LAYOUTS)}")
    quantized = dict(quantized or {})
    out: dict[str, Tensor] = {}
    meta: dict[str, dict[str, object]] = {}
    layouts: dict[str, str] = {}
    dense_fp32 = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        dense_fp32 += tensor.numel() * 4
        q = quantized.get(name)
        values_src = q.ints.cpu() if q is not None else tensor
        info: dict[str, object] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
        chosen = "dense"
        if tensor.dim() >= 2 and (tensor.is_floating_point() or q is not None):
            pattern = _pattern(name, values_src if q is not None else tensor, masks)
            rows, numel = tensor.shape[0], tensor.numel()
            size = _sparse_bytes(numel, int(pattern.sum()), rows, numel // max(rows, 1),
                                 values_src.element_size(), layout)
            if size < numel * values_src.element_size() or q is not None:
                chosen = layout
                out.update(_encode(name, values_src, pattern, layout))
        if chosen == "dense":
            out[name] = values_src.contiguous()
        if q is not None:
            out[f"{name}/scale"] = q.scale.detach().cpu().float().contiguous()
            info["quantized"] = True
        info["layout"] = chosen
        meta[name] = info
        layouts[name] = chosen
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata={_META: json.dumps(meta)})
    return SparseReport(Path(path).stat().st_size, dense_fp32, layouts)


def _decode(name: str, info: Mapping[str, object], f: object) -> Tensor:
    shape = tuple(int(d) for d in info["shape"])  # type: ignore[union-attr]
    layout = info["layout"]
    if layout == "dense":
        return f.get_tensor(name)  # type: ignore[attr-defined]
    values = f.get_tensor(f"{name}/values")  # type: ignore[attr-defined]
    numel = math.prod(shape)
    if layout == "bitmask":
        bits = f.get_tensor(f"{name}/bits").numpy()  # type: ignore[attr-defined]
        pattern = torch.from_numpy(np.unpackbits(bits, count=numel, bitorder="little").astype(bool))
    elif layout == "csr":
        indptr = f.get_tensor(f"{name}/indptr").long()  # type: ignore[attr-defined]
        indices = f.get_tensor(f"{name}/indices").long()  # type: ignore[attr-defined]
        cols = numel // shape[0]
        row_of = torch.repeat_interleave(torch.arange(shape[0]), indptr[1:] - indptr[:-1])
        pattern = torch.zeros(numel, dtype=torch.bool)
        pattern[row_of * cols + indices] = True
    else:
        raise UsageError(f"tensor {name} has unknown layout {layout!r}")
    full = torch.zeros(numel, dtype=values.dtype)
    full[pattern] = values
    return full.reshape(shape)


def load_sparse(path: str | Path, *, dequantize: bool = True) -> dict[str, Tensor]:
    """Read a file written by :func:`save_sparse`, restoring every tensor exactly.

    Args:
        path: The file.
        dequantize: For integer-valued tensors, return ``ints * scale`` in float32 (True) or the
            integers themselves (False; their scales are under ``name/scale``).

    Returns:
        Name -> tensor, with the original shapes and dtypes.
    """
    from safetensors import safe_open

    result: dict[str, Tensor] = {}
    try:
        handle = safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise UsageError(f"no sparse weights file at {path}") from None
    with handle as f:
        raw = (f.metadata() or {}).get(_META)
        if raw is None:
            raise UsageError(f"{path} is not a secateurs sparse weights file")
        for name, info in json.loads(raw).items():
            tensor = _decode(name, info, f)
            if info.get("quantized"):
                scale = f.get_tensor(f"{name}/scale")
                if dequantize:
                    tensor = QuantizedWeight(tensor, scale).dequantize()
                else:
                    result[f"{name}/scale"] = scale
            result[name] = tensor
    return result
