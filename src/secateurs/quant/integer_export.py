"""Export of k-of-n pruned (and quantized) layers: integer values, scales and kept-unit indices.

A layer pruned k-of-n keeps exactly ``k`` units in every group of ``n``. It is stored as

- ``<name>.indices``: ``(G, k)`` positions of the kept units inside their group, ascending;
- ``<name>.values``: ``(G, k, u)`` the ``u`` weight values of each kept unit (integer codes when
  quantized, float32 otherwise);
- ``<name>.scale``: the quantization scale(s) (float32; absent when not quantized);

plus JSON metadata (shape, grouping, k, n, bits) in the safetensors header. Nothing is pickled.

Size accounting (:func:`packed_size_bits`) counts what a bit-packed format needs: ``bits`` per kept
value, and per group the cheaper of a list of ``k`` indices of ``ceil(log2 n)`` bits or an ``n``-bit
bitmap, plus 32 bits per scale. The dense reference is 32 bits per weight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from secateurs.quant.fake_quant import QuantConfig, quantize_to_int

__all__ = ["LayerExport", "export_layer", "index_dtype", "packed_size_bits", "save_export"]


def index_dtype(n: int) -> torch.dtype:
    """Smallest integer dtype holding positions ``0 .. n-1``."""
    if n <= 256:
        return torch.uint8
    if n <= 2**15:
        return torch.int16
    return torch.int32


def packed_size_bits(groups: int, n: int, k: int, unit_size: int, value_bits: int, scales: int) -> int:
    """Bits of a bit-packed k-of-n layer: kept values, per-group indices and fp32 scales."""
    index_bits_per_group = min(k * max(1, math.ceil(math.log2(n))), n) if 0 < k < n else 0
    return groups * k * unit_size * value_bits + groups * index_bits_per_group + 32 * scales


@dataclass
class LayerExport:
    """One exported layer: its tensors, metadata and packed size."""

    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    size_bits: int = field(default=0)

    @property
    def size_bytes(self) -> int:
        """Packed size rounded up to whole bytes."""
        return (self.size_bits + 7) // 8


def export_layer(name: str, masked_weight: Tensor, unit_ids: Tensor, keep: Tensor,
                 quant: QuantConfig | None, meta: Mapping[str, Any] | None = None) -> LayerExport:
    """Export one k-of-n layer.

    Args:
        name: the weight's name (prefix of the tensor keys).
        masked_weight: the weight with pruned units already zero (before quantization).
        unit_ids: ``(G, n)`` flat index of each group member in the unit tensor; units are the
            leading dimensions of the weight, so unit ``j`` is ``weight.reshape(U, -1)[j]``.
        keep: ``(G, n)`` boolean, exactly ``k`` True per row.
        quant: the quantization used in the forward pass, or None for float32 values.
        meta: extra metadata (granularity, grouping) stored with the layer.

    Raises:
        ValueError: the rows of ``keep`` do not all keep the same number of units.
    """
    counts = keep.sum(1)
    k = int(counts[0]) if counts.numel() else 0
    if not bool((counts == k).all()):
        raise ValueError(f"{name}: groups keep different numbers of units ({counts.unique().tolist()})")
    groups, n = keep.shape
    num_units = unit_ids.numel()
    w = masked_weight.detach().float().cpu()
    if quant is not None:
        codes, scale = quantize_to_int(w, quant)
        values = codes.reshape(num_units, -1)
        scales = scale.reshape(-1).float()
    else:
        values, scales = w.reshape(num_units, -1), None
    unit_size = values.shape[1]
    # nonzero() lists positions row by row in ascending order: exactly k per row by the check above.
    positions = keep.cpu().nonzero()[:, 1].reshape(groups, k)
    kept_ids = unit_ids.cpu().gather(1, positions)
    tensors = {
        f"{name}.indices": positions.to(index_dtype(n)).contiguous(),
        f"{name}.values": values[kept_ids.reshape(-1)].reshape(groups, k, unit_size).contiguous(),
    }
    if scales is not None:
        tensors[f"{name}.scale"] = scales.contiguous()
    value_bits = quant.bits if quant is not None else 32
    info = {
        "shape": list(masked_weight.shape), "groups": groups, "n": n, "k": k, "unit_size": unit_size,
        "bits": value_bits, "scale": quant.scale if quant is not None else None, **dict(meta or {}),
    }
    size = packed_size_bits(groups, n, k, unit_size, value_bits, scales.numel() if scales is not None else 0)
    return LayerExport(tensors=tensors, meta=info, size_bits=size)


def save_export(layers: Mapping[str, LayerExport], path: str | Path) -> Path:
    """Write the layers into one safetensors file (metadata key ``secateurs.kofn``), atomically."""
    from safetensors.torch import save_file

    from secateurs.utils.io import atomic_path

    tensors: dict[str, Tensor] = {}
    for layer in layers.values():
        tensors.update(layer.tensors)
    meta = {name: layer.meta for name, layer in layers.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"secateurs.kofn": json.dumps(meta)})
    return Path(path)
