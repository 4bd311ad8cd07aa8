"""Bit packing: unsigned integer codes of any width from 1 to 16 bits, back to back in bytes.

A 4-bit weight stored in an int8 takes twice the room it needs, a 2-bit one four times. Packing
writes each code in exactly ``width`` bits, little-endian within the code and from the lowest bit
of each byte up, so ``ceil(count * width / 8)`` bytes hold ``count`` codes. The last byte is padded
with zero bits. Signed quantization codes are mapped to unsigned ones first (:func:`signed_to_unsigned`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_WIDTH", "code_width", "pack_bits", "packed_size", "signed_to_unsigned", "unpack_bits",
           "unsigned_to_signed"]

#: Widest code this module packs (16-bit codes cover every quantization secateurs trains).
MAX_WIDTH = 16


def _check_width(width: int) -> None:
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"bit width must be 1..{MAX_WIDTH}, got {width}")


def packed_size(count: int, width: int) -> int:
    """Bytes that :func:`pack_bits` writes for ``count`` codes of ``width`` bits."""
    return (count * width + 7) // 8


def pack_bits(codes: np.ndarray, width: int) -> bytes:
    """Pack unsigned codes (each ``< 2**width``) into ``packed_size(len(codes), width)`` bytes.

    Raises:
        ValueError: a code does not fit in ``width`` bits, or the width is outside 1..16.
    """
    _check_width(width)
    codes = np.asarray(codes).reshape(-1).astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << width):
        raise ValueError(f"codes outside 0..{(1 << width) - 1} cannot be packed in {width} bits")
    if width == 8:
        return codes.astype(np.uint8).tobytes()
    # One row of `width` bits per code (lowest bit first), then all rows as one little-endian bit stream.
    bits = (codes[:, None] >> np.arange(width)) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, width: int, count: int) -> np.ndarray:
    """The ``count`` codes of ``width`` bits packed in ``data`` (int64).

    Raises:
        ValueError: ``data`` holds fewer than ``count`` codes.
    """
    _check_width(width)
    if len(data) < packed_size(count, width):
        raise ValueError(f"{len(data)} bytes cannot hold {count} codes of {width} bits")
    raw = np.frombuffer(data, dtype=np.uint8)
    if width == 8:
        return raw[:count].astype(np.int64)
    bits = np.unpackbits(raw, count=count * width, bitorder="little").reshape(count, width).astype(np.int64)
    return (bits << np.arange(width)).sum(axis=1)


def signed_to_unsigned(codes: np.ndarray, qmax: int, *, zero: bool) -> np.ndarray:
    """Map signed codes in ``[-qmax, qmax]`` to ``0 ..``: with ``zero`` to ``code + qmax``
    (``2*qmax + 1`` values); without (every code non-zero: the zeros are stored as positions) to
    ``0 .. 2*qmax - 1``, so a ternary {-1, +1} code takes 1 bit and a symmetric 4-bit one 4."""
    codes = np.asarray(codes).astype(np.int64)
    if zero:
        return codes + qmax
    return np.where(codes < 0, codes + qmax, codes + qmax - 1)


def unsigned_to_signed(codes: np.ndarray, qmax: int, *, zero: bool) -> np.ndarray:
    """The inverse of :func:`signed_to_unsigned`."""
    codes = np.asarray(codes).astype(np.int64)
    if zero:
        return codes - qmax
    return np.where(codes < qmax, codes - qmax, codes - qmax + 1)


def code_width(qmax: int, *, zero: bool) -> int:
    """Bits that hold the unsigned codes of :func:`signed_to_unsigned` for ``qmax``."""
    levels = 2 * qmax + (1 if zero else 0)
    return max(1, int(levels - 1).bit_length())

