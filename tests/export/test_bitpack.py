"""Bit packing: every width round-trips, sizes are exact, signed codes map to the narrowest width."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.export.bitpack import (
    MAX_WIDTH,
    code_width,
    pack_bits,
    packed_size,
    signed_to_unsigned,
    unpack_bits,
    unsigned_to_signed,
)
from secateurs.export.value_grid import qmax_of


@pytest.mark.parametrize("width", range(1, MAX_WIDTH + 1))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 13, 1000])
def test_every_width_round_trips_in_exactly_ceil_bits_bytes(width, count):
    rng = np.random.default_rng(width * 100 + count)
    codes = rng.integers(0, 1 << width, size=count)
    if count:
        codes[0] = (1 << width) - 1  # the largest code is packed too
    blob = pack_bits(codes, width)
    assert len(blob) == packed_size(count, width) == (count * width + 7) // 8
    assert np.array_equal(unpack_bits(blob, width, count), codes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=64), st.integers(1, 8))
def test_packing_is_exact_for_any_codes(values, width):
    codes = np.array(values, dtype=np.int64) % (1 << width)
    assert np.array_equal(unpack_bits(pack_bits(codes, width), width, len(codes)), codes)


def test_a_code_too_wide_for_its_width_is_refused():
    with pytest.raises(ValueError, match="cannot be packed in 2 bits"):
        pack_bits(np.array([0, 4]), 2)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(b"\x00", 4, 3)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("zero", [False, True])
def test_signed_codes_map_to_the_real_width(bits, zero):
    """Without zeros (they are positions) a b-bit symmetric grid needs b bits, and a ternary one (1 or 2
    bits: codes -1, 0, +1) needs 1; with zeros (dense storage) ternary needs 2."""
    qmax = qmax_of(bits)
    codes = np.arange(-qmax, qmax + 1)
    if not zero:
        codes = codes[codes != 0]
    width = code_width(qmax, zero=zero)
    assert width == ((2 if zero else 1) if qmax == 1 else bits)
    unsigned = signed_to_unsigned(codes, qmax, zero=zero)
    assert unsigned.min() == 0 and unsigned.max() < 1 << width
    assert np.array_equal(unsigned_to_signed(unpack_bits(pack_bits(unsigned, width), width, len(codes)), qmax,
                                             zero=zero), codes)
