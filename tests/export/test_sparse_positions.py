"""Position encodings: each round-trips, the cheapest is chosen, damaged ones are detected."""

from __future__ import annotations

import numpy as np
import pytest

from secateurs.export.entropy import compress
from secateurs.export.sparse_positions import (
    POSITION_ENCODINGS,
    cheapest_encoding,
    decode_positions,
    encode_positions,
)


def _pattern(numel, density, seed=0):
    return np.random.default_rng(seed).random(numel) < density


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
@pytest.mark.parametrize("density", [0.0, 0.0005, 0.05, 0.5, 1.0])
def test_every_encoding_round_trips(encoding, density):
    pattern = _pattern(100_003, density) if encoding != "dense" else np.ones(100_003, dtype=bool)
    blob = encode_positions(pattern, encoding)
    assert np.array_equal(decode_positions(blob, encoding, pattern.size, int(pattern.sum())), pattern)


def test_relative_index_holds_gaps_of_several_bytes():
    pattern = np.zeros(5_000_000, dtype=bool)
    where = [0, 1, 129, 20_000, 4_999_999]  # gaps 0, 0, 127, 19870, 4979998: 1, 1, 1, 3 and 4 varint bytes
    pattern[where] = True
    blob = encode_positions(pattern, "index")
    assert len(blob) == 1 + 1 + 1 + 3 + 4
    assert np.array_equal(np.flatnonzero(decode_positions(blob, "index", pattern.size, 5)), where)


def test_damaged_positions_are_errors():
    pattern = _pattern(1000, 0.1)
    blob = encode_positions(pattern, "index")
    with pytest.raises(ValueError):
        decode_positions(blob, "index", 1000, int(pattern.sum()) + 1)
    with pytest.raises(ValueError):
        decode_positions(blob[:-1] + b"\xff", "index", 1000, int(pattern.sum()))
    with pytest.raises(ValueError):
        decode_positions(encode_positions(pattern, "bitmask")[:-1], "bitmask", 1000, int(pattern.sum()))


@pytest.mark.parametrize(("density", "expected"), [(0.002, "index"), (0.3, "bitmask"), (1.0, "dense")])
def test_the_cheapest_raw_encoding_is_chosen(density, expected):
    """Positions + 4-bit values: the index wins when very sparse, the bitmask in between, none when dense."""
    pattern = _pattern(50_000, density, seed=3)
    values = int(pattern.sum()) // 2  # 4-bit codes of the stored values
    candidates = {
        "bitmask": encode_positions(pattern, "bitmask") + b"v" * values,
        "index": encode_positions(pattern, "index") + b"v" * values,
        "dense": b"v" * (pattern.size // 2 + 1),
    }
    assert cheapest_encoding(candidates) == expected
    assert len(candidates[expected]) == min(len(b) for b in candidates.values())


def test_with_an_entropy_stage_the_smallest_coded_candidate_wins():
    rng = np.random.default_rng(1)
    candidates = {name: rng.integers(0, 4, size=n, dtype=np.uint8).tobytes()
                  for name, n in (("bitmask", 3000), ("index", 3500), ("dense", 4000))}

    def coded(blob):
        return len(compress(blob, "lzma"))

    best = cheapest_encoding(candidates, coded)
    assert coded(candidates[best]) == min(coded(b) for b in candidates.values())
