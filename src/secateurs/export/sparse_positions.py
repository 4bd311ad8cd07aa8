"""Where the kept values of a sparse tensor are: three encodings, and the cheapest of them.

* ``bitmask``: one bit per element (row-major, lowest bit first): ``ceil(numel / 8)`` bytes whatever
  the sparsity, the best choice from moderate sparsity up;
* ``index``: the gaps between consecutive kept positions (the first one counts from 0) as
  variable-length integers, 7 bits per byte with the high bit saying "more bytes follow" (a gap
  under 128 takes one byte), the best at very high sparsity (Deep Compression's relative index,
  without its filler zeros);
* ``dense``: no positions at all; the values are stored for every element, zeros included, the
  best when little is pruned.

:func:`cheapest_encoding` picks per tensor, by the size after the entropy stage when a codec is
given (what lands on disk), else by the raw size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["POSITION_ENCODINGS", "cheapest_encoding", "decode_positions", "encode_positions"]

POSITION_ENCODINGS = ("bitmask", "index", "dense")


def _varint_encode(gaps: np.ndarray) -> bytes:
    gaps = gaps.astype(np.uint64)
    if gaps.size == 0:
        return b""
    # Number of 7-bit groups of every gap (at least one), then the bytes of all gaps, interleaved.
    groups = np.ones(gaps.size, dtype=np.int64)
    rest = gaps >> np.uint64(7)
    while bool(rest.any()):
        groups += rest > 0
        rest >>= np.uint64(7)
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    out = np.zeros(int(groups.sum()), dtype=np.uint8)
    for g in range(int(groups.max())):
        live = groups > g
        chunk = (gaps[live] >> np.uint64(7 * g)) & np.uint64(0x7F)
        more = (groups[live] > g + 1).astype(np.uint8) << 7
        out[starts[live] + g] = chunk.astype(np.uint8) | more
    return out.tobytes()


def _varint_decode(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    ends = np.flatnonzero(raw < 128)  # the last byte of every number has the high bit clear
    if ends.size != count or (count and ends[-1] != raw.size - 1):
        raise ValueError(f"relative index holds {ends.size} numbers, expected {count}")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    # The position of every byte inside its number, for the shift of its 7 bits.
    owner = np.repeat(np.arange(count), ends - starts + 1)
    shift = (np.arange(raw.size) - starts[owner]).astype(np.uint64) * np.uint64(7)
    values = np.zeros(count, dtype=np.uint64)
    np.add.at(values, owner, (raw & np.uint64(0x7F)) << shift)
    return values.astype(np.int64)


def encode_positions(pattern: np.ndarray, encoding: str) -> bytes:
    """The bytes of ``pattern`` (flat boolean, True = a stored value) in ``encoding``."""
    pattern = np.asarray(pattern, dtype=bool).reshape(-1)
    if encoding == "bitmask":
        return np.packbits(pattern, bitorder="little").tobytes()
    if encoding == "index":
        where = np.flatnonzero(pattern)
        return _varint_encode(np.diff(where, prepend=-1) - 1)
    if encoding == "dense":
        return b""
    raise ValueError(f"unknown position encoding {encoding!r}; known: {', '.join(POSITION_ENCODINGS)}")


def decode_positions(data: bytes, encoding: str, numel: int, count: int) -> np.ndarray:
    """The flat boolean pattern of ``numel`` elements with ``count`` stored values.

    Raises:
        ValueError: the bytes do not describe ``count`` positions among ``numel`` (a damaged file).
    """
    if encoding == "dense":
        if count != numel:
            raise ValueError(f"dense values: {count} stored for {numel} elements")
        return np.ones(numel, dtype=bool)
    if encoding == "bitmask":
        if len(data) != (numel + 7) // 8:
            raise ValueError(f"bitmask of {len(data)} bytes for {numel} elements")
        pattern = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel, bitorder="little").astype(bool)
    elif encoding == "index":
        where = np.cumsum(_varint_decode(data, count) + 1) - 1
        if count and where[-1] >= numel:
            raise ValueError(f"relative index points past the {numel} elements")
        pattern = np.zeros(numel, dtype=bool)
        pattern[where] = True
    else:
        raise ValueError(f"unknown position encoding {encoding!r}")
    if int(pattern.sum()) != count:
        raise ValueError(f"{int(pattern.sum())} positions for {count} stored values")
    return pattern


def cheapest_encoding(
    candidates: dict[str, bytes], entropy: Callable[[bytes], int] | None = None
) -> str:
    """The encoding whose bytes (positions and values together) are fewest, after ``entropy``
    (a function giving the coded size) when given; ties go to the earlier of :data:`POSITION_ENCODINGS`.

    Candidates more than :data:`_CODED_RANGE` times the smallest raw size are not coded (they do
    not win in practice, and coding a large dense candidate is the slow part of an export)."""
    smallest = min(len(blob) for blob in candidates.values())

    def cost(item: tuple[str, bytes]) -> tuple[float, int, int]:
        name, blob = item
        if entropy is None:
            coded: float = len(blob)
        elif len(blob) > _CODED_RANGE * smallest:
            coded = float("inf")
        else:
            coded = entropy(blob)
        return coded, len(blob), POSITION_ENCODINGS.index(name)

    return min(candidates.items(), key=cost)[0]


#: Only candidates within this factor of the smallest raw size go through the entropy coder.
_CODED_RANGE = 2.0
