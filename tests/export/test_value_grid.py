"""Integer grids: the codes and scales of quantized weights are recovered exactly, float weights have none."""

from __future__ import annotations

import pytest
import torch

from secateurs.export.value_grid import dequantize_grid, find_grid, quantize_grid
from secateurs.quant.fake_quant import QuantConfig, fake_quantize


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("scale", ["tensor", "channel"])
def test_quantized_weights_are_found_on_their_grid_bit_for_bit(bits, scale):
    g = torch.Generator().manual_seed(bits)
    weight = torch.randn(12, 5, 3, 3, generator=g) * (torch.rand(12, 5, 3, 3, generator=g) < 0.3)
    values = fake_quantize(weight, QuantConfig(bits, scale))
    grid = find_grid(values)
    assert grid is not None and grid.bits <= bits
    assert torch.equal(dequantize_grid(grid.codes, grid.scale), values)
    assert grid.codes.abs().max() <= max(1, 2 ** (grid.bits - 1) - 1)


def test_float_weights_have_no_grid_and_int8_is_a_lossy_one():
    weight = torch.randn(20, 30, generator=torch.Generator().manual_seed(0))
    assert find_grid(weight) is None
    assert find_grid(torch.zeros(3, 3)) is None and find_grid(torch.ones(4)) is None  # all zero; 1-d
    grid = quantize_grid(weight, 8)
    restored = dequantize_grid(grid.codes, grid.scale)
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert not torch.equal(restored, weight) and bool(((restored - weight).abs() <= step / 2 + 1e-7).all())
