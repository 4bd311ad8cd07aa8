"""One tensor of the compressed format: its record (JSON) and its sections of packed bytes.

A tensor is stored as up to three sections, each in the file's one payload stream:

1. positions of the stored values (:mod:`secateurs.export.sparse_positions`: bitmask, relative
   index, or none for dense-with-zeros);
2. the values: integer codes bit-packed to the grid's width (:mod:`secateurs.export.bitpack`) when
   the tensor lies on an integer grid (:mod:`secateurs.export.value_grid`), else the raw bytes of the
   values in their dtype (or in float16, lossy, when asked);
3. the grid's float32 scales (one, or one per output channel).

The record uses short keys because it sits uncompressed in the file header, where a 5 kB model
cannot afford long ones: ``s`` shape, ``d`` dtype, ``p`` position encoding, ``n`` stored values,
``v`` value storage (a dtype name, or ``"q"`` for grid codes), ``b`` code width in bits, ``c`` scale
(``"t"`` per tensor, ``"c"`` per channel), ``l`` the byte lengths of the three sections, ``x`` true
when the stored values differ from the tensor's (lossy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from secateurs.export.bitpack import code_width, pack_bits, signed_to_unsigned, unpack_bits, unsigned_to_signed
from secateurs.export.sparse_positions import (
    POSITION_ENCODINGS,
    cheapest_encoding,
    decode_positions,
    encode_positions,
)
from secateurs.export.value_grid import Grid, dequantize_grid, find_grid, qmax_of, quantize_grid

__all__ = ["FLOAT_STORAGE", "EncodedTensor", "decode_tensor", "encode_tensor"]

#: How float tensors that lie on no integer grid are stored: exactly, or lossy in fewer bits.
FLOAT_STORAGE = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EncodedTensor:
    """The record and the three sections (positions, values, scales) of one tensor."""

    record: dict[str, Any]
    sections: tuple[bytes, bytes, bytes]

    @property
    def packed_bytes(self) -> int:
        """Bytes of the sections before the entropy stage."""
        return sum(len(s) for s in self.sections)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _raw_values(values: Tensor) -> bytes:
    if values.dtype == torch.bfloat16:  # numpy has no bfloat16: keep its bits
        values = values.view(torch.int16)
    return values.contiguous().numpy().tobytes()


def _grid_sections(grid: Grid, pattern: np.ndarray, zero: bool) -> tuple[bytes, bytes, int]:
    qmax = qmax_of(grid.bits)
    codes = grid.codes.reshape(-1).numpy()[pattern]
    width = code_width(qmax, zero=zero)
    scales = grid.scale.to(torch.float32).reshape(-1).numpy().tobytes()
    return pack_bits(signed_to_unsigned(codes, qmax, zero=zero), width), scales, width


def _candidates(tensor: Tensor, grid: Grid | None, store: torch.dtype) -> dict[str, tuple[bytes, bytes, bytes, int]]:
    """Position encoding -> (positions, values, scales, code width) for every encoding."""
    flat = tensor.reshape(-1)
    nonzero = (grid.codes.reshape(-1) != 0 if grid is not None else flat != 0).numpy()
    out = {}
    for encoding in POSITION_ENCODINGS:
        pattern = np.ones_like(nonzero) if encoding == "dense" else nonzero
        positions = encode_positions(pattern, encoding)
        if grid is not None:
            values, scales, width = _grid_sections(grid, pattern, zero=encoding == "dense")
        else:
            values, scales, width = _raw_values(flat[torch.from_numpy(pattern)].to(store)), b"", 0
        out[encoding] = (positions, values, scales, width)
    return out


def encode_tensor(
    tensor: Tensor, *, float_storage: str = "fp32", entropy: Callable[[bytes], int] | None = None
) -> EncodedTensor:
    """Encode one tensor in the cheapest way that keeps it exact (or lossy as ``float_storage`` asks).

    Args:
        tensor: Any tensor of a state dict (CPU).
        float_storage: For float tensors on no integer grid: ``fp32`` (exact), ``fp16`` or ``int8``
            (lossy; int8 is a symmetric per-output-channel grid).
        entropy: Coded size of a byte string; the position encoding is chosen by it when given.
    """
    tensor = tensor.detach().cpu().contiguous()
    grid = find_grid(tensor)
    lossy = False
    store = tensor.dtype
    if grid is None and tensor.is_floating_point() and float_storage != "fp32" and tensor.numel():
        lossy = True
        if float_storage == "int8":
            grid = quantize_grid(tensor, 8)
        else:
            store = torch.float16
    candidates = _candidates(tensor, grid, store)
    chosen = cheapest_encoding({k: b"".join(v[:3]) for k, v in candidates.items()}, entropy)
    positions, values, scales, width = candidates[chosen]
    count = tensor.numel() if chosen == "dense" else int(np.count_nonzero(
        (grid.codes if grid is not None else tensor).reshape(-1).numpy()))
    record: dict[str, Any] = {"s": list(tensor.shape), "d": _dtype_name(tensor.dtype), "p": chosen, "n": count,
                              "v": "q" if grid is not None else _dtype_name(store),
                              "l": [len(positions), len(values), len(scales)]}
    if grid is not None:
        record.update(b=width, q=grid.bits, c="c" if grid.per_channel else "t")
    if lossy:
        record["x"] = True
    return EncodedTensor(record, (positions, values, scales))


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _values_from_bytes(data: bytes, dtype: torch.dtype, count: int) -> Tensor:
    carrier = torch.int16 if dtype == torch.bfloat16 else dtype
    item = torch.empty((), dtype=carrier).element_size()
    if len(data) != count * item:
        raise ValueError(f"{len(data)} value bytes for {count} values of {dtype}")
    values = torch.frombuffer(bytearray(data), dtype=carrier) if data else torch.empty(0, dtype=carrier)
    return values.view(dtype) if carrier != dtype else values


def decode_tensor(record: dict[str, Any], sections: tuple[bytes, bytes, bytes]) -> Tensor:
    """Rebuild the tensor of :func:`encode_tensor` from its record and sections.

    Raises:
        ValueError, KeyError, TypeError: the record or the sections are inconsistent (a damaged file).
    """
    shape = tuple(int(d) for d in record["s"])
    dtype = _dtype(record["d"])
    numel, count = math.prod(shape), int(record["n"])
    positions, values, scales = sections
    pattern = torch.from_numpy(decode_positions(positions, record["p"], numel, count))
    if record["v"] == "q":
        bits, width = int(record["q"]), int(record["b"])
        zero = record["p"] == "dense"
        codes = torch.zeros(numel, dtype=torch.int64)
        codes[pattern] = torch.from_numpy(unsigned_to_signed(unpack_bits(values, width, count), qmax_of(bits),
                                                             zero=zero))
        scale = _values_from_bytes(scales, torch.float32, len(scales) // 4)
        rows = shape[0] if record["c"] == "c" else 1
        if scale.numel() != rows:
            raise ValueError(f"{scale.numel()} scales for {rows} rows")
        full = dequantize_grid(codes.reshape(shape), scale if record["c"] == "c" else scale.reshape(()))
        return full.to(dtype)
    stored = _values_from_bytes(values, _dtype(record["v"]), count)
    full = torch.zeros(numel, dtype=dtype)
    full[pattern] = stored.to(dtype)
    return full.reshape(shape)
